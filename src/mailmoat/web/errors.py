"""The REST API's error answers, for the OpenAPI document (routes' `responses=`).

Every error body is `{"detail": "<reason in words>"}`, except 422, which always has
FastAPI's validation shape `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`:
app.py turns a route's own 422 (`HTTPException(422, "why")`) into that shape too, so a
client reads every 422 the same way. A 405 carries `Allow` listing every method of the
path (app.py), not only those of the first route that matched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    detail: str = Field(description="why the request failed, in words")


DESCRIPTIONS = {
    400: "Bad request",
    401: "Not authenticated: no session or token, or an invalid or revoked one",
    403: "Not allowed: your role or scope does not cover it, or a cookie-authenticated write "
         "lacks the X-CSRF-Token header",
    404: "Not found, or not visible to you",
    409: "Conflicts with the current state (for instance: already released)",
    410: "Gone: the stored message is no longer there",
    429: "Too many failed attempts; retry after `Retry-After` seconds",
    500: "The change could not be made (the reason is in `detail`)",
    501: "Not available on this installation",
    502: "A downstream server refused or could not be reached",
    503: "Unavailable",
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer` for token authentication",
                               "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: the given error codes, each `ErrorOut`."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorOut, "description": DESCRIPTIONS[code]}
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        out[code] = entry
    return out


# Every route that needs a signed-in caller: 401 without one, 403 for the wrong role or a
# missing CSRF token.
AUTH = responses(401, 403)
