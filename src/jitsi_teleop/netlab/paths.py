"""Which fast path a session is on: the nominated ICE pair and whether it goes through TURN.

Read from the link's own report when it has one (``P2PLink.selected_pair()``), else from
aioice's nominated pair; "relay" when either end's candidate is a TURN allocation, or the
remote address is a TURN server's (a peer's relay candidate signalled without its type).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..session import PATH_P2P, Session


def selected_pair(session: Session) -> dict[str, Any] | None:
    """The nominated ICE pair of the session's data channel: candidate types and addresses.

    Uses the link's own report when it has one (``selected_pair()``), else reads aioice's
    nominated pair. Remote candidate types signalled as bare addresses show as "host" there;
    callers that know the TURN server classify by address too (:func:`path_kind`).
    """
    link = getattr(session, "_p2p", None)
    if link is None:
        return None
    with contextlib.suppress(Exception):
        got = getattr(link, "selected_pair", None)
        if callable(got):
            got = got()
        if got is not None:
            return got.as_dict() if hasattr(got, "as_dict") else dict(vars(got))
    ice = getattr(link, "_ice", None)
    conn = getattr(ice, "_connection", None)
    nominated = getattr(conn, "_nominated", None) or {}
    pair = nominated.get(1)
    if pair is None:
        return None
    lc, rc = pair.local_candidate, pair.remote_candidate
    return {
        "local_type": lc.type,
        "local": f"{lc.host}:{lc.port}",
        "remote_type": rc.type,
        "remote": f"{rc.host}:{rc.port}",
    }


def path_kind(pair: dict[str, Any] | None, turn_host: str) -> str:
    """ "relay" when either end is a TURN allocation, "direct" otherwise, "none" without a pair."""
    if not pair:
        return "none"
    if pair.get("local_type") == "relay" or pair.get("remote_type") == "relay":
        return "relay"
    if str(pair.get("remote", "")).rsplit(":", 1)[0] == turn_host:
        return "relay"
    return "direct"


def route_of(session: Session) -> str:
    """One line for a status: "direct (host -> srflx)" or "relay via TURN 198.18.0.2" or "-"."""
    if session.path != PATH_P2P:
        return "-"
    pair = selected_pair(session)
    turn_hosts = {
        url.split(":", 1)[1].rsplit(":", 1)[0].split("?")[0]
        for s in session.ice_servers
        for url in s.urls
        if url.startswith("turn")
    }
    kind = "none"
    for host in turn_hosts or {""}:
        kind = path_kind(pair, host)
        if kind == "relay":
            return f"relay via TURN {host}"
    if pair is None:
        return "p2p"
    return f"{kind} ({pair.get('local_type')} -> {pair.get('remote_type')})"
