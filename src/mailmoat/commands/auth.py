"""`mailmoat` sub-commands of the auth area: not implemented yet (its issue owns it)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
