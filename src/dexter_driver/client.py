"""asyncio client for the Dexter TCP protocol (port 50000).

The robot is strictly request/reply with one request in flight, so every caller goes through
one lock; a reply is matched by its job/instruction echo. Anything that leaves the byte stream
in doubt (a timeout, a cancelled request, a malformed or mismatched reply, a closed socket) drops
the connection and the background loop reconnects with backoff: the caller gets a clear
exception, never a hang, and the next request starts on a clean stream.

Joint targets are checked before anything is sent: NaN/inf raise ValueError, values outside the
joint limits are clamped and logged. ``set_position_target`` takes absolute radians and sends the
robot's `P` offset relative to the tracked `a` base.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dexter_driver.protocol import (
    ERR_BAD_OPLET,
    FOLLOW_ME_FILE,
    HDI_INTERPOLATION,
    JOINT_COUNT,
    JOINT_LIMITS_RAD,
    KEEP_POSITION_FILE,
    REPLY_SIZE,
    DexterStatus,
    Instruction,
    ProtocolError,
    arcsec_to_rad,
    atoi,
    clamp_joints,
    decode_status,
    encode_request,
    format_arg,
    rad_to_arcsec,
    us_to_s,
)
from jitsi_teleop.tasks import cancel_and_wait

__all__ = [
    "ClientConfig",
    "ClientStats",
    "DexterClient",
    "DexterCommandError",
    "DexterConnectionError",
    "DexterError",
    "DexterTimeout",
    "ReplyMismatch",
]

log = logging.getLogger(__name__)

StatusListener = Callable[[DexterStatus], None]
#: called with True when a connection's handshake is answered, False when a live one is lost
LinkListener = Callable[[bool], None]
_INT32_MAX = 2**31 - 1
#: `S JnForce` values are FPGA S19 registers
FORCE_MIN, FORCE_MAX = -(2**18), 2**18 - 1
#: oplets whose reply may legitimately take long (queue drain, mode files, full `a` FIFO)
_LONG_OPLETS = frozenset("aRFw")


class DexterError(Exception):
    """Base of the client's errors (protocol errors are ``protocol.ProtocolError``)."""


class DexterConnectionError(DexterError, ConnectionError):
    """Not connected, or the connection broke during a request (the client reconnects)."""


class DexterTimeout(DexterError, TimeoutError):
    """No reply within the request's timeout (the connection is dropped and re-established)."""


class DexterCommandError(DexterError):
    """The robot answered with error 1: unknown oplet or parameter."""


class ReplyMismatch(ProtocolError):
    """A well-formed reply that does not echo the request's job/instruction/oplet."""


@dataclass(frozen=True)
class ClientConfig:
    """Timing and limits of a :class:`DexterClient`."""

    timeout_s: float = 1.0  #: per request (short oplets: g, P, S, ...)
    long_timeout_s: float = 120.0  #: F, RunFile, w, and `a`/`R` (reply withheld while FIFO full)
    connect_timeout_s: float = 5.0  #: how long start() waits for the first connection
    heartbeat_s: float = 5.0  #: a `g` after this much silence (robot drops idle sockets at 30 s)
    poll_hz: float = 0.0  #: status polling rate; 0 = no polling (heartbeat only)
    reconnect_min_s: float = 0.1  #: backoff after the first failure ...
    #: ... doubling up to this: a connect attempt to a robot on the LAN costs nothing, and this
    #: bounds how long after the robot is back the driver still waits (bench/faults.py robot)
    reconnect_max_s: float = 1.0
    job_id: int = 1  #: job id put in every request header
    limits: tuple[tuple[float, float], ...] = JOINT_LIMITS_RAD  #: J1..J5, rad
    interpolation: tuple[int, ...] = HDI_INTERPOLATION  #: J4/J5 DELTA scaling (HD: 1,1,1,16,16)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.long_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        if not 0 < self.heartbeat_s < 30.0:
            raise ValueError("heartbeat_s must be in (0, 30): the robot drops a silent client")
        if self.poll_hz < 0:
            raise ValueError("poll_hz must be >= 0")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")


@dataclass
class ClientStats:
    """Counters since construction."""

    requests: int = 0  #: requests written
    replies: int = 0  #: valid replies received
    timeouts: int = 0
    connects: int = 0  #: successful connections (handshake answered)
    reconnects: int = 0  #: connections after the first
    connect_failures: int = 0
    protocol_errors: int = 0  #: malformed or mismatched replies
    command_errors: int = 0  #: replies with error 1
    clamped: int = 0  #: joint targets clamped to the limits
    last_rtt_s: float | None = None


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class DexterClient:
    """One TCP connection to a Dexter (or ``dexter-sim``), kept alive and re-established."""

    def __init__(self, host: str, port: int = 50000, config: ClientConfig | None = None) -> None:
        self.host = host
        self.port = port
        self.config = config or ClientConfig()
        self.stats = ClientStats()
        self.latest: DexterStatus | None = None
        self.last_error: BaseException | None = None
        self._listeners: list[StatusListener] = []
        self._link_listeners: list[LinkListener] = []
        self._lock = asyncio.Lock()  # one request in flight
        self._motion_lock = asyncio.Lock()  # the `a` base / `P` offset bookkeeping
        self._conn: _Conn | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._instruction_id = 0
        self._last_exchange = 0.0
        self._a_base: tuple[float, ...] | None = None
        self._p_offset: tuple[float, ...] = (0.0,) * JOINT_COUNT
        self._forces_sent: list[int | None] = [None] * JOINT_COUNT

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, wait: bool = True) -> None:
        """Start the connect/reconnect loop and the poll/heartbeat loop.

        With ``wait`` it returns once the robot has answered a first `g`, or stops and raises
        DexterConnectionError (with the last failure) after ``connect_timeout_s``.
        """
        if self._tasks:
            raise RuntimeError("client already started")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._supervise()), loop.create_task(self._keepalive())]
        if not wait:
            return
        try:
            await asyncio.wait_for(self._connected.wait(), self.config.connect_timeout_s)
        except asyncio.TimeoutError:
            await self.stop()
            why = f": {_describe(self.last_error)}" if self.last_error else ""
            raise DexterConnectionError(
                f"no Dexter answering at {self.host}:{self.port} within "
                f"{self.config.connect_timeout_s:g} s{why}"
            ) from None

    async def stop(self) -> None:
        """Stop the background loops and close the connection."""
        tasks, self._tasks = self._tasks, []
        self._stopping = True
        for t in tasks:
            await cancel_and_wait(t)  # a cancel racing a reply is lost in wait_for (< 3.12)
        self._stopping = False
        if self._conn is not None:
            self._drop(self._conn, "client stopped")

    async def __aenter__(self) -> DexterClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        """True while a connection is up and its handshake `g` was answered."""
        return self._connected.is_set()

    def add_status_listener(self, callback: StatusListener) -> None:
        """``callback(status)`` runs in the event loop for every reply (every reply is a status)."""
        self._listeners.append(callback)

    def remove_status_listener(self, callback: StatusListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def add_link_listener(self, callback: LinkListener) -> None:
        """``callback(up)`` runs in the event loop when the link comes up (handshake answered:
        the robot's state has just been re-read) or a live link is lost, so a controller can
        hold at once and re-sync to the robot's real pose before commanding it again."""
        self._link_listeners.append(callback)

    def remove_link_listener(self, callback: LinkListener) -> None:
        with contextlib.suppress(ValueError):
            self._link_listeners.remove(callback)

    def _notify_link(self, up: bool) -> None:
        for cb in list(self._link_listeners):
            try:
                cb(up)
            except Exception:
                log.exception("link listener %r failed", cb)

    # -- requests ---------------------------------------------------------------------------

    async def request(
        self, instruction: Instruction | str, *args: object, timeout: float | None = None
    ) -> DexterStatus:
        """Send one instruction and return the robot's reply.

        ``instruction`` is an :class:`Instruction` or an oplet character followed by ``args``.
        The default timeout is ``timeout_s``, or ``long_timeout_s`` for oplets the robot may
        legitimately hold (F, w, `a`/`R` with a full FIFO, S RunFile), plus the duration of `z`.
        Raises DexterConnectionError, DexterTimeout or a ProtocolError; the error code in the
        reply is not checked here (see the helpers).
        """
        ins = _instruction(instruction, args)
        limit = self._timeout_for(ins) if timeout is None else timeout
        async with self._lock:
            conn = self._conn
            if conn is None:
                why = f" (last error: {_describe(self.last_error)})" if self.last_error else ""
                raise DexterConnectionError(f"not connected to {self.host}:{self.port}{why}")
            return await self._exchange(conn, ins, limit)

    async def status(self) -> DexterStatus:
        """`g`: the robot's current status."""
        return await self.request(Instruction.status())

    async def move_all_joints(
        self, q_rad: Sequence[float], j6_rad: float | None = None, j7_rad: float | None = None
    ) -> DexterStatus:
        """`a`: queued coordinated move to absolute J1..J5 (rad); becomes the `P` base.

        A `P` offset in effect is cancelled (`P 0 0 0 0 0`), so the arm ends at ``q_rad``.
        """
        q = self._checked_target(q_rad)
        async with self._motion_lock:
            st = await self._command(Instruction.move_all_joints(q, j6_rad, j7_rad))
            self._a_base = _on_wire(q)
            if any(self._p_offset):
                st = await self._command(Instruction.pid_move_all_joints((0.0,) * JOINT_COUNT))
                self._p_offset = (0.0,) * JOINT_COUNT
            return st

    async def set_position_target(self, q_rad: Sequence[float]) -> DexterStatus:
        """`P` with an ABSOLUTE J1..J5 target (rad): sends target − `a` base, as the robot needs.

        Without a known base (first call), the base is set where the arm is, with an `a` to the
        measured angles (no motion), so the first target is reached at the `P` speed cap.
        """
        q = self._checked_target(q_rad)
        async with self._motion_lock:
            if self._a_base is None:
                here = self._checked_target((await self.status()).measured_angles)
                await self._command(Instruction.move_all_joints(here))
                self._a_base = _on_wire(here)
            offset = tuple(t - b for t, b in zip(q, self._a_base))
            st = await self._command(Instruction.pid_move_all_joints(offset))
            self._p_offset = offset
            return st

    async def set_follow_me(self) -> DexterStatus:
        """Follow-me mode as the robot enters it: `S RunFile setFollowMeMode.make_ins`."""
        return await self._command(Instruction.run_file(FOLLOW_ME_FILE))

    async def set_keep_position(self) -> DexterStatus:
        """Keep-position mode: `S RunFile setKeepPositionMode.make_ins`."""
        return await self._command(Instruction.run_file(KEEP_POSITION_FILE))

    async def set_joint_forces(self, values: Sequence[float], resend: bool = False) -> DexterStatus:
        """`S J1Force`..`S J5Force` (raw robot units, rounded to int; one request per joint).

        The robot keeps these parameters, so only joints whose value changed since the last
        successful send on this connection are sent (all of them with ``resend``); with nothing
        to send, the latest status is returned.
        """
        vals = [float(v) for v in values]
        if len(vals) != JOINT_COUNT:
            raise ValueError(f"need {JOINT_COUNT} force values, got {len(vals)}")
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"joint forces must be finite, got {vals}")
        ints = [min(max(round(v), FORCE_MIN), FORCE_MAX) for v in vals]
        if ints != [round(v) for v in vals]:
            log.warning("joint forces %s clamped to the S19 range: %s", vals, ints)
        st = self.latest
        for i, v in enumerate(ints):
            if resend or self._forces_sent[i] != v:
                st = await self._command(Instruction.joint_force(i + 1, v))
                self._forces_sent[i] = v
        if st is None or not self.connected:
            raise DexterConnectionError(f"not connected to {self.host}:{self.port}")
        return st

    async def set_parameter(self, name: str, *values: object) -> DexterStatus:
        """`S name value...` (a name from ``protocol.PARAMETERS``)."""
        return await self._command(Instruction.set_parameter(name, *values))

    async def wait_until_idle(self, timeout: float | None = None) -> DexterStatus:
        """`F`: returns when the robot's motion queue is empty."""
        return await self._command(Instruction.wait_until_idle(), timeout)

    # -- internals --------------------------------------------------------------------------

    def _timeout_for(self, ins: Instruction) -> float:
        c = self.config
        if ins.oplet in _LONG_OPLETS or (ins.oplet == "S" and ins.args[:1] == ("RunFile",)):
            return c.long_timeout_s
        if ins.oplet == "z" and ins.args:
            return c.timeout_s + us_to_s(max(atoi(ins.args[0]), 0))
        return c.timeout_s

    def _checked_target(self, q_rad: Sequence[float]) -> tuple[float, ...]:
        """NaN/inf -> ValueError; outside the limits -> clamped and logged."""
        q, clamped = clamp_joints(q_rad, self.config.limits)
        if clamped:
            self.stats.clamped += 1
            log.warning("joint target %s outside the limits: clamped to %s", tuple(q_rad), q)
        return q

    async def _command(self, ins: Instruction, timeout: float | None = None) -> DexterStatus:
        st = await self.request(ins, timeout=timeout)
        if st.error.base == ERR_BAD_OPLET:
            self.stats.command_errors += 1
            raise DexterCommandError(
                f"robot rejected {ins.oplet} {' '.join(ins.args)} (error 1: unknown oplet or "
                "parameter)"
            )
        return st

    async def _exchange(self, conn: _Conn, ins: Instruction, timeout: float) -> DexterStatus:
        """Write one request and read its 240-byte reply (caller holds the lock)."""
        reader, writer = conn
        self._instruction_id = self._instruction_id % _INT32_MAX + 1
        iid, job = self._instruction_id, self.config.job_id
        data = encode_request(job, iid, ins)
        what = f"{ins.oplet!r} request to {self.host}:{self.port}"
        t0 = time.monotonic()
        self.stats.requests += 1
        try:
            writer.write(data)
            raw = await asyncio.wait_for(_drain_and_read(reader, writer), timeout)
        except asyncio.TimeoutError:
            self.stats.timeouts += 1
            err: BaseException = DexterTimeout(f"no reply to {what} within {timeout:g} s")
            self._fail(conn, err)
            raise err from None
        except asyncio.IncompleteReadError as exc:
            err = DexterConnectionError(
                f"connection closed after {len(exc.partial)} of {REPLY_SIZE} reply bytes ({what})"
            )
            self._fail(conn, err)
            raise err from None
        except OSError as exc:
            err = DexterConnectionError(f"connection lost during {what}: {exc}")
            self._fail(conn, err)
            raise err from exc
        except BaseException:
            self._drop(conn, "request cancelled: the reply would desynchronise the stream")
            raise
        try:
            st = decode_status(raw, self.config.interpolation)
            if (st.job, st.instruction_id, st.oplet) != (job, iid, ins.oplet):
                raise ReplyMismatch(
                    f"reply echoes job {st.job} instruction {st.instruction_id} oplet "
                    f"{st.oplet!r}, expected {job} {iid} {ins.oplet!r}"
                )
        except ProtocolError as exc:
            self.stats.protocol_errors += 1
            self._fail(conn, exc)
            raise
        now = time.monotonic()
        self.stats.replies += 1
        self.stats.last_rtt_s = now - t0
        self._last_exchange = now
        self.latest = st
        for cb in list(self._listeners):
            try:
                cb(st)
            except Exception:
                log.exception("status listener %r failed", cb)
        return st

    def _fail(self, conn: _Conn, exc: BaseException) -> None:
        self.last_error = exc
        if self._conn is conn and self.connected:  # a live connection broke: worth a warning
            log.warning("%s: reconnecting", _describe(exc))
        self._drop(conn, str(exc))

    def _drop(self, conn: _Conn, reason: str) -> None:
        """Close ``conn``; if it was the live one, let the supervisor reconnect."""
        conn[1].close()
        if self._conn is conn:
            log.debug("dropping connection to %s:%s: %s", self.host, self.port, reason)
            was_up = self.connected
            self._conn = None
            self._connected.clear()
            self._lost.set()
            if was_up:
                self._notify_link(False)

    async def _supervise(self) -> None:
        """Connect, verify with a `g`, wait for loss, back off, repeat."""
        backoff = self.config.reconnect_min_s
        while not self._stopping:
            self._lost.clear()
            try:
                await self._connect_once()
            except (OSError, asyncio.TimeoutError, DexterError, ProtocolError) as exc:
                self.stats.connect_failures += 1
                if not isinstance(exc, (DexterError, ProtocolError)):
                    self.last_error = exc  # the others were recorded by _fail
                log.info("connect to %s:%s failed: %s", self.host, self.port, _describe(exc))
            else:
                backoff = self.config.reconnect_min_s
                await self._lost.wait()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2.0, self.config.reconnect_max_s)

    async def _connect_once(self) -> None:
        c = self.config
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), c.timeout_s
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = (reader, writer)
        async with self._lock:
            self._conn = conn
            try:
                await self._exchange(conn, Instruction.status(), c.timeout_s)
            except BaseException:
                self._drop(conn, "handshake failed")
                raise
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self._a_base = None  # the robot may have restarted: re-establish before the next `P`
        self._forces_sent = [None] * JOINT_COUNT  # ... and resend every force
        self._connected.set()
        log.info("connected to Dexter at %s:%s", self.host, self.port)
        self._notify_link(True)

    async def _keepalive(self) -> None:
        """Poll `g` at ``poll_hz`` (deadline-paced), else a `g` after ``heartbeat_s`` of silence."""
        c = self.config
        period = 1.0 / c.poll_hz if c.poll_hz > 0 else None
        deadline = time.monotonic()
        while not self._stopping:
            if not self.connected:
                await self._connected.wait()
                deadline = time.monotonic()
            now = time.monotonic()
            if period is not None or now - self._last_exchange >= c.heartbeat_s:
                with contextlib.suppress(DexterError, ProtocolError):
                    await self.status()
            now = time.monotonic()
            if period is not None:
                deadline = max(deadline + period, now)
            else:
                deadline = max(self._last_exchange + c.heartbeat_s, now + 0.01)
            await asyncio.sleep(deadline - now)


async def _drain_and_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    await writer.drain()
    return await reader.readexactly(REPLY_SIZE)


def _instruction(instruction: Instruction | str, args: tuple[object, ...]) -> Instruction:
    if isinstance(instruction, Instruction):
        if args:
            raise TypeError("extra arguments given with an Instruction")
        return instruction
    return Instruction(instruction, tuple(format_arg(a) for a in args))


def _on_wire(q: Sequence[float]) -> tuple[float, ...]:
    """Joint angles as the robot holds them (whole arcseconds), so offsets add up exactly."""
    return tuple(arcsec_to_rad(rad_to_arcsec(v)) for v in q)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
