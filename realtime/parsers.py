"""Request parsers: DRF's, hardened against bodies that parse into trouble."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext as _
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing pathologically nested documents with a 400 instead of a 500.

    A 200 KiB body of "[[[[..." exhausts Python's recursion limit inside `json.loads`; DRF only
    catches ValueError.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_("JSON nested too deeply.")) from None
