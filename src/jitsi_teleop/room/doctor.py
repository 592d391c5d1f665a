"""``jitsi-teleop doctor``: can this machine use that room? One check run, one report.

It joins as a plain occupant (no teleop payload, so pairing peers ignore it), lists the teleop
endpoints present, asks for STUN/TURN (XEP-0215) and measures round trips through the server
(XEP-0199 ping) and through the MUC (a slow-path frame to our own occupant JID).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .account import Account
from .config import RoomConfig, RoomError
from .discovery import DiscoveryError, discover

#: exit status per failure kind (0 = all checks passed)
EXIT_CODES = {
    "ok": 0,
    "usage": 2,
    "unreachable": 3,
    "tls": 4,
    "auth": 5,
    "join": 6,
    "focus": 7,
    "discovery": 8,
    "check": 9,
    "error": 10,
}


@dataclass
class DoctorReport:
    ok: bool = False
    kind: str = "ok"
    reason: str = ""
    transport: str = ""
    #: why that transport: config.js/parameters, and a WebSocket-to-BOSH fallback if any
    transport_reason: str = ""
    domain: str = ""
    room_jid: str = ""
    nick: str = ""
    focus: str | None = None
    focus_ready: bool | None = None
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    other_occupants: int = 0
    #: occupants per claimed teleop role: more than one means someone copies a presence
    role_claims: dict[str, int] = field(default_factory=dict)
    #: occupants that may kick (moderators) and owners, who may also lock the room
    moderators: list[str] = field(default_factory=list)
    #: what our own occupant refused while the checks ran (flooding, forged presences)
    refusals: dict[str, int] = field(default_factory=dict)
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    #: what this site got from those servers and whether a path through the TURN relay works
    #: (links.ice_check: per-server outcome, candidate types, the relay path's selected pair)
    ice_check: dict[str, Any] = field(default_factory=dict)
    rtt_server_ms: float | None = None
    rtt_room_ms: float | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.kind, 10)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d

    def human(self) -> str:
        lines = []
        status = "OK" if self.ok else f"FAIL ({self.kind})"
        lines.append(f"doctor: {status}" + (f": {self.reason}" if self.reason else ""))
        if self.room_jid:
            lines.append(
                f"  room        {self.room_jid} via {self.transport}"
                + (f" as {self.nick}" if self.nick else "")
            )
        if self.transport_reason:
            lines.append(f"  transport   {self.transport_reason}")
        if self.focus:
            state = {True: "ready", False: "not ready", None: "absent (joined without it)"}
            lines.append(f"  focus       {self.focus}: {state[self.focus_ready]}")
        if self.ok or self.endpoints:
            lines.append(
                f"  endpoints   {len(self.endpoints)} teleop endpoint(s), "
                f"{self.other_occupants} other occupant(s)"
            )
            for e in self.endpoints:
                lines.append(
                    f"    {e['nick']}  {e['role']:<8} robot={e['robot'] or '-'} "
                    f"key={e['key_id'] or '-'}"
                )
        for role, n in sorted(self.role_claims.items()):
            if n > 1:
                lines.append(
                    f"  claims      {n} occupants claim the {role} role: at most one holds the "
                    "key, the others are impostors or stale sessions (pairing refuses them)"
                )
        if self.moderators:
            lines.append(f"  moderators  {', '.join(self.moderators)} (may kick; owners may lock)")
        refused = {k: v for k, v in self.refusals.items() if v}
        if refused:
            lines.append(
                "  refused     " + ", ".join(f"{k} {v}" for k, v in sorted(refused.items()))
            )
        if self.ok:
            lines.append(f"  ice servers {len(self.ice_servers)}")
            for s in self.ice_servers:
                cred = " (with credentials)" if s.get("username") else ""
                lines.append(f"    {' '.join(s['urls'])}{cred}")
        if self.ice_check:
            from ..links.ice_check import describe

            lines.append("  ice check")
            lines.extend(describe(self.ice_check))
        if self.rtt_server_ms is not None:
            lines.append(f"  rtt server  {self.rtt_server_ms:.1f} ms (XEP-0199 ping)")
        if self.rtt_room_ms is not None:
            lines.append(f"  rtt room    {self.rtt_room_ms:.1f} ms (private MUC message to self)")
        for w in self.warnings:
            lines.append(f"  warning     {w}")
        return "\n".join(lines)


@dataclass
class DoctorOptions:
    meeting_url: str | None = None
    websocket: str | None = None
    bosh: str | None = None  # forces BOSH (with --websocket too: WebSocket, then BOSH)
    tcp: str | None = None  # host:port
    domain: str | None = None
    muc: str | None = None
    room: str | None = None
    focus: str | None = None
    no_focus: bool = False
    password: str | None = None
    token: str | None = None
    insecure: bool = False
    timeout: float = 20.0
    pings: int = 3
    require_turn: bool = False
    #: gather with the announced STUN/TURN servers and call through the TURN relay
    ice_check: bool = True
    account: Account | None = None  # log in with this account instead of anonymously


async def _build_config(opts: DoctorOptions, report: DoctorReport | None = None) -> RoomConfig:
    common: dict[str, Any] = dict(
        password=opts.password,
        token=opts.token,
        insecure=opts.insecure,
        teleop_role=None,
        display_name="jitsi-teleop doctor",
        reconnect=False,
        connect_timeout=min(10.0, opts.timeout / 2),
        join_timeout=min(10.0, opts.timeout / 2),
        ping_interval=3600.0,
        account=opts.account,
    )
    tcp_host = tcp_port = None
    if opts.tcp:
        host, _, port = opts.tcp.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--tcp wants host:port, got {opts.tcp!r}")
        tcp_host, tcp_port = host, int(port)
    if opts.meeting_url:
        settings = await discover(
            opts.meeting_url,
            insecure=opts.insecure,
            timeout=min(10.0, opts.timeout / 2),
            domain=opts.domain,
            muc_domain=opts.muc,
            websocket_url=opts.websocket,
            bosh_url=opts.bosh,
            focus=opts.focus,
        )
        if report is not None:
            report.transport_reason = settings.transport_reason
        over: dict[str, Any] = dict(common)
        if opts.room:
            over["room"] = opts.room
        if tcp_host:
            over.update(tcp_host=tcp_host, tcp_port=tcp_port)
        if opts.no_focus:
            over["focus"] = None
        if opts.account is not None:  # not the guest domain: the account's own
            over["domain"] = opts.account.domain
        return settings.room_config(**over)
    has_domain = bool(opts.domain or opts.account)
    if not (has_domain and opts.room and (opts.websocket or opts.bosh or tcp_host)):
        raise ValueError("give a meeting URL, or --domain, --room and --websocket, --bosh or --tcp")
    if report is not None and not tcp_host:
        report.transport_reason = (
            "--websocket, BOSH as fallback"
            if opts.websocket and opts.bosh
            else "--bosh given: BOSH forced"
            if opts.bosh
            else "--websocket given"
        )
    return RoomConfig(
        room=opts.room,
        domain=opts.domain or "",
        muc_domain=opts.muc or "",
        websocket_url=None if tcp_host else opts.websocket,
        bosh_url=None if tcp_host else opts.bosh,
        tcp_host=tcp_host,
        tcp_port=tcp_port or 5222,
        focus=None if opts.no_focus else opts.focus,
        **common,
    )


async def run_doctor(opts: DoctorOptions) -> DoctorReport:
    """Run all checks within ``opts.timeout``; never raises for network or server trouble."""
    report = DoctorReport()
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(_checks(opts, report), opts.timeout)
    except asyncio.TimeoutError:
        report.ok, report.kind = False, report.kind if report.kind != "ok" else "check"
        report.reason = report.reason or f"checks did not finish within {opts.timeout:g} s"
    report.elapsed_s = round(time.monotonic() - t0, 3)
    return report


async def _checks(opts: DoctorOptions, report: DoctorReport) -> None:
    from ..links.muc import MucLink
    from .room import Room

    try:
        config = await _build_config(opts, report)
    except ValueError as e:
        report.kind, report.reason = "usage", str(e)
        return
    except DiscoveryError as e:
        report.kind, report.reason = "discovery", str(e)
        return
    report.transport = (
        f"tcp {config.tcp_host}:{config.tcp_port}"
        if config.tcp_host
        else f"websocket {config.websocket_url}"
        if config.websocket_url
        else f"bosh {config.bosh_url}"
    )
    report.domain, report.room_jid, report.focus = config.domain, config.room_jid, config.focus
    room = Room(config)
    try:
        try:
            await room.join()
        except RoomError as e:
            report.kind, report.reason = e.kind, e.reason
            return
        _report_transport(room, report)
        report.nick = room.nick
        if config.focus:
            report.focus_ready = room.focus_reply.ready if room.focus_reply else None
            if room.focus_reply is None:
                report.warnings.append(f"no focus answered at {config.focus}; joined without")
        occupants = room.occupants.values()
        report.endpoints = [
            dict(
                nick=o.nick,
                role=o.teleop.role,
                robot=o.teleop.robot,
                key_id=o.teleop.key_id,
                jid=o.jid,
            )
            for o in occupants
            if o.teleop is not None and not o.is_self
        ]
        report.other_occupants = sum(1 for o in occupants if o.teleop is None and not o.is_self)
        for e in report.endpoints:
            report.role_claims[e["role"]] = report.role_claims.get(e["role"], 0) + 1
        report.moderators = [
            f"{o.nick} ({o.affiliation if o.affiliation in ('owner', 'admin') else o.muc_role})"
            for o in occupants
            if not o.is_self and (o.muc_role == "moderator" or o.affiliation in ("owner", "admin"))
        ]
        try:
            servers = await room.ice_servers(timeout=5.0)
        except Exception as e:
            servers = []
            report.warnings.append(f"external service discovery failed: {e}")
        report.ice_servers = [asdict(s) for s in servers]
        if opts.ice_check and servers:
            from ..links.ice_check import ice_check

            report.ice_check = await ice_check(servers)
            rp = report.ice_check.get("relay_path") or {}
            if not rp.get("ok"):
                report.warnings.append(f"TURN relay path: {rp.get('detail', 'not relayed')}")
        if not any(u.startswith(("turn:", "turns:")) for s in servers for u in s.urls):
            msg = "the server announces no TURN server (P2P may fail across NATs)"
            if opts.require_turn:
                report.kind, report.reason = "check", msg
                return
            report.warnings.append(msg)
        rtts = []
        for _ in range(max(1, opts.pings)):
            # space the samples: mod_limits pauses reading after each stanza (N bytes cost
            # N/rate seconds), which would otherwise add to the next sample
            await asyncio.sleep(0.1)
            try:
                rtts.append(await room.ping(timeout=5.0))
            except Exception as e:
                report.kind, report.reason = "check", f"server did not answer ping: {e}"
                return
        report.rtt_server_ms = round(statistics.median(rtts) * 1000, 2)
        report.rtt_room_ms = await _room_rtt(room, MucLink)
        if report.rtt_room_ms is None:
            report.kind, report.reason = "check", "a message to ourselves via the room was lost"
            return
        report.ok = True
    finally:
        st = room.stats
        report.refusals = {
            "invalid_presences": st.invalid_presences,
            "key_conflicts": st.key_conflicts,
            "iq_dropped": st.iq_dropped,
            "ignored_messages": st.ignored_messages,
        }
        await room.close()


def _report_transport(room: Any, report: DoctorReport) -> None:
    """The transport the join really used, and why (a WebSocket may have fallen back)."""
    choice = getattr(room.xmpp.connector, "choice", None) if room.xmpp is not None else None
    if choice is None:
        return
    report.transport = f"{choice.kind} {choice.url}"
    reasons = [r for r in (report.transport_reason, choice.reason) if r]
    report.transport_reason = "; ".join(reasons)


async def _room_rtt(room: Any, link_cls: Any, samples: int = 3) -> float | None:
    """Median time for a slow-path frame to our own occupant JID to come back."""
    link = link_cls(room, room.nick, follow_key=False)
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
    link.set_receive_callback(lambda _n, _s, p: arrived.put_nowait((p, loop.time())))
    out = []
    try:
        for i in range(samples):
            await asyncio.sleep(0.1)
            sent = loop.time()
            link.send(0, b"doctor-%d" % i, latest=False)
            try:
                while True:
                    payload, at = await asyncio.wait_for(arrived.get(), 5.0)
                    if payload == b"doctor-%d" % i:
                        out.append(at - sent)
                        break
            except asyncio.TimeoutError:
                return None
    finally:
        await link.close()
    return round(statistics.median(out) * 1000, 2)
