"""Parent ↔ child process plumbing: one JSON object per line, stdin down, stdout up.

Used by the demo (one process per site) and ``jitsi-teleop bench`` (one per end). Why
processes: each end runs its own event loop (simulator physics, robot client, controller,
WebRTC session); on a two-core machine one Python process doing both ends starves, and
measurements of one end would include the other's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["ChildProcess", "ParentLink", "SiteFailed", "run_child"]

log = logging.getLogger(__name__)
C = TypeVar("C")


class SiteFailed(Exception):
    """A child process reported an error, exited early, or its parent went away."""


class ParentLink:
    """Child side: ``say`` writes a line to stdout; ``inbox`` gets the parent's lines."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._pump = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            with contextlib.suppress(ValueError):
                await self.inbox.put(json.loads(line))
        await self.inbox.put({"eof": True})

    @staticmethod
    def say(**msg: Any) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def expect(self, key: str) -> Any:
        while True:
            msg = await self.inbox.get()
            if key in msg:
                return msg[key]
            if "eof" in msg:
                raise SiteFailed("the parent went away")


async def run_child(
    config_type: Callable[..., C], run: Callable[[C, ParentLink], Awaitable[object]], what: str
) -> int:
    """A child's whole life: its config from the parent's first ``config`` line, then ``run``;
    a failure reaches the parent as one ``error`` line (details on stderr) and exit status 1."""
    link = ParentLink()
    await link.start()
    cfg = config_type(**await link.expect("config"))
    try:
        await run(cfg, link)
    except Exception as exc:
        log.exception("%s %s failed", what, getattr(cfg, "role", ""))
        link.say(error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


class ChildProcess:
    """Parent side of one site process: ``tell`` a line, ``get`` the next message."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._stderr = b""
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._errs())]

    @classmethod
    async def spawn(cls, name: str, *argv: str) -> ChildProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(name, proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                await self.messages.put(json.loads(line))
        await self.proc.wait()
        await self.messages.put({"eof": True})

    async def _errs(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            self._stderr = (self._stderr + chunk)[-8000:]

    def stderr_tail(self, lines: int = 5) -> str:
        text = self._stderr.decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def tell(self, **msg: Any) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def get(self) -> dict[str, Any]:
        """The next message; raises :class:`SiteFailed` on ``error`` or an early exit."""
        msg = await self.messages.get()
        if "error" in msg:
            raise SiteFailed(f"{self.name}: {msg['error']}")
        if "eof" in msg:
            await asyncio.sleep(0.2)  # let the stderr reader catch the last words
            why = self.stderr_tail() or f"exit status {self.proc.returncode}"
            raise SiteFailed(f"{self.name} process exited early: {why}")
        return msg

    async def expect(self, key: str, timeout: float) -> Any:
        """Skip messages until one with ``key`` (statuses in between are dropped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                msg = await asyncio.wait_for(self.get(), max(left, 0.01))
            except asyncio.TimeoutError:
                raise SiteFailed(f"{self.name}: no {key!r} within {timeout:g} s") from None
            if key in msg:
                return msg[key]

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for t in self._tasks:
            t.cancel()
