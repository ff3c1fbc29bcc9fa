"""/api/v1/digest: send the quarantine digests now (administrators)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from mailmoat.errors import RelayError
from mailmoat.store.quarantine import audit
from mailmoat.web.deps import AdminUser, ConfigDep, DbDep
from mailmoat.web.digest import send_digests
from mailmoat.web.errors import AUTH, responses
from mailmoat.web.schemas import DigestSendOut

router = APIRouter(prefix="/api/v1/digest", tags=["digest"], responses=AUTH)


@router.post("/send", response_model=DigestSendOut, summary="Send every user's quarantine digest now",
             responses=responses(502))
async def send(admin: AdminUser, config: ConfigDep, db: DbDep, dry_run: bool = False) -> DigestSendOut:
    try:
        users, n = await asyncio.to_thread(send_digests, config, db, dry_run)
    except RelayError as exc:
        raise HTTPException(status_code=502, detail=str(exc)) from exc
    audit(db, admin.email, "digest.send_now", "", users=users, messages=n, dry_run=dry_run)
    return DigestSendOut(users=users, messages=n, dry_run=dry_run)
