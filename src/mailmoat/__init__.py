"""mailmoat: an SMTP security gateway that never loses mail and explains every verdict."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
