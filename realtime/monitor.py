from __future__ import annotations


def start_embedded() -> None:
    return None
