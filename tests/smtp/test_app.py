"""`mailmoat.app`: the web console is served in the gateway's own event loop."""

from __future__ import annotations

import sys
import types

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from mailmoat.app import build
from tests.smtp.helpers import Sink, free_port, gateway_config, port_of, start_sink


async def test_console_app_is_served_next_to_smtp(tmp_path, monkeypatch):
    seen = {}

    def create_app(config, database, *, internal_guard=None):
        seen["db"] = database
        seen["guard"] = internal_guard

        async def home(request):
            return PlainTextResponse(f"console for {config.smtp.hostname}")

        return Starlette(routes=[Route("/", home)])

    # The console module belongs to the web family; a small real ASGI app stands in here.
    module = types.ModuleType("mailmoat.web.app")
    module.create_app = create_app
    monkeypatch.setitem(sys.modules, "mailmoat.web.app", module)
    sink = Sink()
    server = await start_sink(sink)
    web_port = free_port()
    cfg = gateway_config(tmp_path, port_of(server),
                         web={"enabled": True, "listen": f"127.0.0.1:{web_port}"})
    gw = build(cfg)
    await gw.start()
    try:
        r = None
        async with httpx.AsyncClient() as client:
            for _ in range(50):
                try:
                    r = await client.get(f"http://127.0.0.1:{web_port}/")
                    break
                except httpx.ConnectError:
                    import asyncio

                    await asyncio.sleep(0.1)
        assert r is not None, "the console never answered"
        assert r.status_code == 200 and r.text == "console for mx.gateway.test"
        assert seen["db"] is gw.db
        assert seen["guard"] is gw.internal_guard  # releases in the console apply at once
    finally:
        await gw.stop()
        server.close()
