"""/api/v1/me: the caller's own settings. Today: bulk threshold and bulk action, saved as a
recipient override in a new policy version (the gateway applies it on its next reload)."""

from __future__ import annotations

from fastapi import APIRouter

from mailmoat.web import services
from mailmoat.web.deps import ConfigDep, CurrentUser, DbDep
from mailmoat.web.errors import AUTH
from mailmoat.web.schemas import BulkIn, BulkSettingsOut

router = APIRouter(prefix="/api/v1/me", tags=["me"], responses=AUTH)


@router.get("/bulk", response_model=BulkSettingsOut, summary="Your bulk settings in force")
def get_bulk(user: CurrentUser, config: ConfigDep, db: DbDep) -> BulkSettingsOut:
    return services.bulk_settings(config, db, services.own_addresses(user)[0])


@router.put("/bulk", response_model=BulkSettingsOut,
            summary="Set your own bulk threshold and action (a new policy version, audited)")
def put_bulk(body: BulkIn, user: CurrentUser, config: ConfigDep, db: DbDep) -> BulkSettingsOut:
    return services.save_own_bulk(config, db, user, body.address, body.bulk_threshold, body.bulk_action)


@router.delete("/bulk", response_model=BulkSettingsOut,
               summary="Drop your own bulk settings: your domain's or the global ones apply again")
def delete_bulk(user: CurrentUser, config: ConfigDep, db: DbDep) -> BulkSettingsOut:
    return services.save_own_bulk(config, db, user, None, None, None)
