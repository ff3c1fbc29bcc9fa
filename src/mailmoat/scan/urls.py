"""Check family `urls`: not implemented yet (its issue owns it)."""

from __future__ import annotations

from mailmoat.scan.base import BuildContext, Check


def build(ctx: BuildContext) -> list[Check]:
    return []
