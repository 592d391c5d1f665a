"""Find the peer among everyone who claims its role, all at once.

Why: presence is unauthenticated; anyone in the room can announce "follower" with any key id.
Trying one claimant at a time for a few seconds let two impostors delay the real peer for
good. Here every claimant (up to ``max_candidates``) gets its own channel and a handshake at
the same moment, and the first to complete it (only a holder of the secret can) is the peer.
Each claimant's signals pass a token bucket of their own, so an impostor's messages cost
bounded work and never queue in front of the real peer's.

Nothing here waits for a turn: a claimant is offered a handshake as soon as it is seen, and
its messages are answered as soon as they arrive (messages that came before its channel was
open are replayed by the carrier). Crossed handshakes resolve in :mod:`pairing` (the
leader's goes on). A handshake is offered again only when it was not answered within
``reoffer_after`` (a lost message, a restarted peer): a backstop, not the normal path.

The session tells the pairer whether it is ``seeking`` (unpaired, or its peer left); while
it is not, claimants still get channels and their handshakes are still answered (a restarted
peer comes back under a new nick and proves the secret again), but none are offered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .carrier import (
    Carrier,
    CarrierDown,
    CarrierEvent,
    CarrierUp,
    Claim,
    MemberJoined,
    MemberLeft,
    PeerChannel,
)
from .links.base import LinkError
from .links.budget import TokenBucket
from .pairing import HandshakeError, Pairing, Role, Secret, SessionKeys

log = logging.getLogger(__name__)

#: handshake refusals that mean "this occupant could not prove the role it claims"
_UNPROVEN = frozenset(
    {"key_mismatch", "unauthenticated", "identity", "role_conflict", "replayed", "malformed"}
)
#: refusals after which a claimant is parked: it holds another secret (or none) for sure
_PARK = frozenset({"key_mismatch", "unauthenticated", "role_conflict"})
_MAX_REMEMBERED = 4096


@dataclass
class PairerConfig:
    """Bounds on what claimants may cost. Defaults suit a room under attack."""

    #: claimants with an open channel at once; beyond it, the longest-tried unproven one
    #: gives its place to a newcomer
    max_candidates: int = 16
    #: signals per second (and burst) accepted from one occupant
    signal_rate: float = 5.0
    signal_burst: float = 10.0
    #: offer the handshake again to a claimant that has not completed it after this long
    reoffer_after: float = 3.0
    #: a claimant whose handshake failed authentication loses its channel for this long: its
    #: messages then cost parsing only (no acks, no crypto, none of our room budget)
    park_for: float = 30.0


@dataclass
class _Candidate:
    claim: Claim
    channel: PeerChannel
    bucket: TokenBucket
    opened: float
    offered: float = 0.0  # monotonic time of our last INIT to it; 0 = never


@dataclass
class PairerStats:
    """Refusals by reason, and the occupants that claimed a role they could not prove."""

    refusals: dict[str, int] = field(default_factory=dict)
    unproven: set[str] = field(default_factory=set)
    candidates: int = 0
    offers: int = 0

    def count(self, reason: str, n: int = 1) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + n

    def mark_unproven(self, peer_id: str) -> None:
        if len(self.unproven) < _MAX_REMEMBERED:
            self.unproven.add(peer_id)


PairedCallback = Callable[[SessionKeys], None]
SignalCallback = Callable[[str, dict[str, Any]], None]
RecordCallback = Callable[[str, int, bytes], None]


class Pairer:
    """Pairing with every claimant of the other role at once, over one carrier."""

    def __init__(
        self,
        carrier: Carrier,
        secret: Secret,
        role: Role,
        fingerprints: tuple[str, ...],
        config: PairerConfig | None = None,
        *,
        on_paired: PairedCallback,
        on_signal: SignalCallback,
        on_record: RecordCallback,
    ) -> None:
        self.carrier = carrier
        self.role = role
        self.config = config or PairerConfig()
        self.pairing = Pairing(secret, role, carrier.namespace, carrier.local_id, fingerprints)
        self.stats = PairerStats()
        self._on_paired = on_paired
        self._on_signal = on_signal
        self._on_record = on_record
        self._candidates: dict[str, _Candidate] = {}
        self._parked: dict[str, float] = {}  # peer id -> until (monotonic)
        self._seeking = False
        self._peer: str | None = None
        self._closed = False
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------ control ---------------
    def start(self) -> None:
        self._unsubscribe = self.carrier.subscribe(self._on_event)
        self._admit_all()
        self._task = asyncio.ensure_future(self._backstop())

    async def close(self) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
        for cand in list(self._candidates.values()):
            with contextlib.suppress(Exception):
                await cand.channel.close()
        self._candidates.clear()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=2.0)

    @property
    def seeking(self) -> bool:
        return self._seeking

    def seek(self, on: bool, peer: str | None = None) -> None:
        """``on``: offer handshakes to every claimant now (unpaired, or the peer left).
        ``peer``: the authenticated peer (its channel is never given up)."""
        self._peer = peer
        was = self._seeking
        self._seeking = on
        if on and not was:
            self._admit_all()
            for cand in self._offer_order():
                self._offer(cand)

    def refresh(self) -> None:
        """Open a channel to every claimant that has none (the peer back at the address whose
        old channel was just closed: call once that close has run)."""
        self._admit_all()

    def _offer_order(self) -> list[_Candidate]:
        """Most recently seen first (see :meth:`_admit_all`)."""
        return sorted(self._candidates.values(), key=lambda c: c.opened, reverse=True)

    def channel(self, peer_id: str | None) -> PeerChannel | None:
        cand = self._candidates.get(peer_id) if peer_id is not None else None
        return cand.channel if cand is not None else None

    def snapshot(self) -> dict[str, int]:
        """Counters for ``session.stats()``: refusals by reason, unproven claimants."""
        out = dict(self.stats.refusals)
        out["unproven_claimants"] = len(self.stats.unproven)
        out["candidates"] = len(self._candidates)
        out["offers"] = self.stats.offers
        return out

    # ------------------------------------------------------------ candidates ------------
    def _admit_all(self) -> None:
        """Newest claimants first: a site that (re)joins is more likely the peer than the
        occupants that were already there, and the room budget serves earlier sends first."""
        if not self.carrier.online:
            return
        for claim in reversed(self.carrier.claimants(self.role.other.value)):
            self._admit(claim)

    def _admit(self, claim: Claim) -> _Candidate | None:
        if self._closed or claim.role != self.role.other.value:
            return None
        cand = self._candidates.get(claim.peer_id)
        if cand is not None:
            cand.claim = claim
            return cand
        until = self._parked.get(claim.peer_id)
        if until is not None:
            if time.monotonic() < until:
                return None
            del self._parked[claim.peer_id]
        if len(self._candidates) >= self.config.max_candidates and not self._evict():
            self.stats.count("candidates_deferred")
            return None
        try:
            channel = self.carrier.open_channel(claim.peer_id)
        except ValueError:  # already open elsewhere: not ours to use
            return None
        cfg = self.config
        cand = _Candidate(
            claim, channel, TokenBucket(cfg.signal_rate, cfg.signal_burst), time.monotonic()
        )
        pid = claim.peer_id
        channel.set_signal_callback(lambda _n, m, pid=pid: self._on_channel_signal(pid, m))
        channel.set_receive_callback(lambda _n, s, p, pid=pid: self._on_record(pid, s, p))
        self._candidates[pid] = cand
        self.stats.candidates += 1
        return cand

    def _evict(self) -> bool:
        """Make room for a newcomer: drop the unproven claimant that had its chance longest
        ago (so a room full of impostors cannot keep the real peer out)."""
        now = time.monotonic()
        tried = [
            c
            for c in self._candidates.values()
            if c.claim.peer_id != self._peer and now - c.opened >= self.config.reoffer_after
        ]
        if not tried:
            return False
        victim = min(tried, key=lambda c: c.opened)
        self.stats.count("candidates_evicted")
        self.stats.mark_unproven(victim.claim.peer_id)
        self._drop(victim.claim.peer_id)
        return True

    def _drop(self, peer_id: str) -> None:
        cand = self._candidates.pop(peer_id, None)
        self.pairing.abandon(peer_id)
        if cand is not None:
            fut = asyncio.ensure_future(cand.channel.close())
            self._closing.add(fut)
            fut.add_done_callback(self._closing.discard)

    def _offer(self, cand: _Candidate, *, force: bool = False) -> None:
        if not self._seeking or self._closed or not self.carrier.online:
            return
        pid = cand.claim.peer_id
        now = time.monotonic()
        fresh = now - cand.offered < self.config.reoffer_after
        if not force and self.pairing.in_progress(pid) and fresh:
            return
        try:
            msg = self.pairing.initiate(pid)
            cand.channel.send_signal({"t": "pair", "m": base64.b64encode(msg).decode()})
        except (LinkError, ValueError) as e:
            log.debug("handshake offer to %s not sent: %s", pid, e)
            return
        cand.offered = now
        self.stats.offers += 1

    async def _backstop(self) -> None:
        """Re-offer handshakes nobody answered (lost, or a peer whose session restarted in
        place) and admit claimants that were deferred while the bound was reached."""
        period = max(0.2, self.config.reoffer_after / 3)
        while not self._closed:
            await asyncio.sleep(period)
            try:
                if not self._seeking or not self.carrier.online:
                    continue
                self._admit_all()
                now = time.monotonic()
                for cand in self._offer_order():
                    if now - cand.offered >= self.config.reoffer_after:
                        self._offer(cand, force=True)
            except Exception:
                log.exception("pairing backstop")

    # ------------------------------------------------------------ events ----------------
    def _on_event(self, event: CarrierEvent) -> None:
        if isinstance(event, MemberJoined):
            cand = self._admit(event.claim)
            if cand is not None:
                self._offer(cand)
        elif isinstance(event, MemberLeft):
            if event.peer_id in self._candidates:
                self._drop(event.peer_id)
        elif isinstance(event, CarrierUp):
            with contextlib.suppress(ValueError):
                self.pairing.set_local_id(event.local_id)
            self._admit_all()
            if self._seeking:
                for cand in self._offer_order():
                    self._offer(cand, force=True)
        elif isinstance(event, CarrierDown):
            pass  # the carrier comes back by itself; channels survive

    def _on_channel_signal(self, peer_id: str, msg: dict[str, Any]) -> None:
        cand = self._candidates.get(peer_id)
        if cand is None:
            self.stats.count("foreign_signals")
            return
        if not cand.bucket.try_consume(1):
            self.stats.count("rate_limited")
            return
        if msg.get("t") == "pair":
            self._on_pair(cand, msg)
        else:
            self._on_signal(peer_id, msg)

    def _on_pair(self, cand: _Candidate, msg: dict[str, Any]) -> None:
        pid = cand.claim.peer_id
        try:
            data = base64.b64decode(str(msg.get("m", "")), validate=True)
        except ValueError:
            self.stats.count("signal_invalid")
            return
        try:
            result = self.pairing.handle(data, pid)
        except HandshakeError as e:
            self.stats.count(e.reason)
            if e.reason in _UNPROVEN:
                self.stats.mark_unproven(pid)
            log.info("handshake from %s refused (%s): %s", pid, e.reason, e)
            if e.reason in _PARK and pid != self._peer:
                self.stats.count("parked")
                self._parked[pid] = time.monotonic() + self.config.park_for
                if len(self._parked) > _MAX_REMEMBERED:
                    del self._parked[next(iter(self._parked))]
                self._drop(pid)
            return
        if result.reply is not None:
            try:
                cand.channel.send_signal(
                    {"t": "pair", "m": base64.b64encode(result.reply).decode()}
                )
            except LinkError as e:
                log.info("handshake reply to %s not sent: %s", pid, e)
                return
        if result.session is not None:
            # everyone else that claimed the role and has not proven it by now is unproven
            for other in self._candidates:
                if other != pid and other != self._peer:
                    self.stats.mark_unproven(other)
            self._peer = pid
            self._on_paired(result.session)
