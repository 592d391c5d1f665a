"""The meeting server's side of the simulated internet: Prosody and coturn in one namespace.

Configured the way a Jitsi deployment is: Prosody announces STUN and TURN over XEP-0215 with
time-limited TURN REST credentials (user name ``<expiry>``, password ``base64(HMAC-SHA1(secret,
user name))``, Prosody's ``mod_external_services``, Jitsi's ``turncredentials_secret``), and coturn
checks them with the same shared secret (``use-auth-secret``). coturn is Debian's package.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..local_prosody import ProsodyServer
from . import netns
from .internet import SERVER_IP
from .netns import Netns

TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
TURN_PORT = 3478


def coturn_available() -> str | None:
    return None if Path(TURNSERVER).exists() else "coturn is not installed (apt-get install coturn)"


@dataclass
class Coturn:
    """One turnserver process inside ``ns``, listening and relaying on ``ip``."""

    ns: Netns
    secret: str
    realm: str = "meet.test"
    ip: str = SERVER_IP
    port: int = TURN_PORT
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="coturn-")))
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "turn.log"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            TURNSERVER, "-n", "--no-cli", "--no-tls", "--no-dtls",
            "--listening-ip", self.ip, "--relay-ip", self.ip, "--listening-port", str(self.port),
            "--use-auth-secret", "--static-auth-secret", self.secret, "--realm", self.realm,
            "--fingerprint", "--no-multicast-peers", "--min-port", "49152", "--max-port", "65535",
            "--pidfile", str(self.root / "turn.pid"), "--userdb", str(self.root / "turn.db"),
            "--log-file", "stdout", "--simple-log", "--verbose",
        ]  # fmt: skip
        self._log = self.log_path.open("ab")
        self.proc = self.ns.popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.tail()}")
            if f"{self.ip}:{self.port} " in self.ns.run("ss", "-Hlun", check=False):
                return
            time.sleep(0.05)
        raise RuntimeError(f"turnserver did not listen in time: {self.tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            netns._stop(proc)
            self._log.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-n:])


@dataclass
class Servers:
    """Prosody (WebSocket on :attr:`websocket_url`) and, unless ``turn`` is False, coturn.

    With ``turn=False`` Prosody still announces the TURN server (a deployment whose relay is
    down): clients must cope with a TURN server that does not answer.
    """

    ns: Netns
    turn: bool = True
    secret: str = field(default_factory=lambda: __import__("secrets").token_hex(16))
    prosody: ProsodyServer | None = None
    coturn: Coturn | None = None

    def start(self) -> Servers:
        try:
            self.prosody = ProsodyServer(
                bind=SERVER_IP,
                turn_host=SERVER_IP,
                turn_port=TURN_PORT,
                turn_secret=self.secret,
                launcher=self.ns.argv([]),
            )
            self.prosody.start()
            if self.turn:
                self.coturn = Coturn(self.ns, self.secret, realm=self.prosody.domain)
                self.coturn.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.coturn is not None:
            self.coturn.cleanup()
        if self.prosody is not None:
            with contextlib.suppress(Exception):
                self.prosody.cleanup()

    @property
    def websocket_url(self) -> str:
        assert self.prosody is not None
        return self.prosody.websocket_url

    def room_settings(self, room: str) -> dict[str, object]:
        """RoomConfig fields for a site in this internet (anonymous, WebSocket)."""
        assert self.prosody is not None
        return {
            "room": room,
            "domain": self.prosody.domain,
            "muc_domain": self.prosody.muc_domain,
            "websocket_url": self.websocket_url,
        }
