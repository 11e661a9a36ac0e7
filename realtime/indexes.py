"""Index kinds the models declare beyond Django's own."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.backends.ddl_references import Statement


class PostgreSQLPartialIndex(models.Index):
    """An index whose condition applies on PostgreSQL only; on other databases, the same columns
    over every row.

    On PostgreSQL, an UPDATE that changes any indexed column (every transition of a call) adds an
    entry for the new row version to every index of the table whose condition that row meets, so
    a partial index costs nothing to the transitions of the rows it leaves out, and stays as small
    as the rows it keeps. SQLite updates only the indexes whose columns changed, so a partial one
    would save nothing there; and it uses a partial index only for a query that states the
    condition with literals, where the queries' values are parameters. PostgreSQL receives the
    values inlined (psycopg's client-side binding, Django's default), so it proves the condition
    from a query's `status = 'active'` or `api_key_id = 12`."""

    def create_sql(self, model: type[models.Model], schema_editor: BaseDatabaseSchemaEditor, using: str = "", **kwargs: Any) -> Statement:
        if schema_editor.connection.vendor == "postgresql":
            return super().create_sql(model, schema_editor, using=using, **kwargs)
        _path, args, options = self.deconstruct()
        options.pop("condition", None)
        return models.Index(*args, **options).create_sql(model, schema_editor, using=using, **kwargs)
