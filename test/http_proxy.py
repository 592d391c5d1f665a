"""A small HTTP reverse proxy (aiohttp) in front of the test Prosody, with the faults of real
networks: it refuses WebSocket upgrades (as proxies that strip ``Upgrade`` do), ends long polls
early, delays answers so they overtake each other, loses answers after the server acted on the
request, and can answer in the server's place (terminal conditions, captive-portal pages,
oversized bodies). It also serves a ``config.js`` that points at itself, so a meeting URL on
the proxy goes through discovery like a real deployment. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from prosody_server import ProsodyServer, free_port

_RID = re.compile(rb"""\brid=['"](\d+)['"]""")
_SID = re.compile(rb"""\bsid=['"]([^'"]+)['"]""")
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"


@dataclass
class Answered:
    """One request the proxy answered: its rid, whether it carried a sid, what it returned."""

    rid: int
    status: int
    fault: str = ""


@dataclass
class BoshProxy:
    srv: ProsodyServer
    block_websocket: bool = True
    #: how the upgrade is blocked: "strip" (Upgrade removed, a plain GET reaches the server),
    #: "hang" (the proxy never answers the handshake) or "blackhole" (the upgrade completes,
    #: then no frame passes: a buffering proxy)
    ws_block: str = "strip"
    #: seconds after which a long poll is ended by the proxy (None: never)
    cut_polls_after: float | None = None
    cut_with: str = "504"  # "504" (nginx's gateway timeout) or "close" (connection dropped)
    #: rid -> extra seconds before the answer is passed on (out-of-order answers)
    delay: Callable[[int], float] | None = None
    #: one-shot faults for the next requests of an established session (with a sid):
    #: "terminate:<condition>", "lose" (forward, then 502 instead of the answer), "html",
    #: "huge", "status:<code>" (answer that status without forwarding)
    faults: deque[str] = field(default_factory=deque)
    port: int = field(default_factory=free_port)
    answered: list[Answered] = field(default_factory=list)
    early_cuts: int = 0
    ws_refused: int = 0
    config_js_extra: str = ""
    config_js_websocket: bool = True  # False: config.js names only bosh (older deployments)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def bosh_url(self) -> str:
        return f"{self.base}http-bind"

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/xmpp-websocket"

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/http-bind", self._bosh)
        app.router.add_get("/xmpp-websocket", self._websocket)
        app.router.add_get("/config.js", self._config_js)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(Exception):
            await self._runner.cleanup()
        with contextlib.suppress(Exception):
            await self._client.close()

    # -- handlers ------------------------------------------------------------------------
    async def _config_js(self, _request: web.Request) -> web.Response:
        text = f"""var config = {{
    hosts: {{ domain: '{self.srv.domain}', muc: 'conference.' + subdomain + '{self.srv.domain}' }},
    bosh: '//127.0.0.1:{self.port}/' + subdir + 'http-bind',
    {"" if self.config_js_websocket else "// "}websocket: '{self.websocket_url}',
    {self.config_js_extra}
}};"""
        return web.Response(text=text, content_type="application/javascript")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.block_websocket and self.ws_block == "blackhole":
            self.ws_refused += 1
            ws = web.WebSocketResponse(protocols=("xmpp",))
            await ws.prepare(request)

            async def swallow() -> None:  # read and drop until the client closes
                async for _msg in ws:
                    pass

            stop = asyncio.ensure_future(self._stopping.wait())
            read = asyncio.ensure_future(swallow())
            await asyncio.wait({stop, read}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            read.cancel()
            return ws
        if self.block_websocket and self.ws_block == "hang":
            self.ws_refused += 1
            await self._stopping.wait()  # or the client gives up and disconnects
            raise web.HTTPServiceUnavailable()
        if self.block_websocket:
            # what a proxy that strips Upgrade/Connection does: a plain GET reaches the server
            self.ws_refused += 1
            async with self._client.get(
                f"http://127.0.0.1:{self.srv.http_port}/xmpp-websocket",
                headers={"Host": self.srv.domain},
            ) as up:
                body = await up.read()
                return web.Response(status=up.status, body=body)
        raise web.HTTPNotImplemented(text="WebSocket pass-through not built")

    async def _bosh(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        m = _RID.search(body)
        rid = int(m.group(1)) if m else -1
        fault = self.faults.popleft() if self.faults and _SID.search(body) else ""
        if fault.startswith("terminate:"):
            cond = fault.split(":", 1)[1]
            return self._answer(
                rid,
                200,
                f"<body xmlns='{NS_HTTPBIND}' type='terminate' condition='{cond}'/>",
                fault,
            )
        if fault == "html":
            page = "<html><body><h1>Sign in to the guest network</h1></body></html>"
            return self._answer(rid, 200, page, fault, "text/html")
        if fault.startswith("status:"):
            return self._answer(rid, int(fault.split(":", 1)[1]), "proxy error", fault)
        upstream = asyncio.ensure_future(self._forward(body))
        try:
            if self.cut_polls_after is not None:
                status, data = await asyncio.wait_for(
                    asyncio.shield(upstream), self.cut_polls_after
                )
            else:
                status, data = await upstream
        except asyncio.TimeoutError:
            upstream.cancel()  # like nginx: the upstream connection is closed too
            self.early_cuts += 1
            if self.cut_with == "close":
                self.answered.append(Answered(rid, 0, "cut"))
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=504)
            return self._answer(rid, 504, "Gateway Time-out", "cut")
        if fault == "lose":
            return self._answer(rid, 502, "Bad Gateway", fault)  # the server did act on it
        if fault == "huge":
            data = f"<body xmlns='{NS_HTTPBIND}'>" + " " * (2 * 1024 * 1024) + "</body>"
        if self.delay is not None:
            extra = self.delay(rid)
            if extra > 0:
                await asyncio.sleep(extra)
        return self._answer(rid, status, data, fault)

    async def _forward(self, body: bytes) -> tuple[int, str]:
        async with self._client.post(
            f"http://127.0.0.1:{self.srv.http_port}/http-bind",
            data=body,
            headers={"Content-Type": "text/xml; charset=utf-8", "Host": self.srv.domain},
        ) as up:
            return up.status, await up.text()

    def _answer(
        self, rid: int, status: int, text: str, fault: str = "", ctype: str = "text/xml"
    ) -> web.Response:
        self.answered.append(Answered(rid, status, fault))
        return web.Response(status=status, text=text, content_type=ctype)

    def inversions(self) -> int:
        """Answers passed on after the answer to a later request (out of rid order)."""
        count, top = 0, -1
        for a in self.answered:
            if 0 <= a.rid < top:
                count += 1
            top = max(top, a.rid)
        return count
