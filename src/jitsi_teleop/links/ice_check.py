"""``jitsi-teleop doctor``'s ICE check: what this site can get from the room's STUN/TURN
servers, and whether a path through the TURN relay really carries data.

Two local agents: one gathers with the announced servers (its outcome per server and the
candidate types it got are the report), then calls the other through its relay candidate only
(the other is offered no TURN server). The pair ICE selects for that call, with its round
trip, is what a site would get when no direct path works. Nothing is sent anywhere but to the
announced servers and, through the relay, back to this machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence
from typing import Any

from ..room.extdisco import IceServer
from .ice import IceAgent, parse_ice_url


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def scope_filter(servers: Sequence[IceServer]):
    """Loopback only when every announced server is on loopback (a local test server), else
    every interface but loopback (aioice's choice)."""
    hosts = [p[1] for s in servers for u in s.urls if (p := parse_ice_url(u)) is not None]
    if hosts and all(_loopback(h) for h in hosts):
        return _loopback
    return None


async def ice_check(servers: Sequence[IceServer], timeout: float = 10.0) -> dict[str, Any]:
    """Gather with ``servers``; if a relay candidate came, connect to a second local agent
    through it and report the selected pair and one STUN round trip over it."""
    flt = scope_filter(servers)
    caller = IceAgent(
        controlling=True, servers=servers, address_filter=flt, gather_timeout=5.0, relay_only=True
    )
    callee = IceAgent(controlling=False, address_filter=flt)
    out: dict[str, Any] = {"servers": [], "candidate_types": [], "relay_path": None}
    try:
        await asyncio.gather(caller.gather(), callee.gather())
        out["servers"] = [r.__dict__ for r in caller.gather_reports]
        out["candidate_types"] = sorted({c.type for c in caller.local_candidates})
        relays = [c for c in caller.local_candidates if c.type == "relay"]
        if not relays:
            out["relay_path"] = {"ok": False, "detail": "no relay candidate (TURN unusable)"}
            return out
        callee.remote_username = caller.local_username
        callee.remote_password = caller.local_password
        caller.remote_username = callee.local_username
        caller.remote_password = callee.local_password
        for c in relays:  # the callee only learns the relay, the caller pairs only its relay
            await callee.add_remote_candidate(c)
        await callee.add_remote_candidate(None)
        for c in callee.local_candidates:
            await caller.add_remote_candidate(c)
        await caller.add_remote_candidate(None)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(caller.connect(), callee.connect()), timeout)
        except (asyncio.TimeoutError, ConnectionError) as e:
            out["relay_path"] = {"ok": False, "detail": f"no path through the relay: {e!r}"}
            return out
        sel = caller.selected
        out["relay_path"] = {
            "ok": sel is not None and sel.relayed,
            "selected": sel.as_dict() if sel is not None else None,
            "connect_s": round(time.monotonic() - t0, 3),
        }
        return out
    finally:
        await asyncio.gather(caller.close(), callee.close())


def describe(check: dict[str, Any]) -> list[str]:
    """Human lines for the doctor's report."""
    lines = []
    for r in check.get("servers", []):
        state = "ok" if r["ok"] else "FAILED"
        lines.append(f"    {r['kind']:<4} {r['server']}: {state}, {r['detail']} ({r['seconds']} s)")
    lines.append(f"    candidates {', '.join(check.get('candidate_types') or ['none'])}")
    rp = check.get("relay_path") or {}
    if rp.get("ok"):
        s = rp["selected"]
        lines.append(
            f"    relay path ok: {s['local_type']} {s['local']} -> {s['remote_type']} "
            f"{s['remote']} (connected in {rp['connect_s']} s)"
        )
    elif rp:
        lines.append(f"    relay path FAILED: {rp.get('detail', 'not relayed')}")
    return lines
