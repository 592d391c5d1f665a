"""One experiment on the simulated internet: build it, start the servers, run a leader and a
follower site (:mod:`.agent`) in their namespaces, and read what they report.

Used by the NAT-matrix tests, ``jitsi-teleop bench --nat`` and the demo's ``--network``.
Everything is torn down by :meth:`Lab.close` (and, as a last resort, by the namespace
registry at exit or SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..ipc import SiteFailed
from . import delay, netns
from .internet import SERVER_IP, Impairment, Internet
from .servers import Servers, coturn_available


def unavailable(need_delay: bool = False) -> str | None:
    """Why the lab cannot run here (for a clean skip), or None."""
    why = netns.available()
    if why:
        return why
    import shutil

    for tool in ("iptables", "conntrack", "ss"):
        if shutil.which(tool) is None and not any(
            __import__("os").path.exists(f"{d}/{tool}") for d in ("/usr/sbin", "/sbin")
        ):
            return f"{tool} is not installed (scripts/setup-dev.sh installs it)"
    why = coturn_available()
    if why:
        return why
    from ..local_prosody import prosody_available

    if not prosody_available():
        return "prosody is not installed"
    if need_delay:
        return delay.available()
    return None


@dataclass
class LabConfig:
    nat_a: str = "port-restricted"
    nat_b: str = "port-restricted"
    turn: bool = True  #: coturn runs (Prosody announces it either way)
    block_direct_udp: bool = False
    impairment: Impairment | None = None
    rate_hz: float = 100.0
    #: SessionConfig overrides for both sites
    session: dict[str, Any] = field(default_factory=dict)
    #: traffic both ways at ``rate_hz`` and a reliable stream each way (agent.AgentConfig)
    both_ways: bool = False
    reliable_hz: float = 0.0

    def label(self) -> str:
        parts = [f"{self.nat_a}/{self.nat_b}"]
        if self.block_direct_udp:
            parts.append("UDP blocked")
        if not self.turn:
            parts.append("TURN down")
        return ", ".join(parts)


class SiteProc:
    """Parent side of one agent: every message kept by key, newest wins."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.seen: dict[str, Any] = {}
        self.log: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._stderr = b""
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._errs())]

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            self.log.append(msg)
            self.seen.update(msg)
            self._changed.set()
        self.seen["eof"] = True
        self._changed.set()

    async def _errs(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            self._stderr = (self._stderr + chunk)[-8000:]

    def stderr_tail(self, lines: int = 8) -> str:
        return " | ".join(self._stderr.decode(errors="replace").strip().splitlines()[-lines:])

    def tell(self, **msg: Any) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def wait_for(self, key: str, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while key not in self.seen:
            if "error" in self.seen:
                raise SiteFailed(f"{self.name}: {self.seen['error']} ({self.stderr_tail()})")
            if "eof" in self.seen:
                await asyncio.sleep(0.2)
                raise SiteFailed(f"{self.name} exited early: {self.stderr_tail()}")
            left = deadline - loop.time()
            if left <= 0:
                raise SiteFailed(f"{self.name}: no {key!r} within {timeout:g} s")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.seen[key]

    async def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        self.seen.pop("stats", None)
        self.tell(stats=1)
        return await self.wait_for("stats", timeout)

    async def timeline(self, timeout: float = 10.0) -> dict[str, Any]:
        """What happened when (agent.Agent.timeline; needs ``both_ways``)."""
        self.seen.pop("timeline", None)
        self.tell(timeline=1)
        return await self.wait_for("timeline", timeout)

    async def reset(self, timeout: float = 10.0) -> None:
        self.seen.pop("reset", None)
        self.tell(reset=1)
        await self.wait_for("reset", timeout)

    async def close(self) -> None:
        self.tell(stop=1)
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            import contextlib

            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        for t in self._tasks:
            t.cancel()


@dataclass
class PairResult:
    """What one run of a NAT case showed (all times in seconds since the site began to join)."""

    case: str
    path: str  #: "direct", "relay" or "none" (room only)
    pair: dict[str, Any] | None
    joined_s: float
    paired_s: float
    fast_s: float | None
    #: the later of the two sites' time from having joined the room to the fast path
    join_to_fast_s: float | None
    leader: dict[str, Any]
    follower: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _join_to_fast(*sites: SiteProc) -> float:
    return max(s.seen["fast"] - s.seen["joined"] for s in sites)


def pair_path(leader: dict[str, Any], follower: dict[str, Any]) -> str:
    """The path both sites' stats show: "relay" if either end's pair goes through TURN,
    "direct" if both have a direct pair, "none" when either has no fast path."""
    from .paths import path_kind

    if leader.get("path") != "p2p" or follower.get("path") != "p2p":
        return "none"
    kinds = {path_kind(leader.get("pair"), SERVER_IP), path_kind(follower.get("pair"), SERVER_IP)}
    if "relay" in kinds:
        return "relay"
    return "direct" if kinds == {"direct"} else "none"


class Lab:
    """``async with Lab(cfg) as lab:`` builds the internet and servers; :meth:`start_sites`
    starts the two agents; :meth:`close` tears all down."""

    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg
        self.net = Internet(cfg.nat_a, cfg.nat_b)
        self.servers: Servers | None = None
        self.sites: dict[str, SiteProc] = {}
        self.room = f"lab{secrets.token_hex(4)}"
        self.secret_hex = secrets.token_hex(32)

    async def __aenter__(self) -> Lab:
        await asyncio.to_thread(self._up)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _up(self) -> None:
        try:
            self.net.up()
            self.servers = Servers(self.net.server, turn=self.cfg.turn).start()
            if self.cfg.block_direct_udp:
                self.net.block_direct_udp(True)
            if self.cfg.impairment is not None:
                self.net.impair(self.cfg.impairment)
        except BaseException:
            self._down()
            raise

    def _down(self) -> None:
        if self.servers is not None:
            self.servers.stop()
        self.net.down()

    async def close(self) -> None:
        for s in self.sites.values():
            await s.close()
        self.sites.clear()
        await asyncio.to_thread(self._down)

    async def start_site(self, role: str) -> SiteProc:
        assert self.servers is not None
        side = "a" if role == "leader" else "b"
        host = self.net.host(side)
        proc = await asyncio.create_subprocess_exec(
            *host.argv([sys.executable, "-m", "jitsi_teleop.netlab.agent"]),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        site = SiteProc(role, proc)
        self.sites[role] = site
        site.tell(
            config={
                "role": role,
                "room": {
                    **self.servers.room_settings(self.room),
                    "teleop_role": role,
                    "key_id": self.secret_hex[:8],
                },
                "secret_hex": self.secret_hex,
                "rate_hz": self.cfg.rate_hz,
                "session": self.cfg.session,
                "both_ways": self.cfg.both_ways,
                "reliable_hz": self.cfg.reliable_hz,
            }
        )
        return site

    async def start_sites(self) -> tuple[SiteProc, SiteProc]:
        leader = await self.start_site("leader")
        follower = await self.start_site("follower")
        return leader, follower

    async def pair(self, fast_timeout: float = 30.0, pair_timeout: float = 60.0) -> PairResult:
        """Start both sites and wait until both are paired and either both are on the fast
        path or ``fast_timeout`` passed (then the room carries the traffic)."""
        leader, follower = await self.start_sites()
        for s in (leader, follower):
            await s.wait_for("paired", pair_timeout)
        fast: float | None = None
        try:
            await leader.wait_for("fast", fast_timeout)
            await follower.wait_for("fast", fast_timeout)
            fast = max(leader.seen["fast"], follower.seen["fast"])
        except SiteFailed:
            if "eof" in leader.seen or "eof" in follower.seen or "error" in leader.seen:
                raise
        ls, fs = await leader.stats(), await follower.stats()
        joined = max(leader.seen["joined"], follower.seen["joined"])
        return PairResult(
            case=self.cfg.label(),
            path=pair_path(ls, fs) if fast is not None else "none",
            pair=ls.get("pair") if fast is not None else None,
            joined_s=joined,
            paired_s=max(leader.seen["paired"], follower.seen["paired"]),
            fast_s=fast,
            join_to_fast_s=_join_to_fast(leader, follower) if fast is not None else None,
            leader=ls,
            follower=fs,
        )

    async def until(self, cond: Any, timeout: float, what: str, every: float = 0.2) -> Any:
        """Poll the follower's and leader's stats until ``cond(leader, follower)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            ls = await self.sites["leader"].stats()
            fs = await self.sites["follower"].stats()
            if cond(ls, fs):
                return ls, fs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not within {timeout:g} s: {what}\nleader: {ls}\nfollower: {fs}"
                )
            await asyncio.sleep(every)
