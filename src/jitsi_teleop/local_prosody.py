"""A throwaway, Jitsi-like Prosody: loopback only, own temp dir, free ports.

Used by the tests, the demo (``jitsi-teleop demo``) and the two-site launch file, which all need
a room server on this machine and nothing reachable from elsewhere.

It mirrors what a stock Jitsi deployment's Prosody offers a client (anonymous virtual host,
MUC component, WebSocket, BOSH, stream management, ping, XEP-0215 external services with a TURN
REST secret, mod_limits at 10 kB/s), minus Jicofo and the videobridge. Room creation is allowed
because there is no Jicofo to create rooms. An external component port lets tests run a fake
focus (``focus.<domain>``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
PROSODYCTL = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prosody_available() -> bool:
    return os.path.exists(PROSODY)


@dataclass
class ProsodyServer:
    """One Prosody process. Ports are chosen once and kept across restarts."""

    domain: str = "meet.test"
    limits: bool = True
    c2s_rate: str = "10kb/s"
    turn_secret: str = "turn-rest-secret"
    component_secret: str = "focus-secret"
    log_level: str = "info"
    nagle: bool = True  # Prosody's default; False sets TCP_NODELAY on its sockets
    restrict_room_creation: bool | str = False  # True like Jitsi (only admins, i.e. Jicofo)
    #: the main host's login: "anonymous" (stock Jitsi) or "internal_hashed" (a Jitsi
    #: "secure domain", or a plain XMPP server with accounts: see :meth:`register`)
    authentication: str = "anonymous"
    #: an anonymous host next to the main one, as a secure-domain Jitsi has for guests
    #: (``hosts.anonymousdomain`` in config.js); rooms stay on ``conference.<domain>``
    guest_domain: str | None = None
    #: SASL mechanisms the server must not offer (tests: a server with PLAIN only)
    disable_sasl: tuple[str, ...] = ()
    #: offer PLAIN on unencrypted connections (a badly configured server; tests only)
    allow_plain_in_clear: bool = False
    #: False: no MUC component at all (a chat service with accounts but no rooms)
    muc: bool = True
    tls: bool = False  # self-signed certificate: STARTTLS on c2s and an https/wss port
    https_port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prosody-")))
    c2s_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    component_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    #: address Prosody listens on; anything but loopback only inside a network namespace
    #: (``launcher`` runs it there, see jitsi_teleop.netlab.servers)
    bind: str = "127.0.0.1"
    #: the STUN/TURN server announced over XEP-0215 (credentials: HMAC of ``turn_secret``,
    #: coturn's ``use-auth-secret``, as Jitsi deployments configure it)
    turn_host: str = "127.0.0.1"
    turn_port: int = 3478
    turn_ttl: int = 86400
    #: argv prefix that starts Prosody elsewhere, e.g. ``ip netns exec NAME``
    launcher: list[str] = field(default_factory=list)

    @property
    def muc_domain(self) -> str:
        return f"conference.{self.domain}"

    @property
    def focus_domain(self) -> str:
        return f"focus.{self.domain}"

    @property
    def websocket_url(self) -> str:
        return f"ws://{self.bind}:{self.http_port}/xmpp-websocket"

    @property
    def bosh_url(self) -> str:
        return f"http://{self.bind}:{self.http_port}/http-bind"

    @property
    def secure_websocket_url(self) -> str:
        return f"wss://{self.bind}:{self.https_port}/xmpp-websocket"

    @property
    def cert_path(self) -> Path:
        return self.root / "cert.pem"

    @property
    def log_path(self) -> Path:
        return self.root / "prosody.log"

    def config_text(self) -> str:
        limits = (
            f'limits = {{ c2s = {{ rate = "{self.c2s_rate}"; burst = "2s" }} }}'
            if self.limits
            else ""
        )
        modules = [
            '"disco"',
            '"saslauth"',
            '"ping"',
            '"bosh"',
            '"websocket"',
            '"smacks"',
            '"external_services"',
            '"tls"',
        ]
        if self.limits:
            modules.append('"limits"')
        run_as_root = "run_as_root = true" if os.geteuid() == 0 else ""
        if self.tls:
            ssl = f'{{ certificate = "{self.cert_path}"; key = "{self.root}/key.pem" }}'
            tls_lines = f"https_ports = {{ {self.https_port} }}\nhttps_ssl = {ssl}\nssl = {ssl}"
            disabled = '"s2s", "offline", "register"'
        else:
            tls_lines = "https_ports = { }"
            disabled = '"s2s", "offline", "register", "tls"'
            modules = [m for m in modules if m != '"tls"']
        return f"""-- generated by jitsi_teleop.local_prosody
{run_as_root}
daemonize = false
{"" if self.nagle else "network_settings = { nagle = false }"}
pidfile = "{self.root}/prosody.pid"
data_path = "{self.root}/data"
log = {{ {{ levels = {{ min = "{self.log_level}" }}, to = "file", filename = "{self.log_path}" }} }}
interfaces = {{ "{self.bind}" }}
local_interfaces = {{ "{self.bind}" }}
c2s_interfaces = {{ "{self.bind}" }}
http_interfaces = {{ "{self.bind}" }}
https_interfaces = {{ "{self.bind}" }}
component_interfaces = {{ "{self.bind}" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
http_ports = {{ {self.http_port} }}
{tls_lines}
component_ports = {{ {self.component_port} }}
s2s_ports = {{ }}
modules_enabled = {{ {", ".join(modules)} }}
modules_disabled = {{ {disabled} }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = {"true" if self.allow_plain_in_clear else "false"}
{self._sasl_line()}
consider_websocket_secure = true
consider_bosh_secure = true
cross_domain_websocket = true
http_default_host = "{self.domain}"
smacks_hibernation_time = 60
smacks_max_unacked_stanzas = 5
smacks_max_old_sessions = 1
{limits}
external_service_secret = "{self.turn_secret}"
external_service_ttl = {self.turn_ttl}
external_services = {{
  {{ type = "stun", transport = "udp", host = "{self.turn_host}", port = {self.turn_port} }};
  {{ type = "turn", transport = "udp", host = "{self.turn_host}", port = {self.turn_port},
     secret = true, algorithm = "turn" }};
  {{ type = "turns", transport = "tcp", host = "{self.turn_host}", port = 5349, secret = true,
     algorithm = "turn" }};
}}

VirtualHost "{self.domain}"
  authentication = "{self.authentication}"
{self._guest_host()}
{self._muc_component()}
Component "{self.focus_domain}"
  component_secret = "{self.component_secret}"
"""

    def _restrict(self) -> str:
        r = self.restrict_room_creation
        return f'"{r}"' if isinstance(r, str) else ("true" if r else "false")

    def _sasl_line(self) -> str:
        if not self.disable_sasl:
            return ""
        names = ", ".join(f'"{m}"' for m in self.disable_sasl)
        return f"disable_sasl_mechanisms = {{ {names} }}"

    def _muc_component(self) -> str:
        if not self.muc:
            return ""
        return (
            f'Component "{self.muc_domain}" "muc"\n'
            f"  restrict_room_creation = {self._restrict()}\n"
            "  muc_room_locking = false\n"
            "  muc_room_default_public_jids = true\n"
            "  muc_tombstones = false\n"
        )

    def _guest_host(self) -> str:
        if not self.guest_domain:
            return ""
        return f'VirtualHost "{self.guest_domain}"\n  authentication = "anonymous"\n'

    def register(self, user: str, password: str) -> str:
        """Create the account ``user@domain`` with ``prosodyctl`` (works while the server runs;
        internal_hashed stores only SCRAM keys). Returns the bare JID."""
        cfg = self.root / "prosody.cfg.lua"
        if not cfg.exists():
            self.write_config()
        env = dict(os.environ, PROSODY_CONFIG=str(cfg))
        done = subprocess.run(
            [PROSODYCTL, "--config", str(cfg), "register", user, self.domain, password],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"prosodyctl register {user}: {done.stdout} {done.stderr}")
        return f"{user}@{self.domain}"

    def write_config(self) -> Path:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        if self.tls and not self.cert_path.exists():
            self._make_certificate()
        path = self.root / "prosody.cfg.lua"
        path.write_text(self.config_text())
        return path

    def _make_certificate(self) -> None:
        """A self-signed certificate for the domain, localhost and 127.0.0.1."""
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.domain)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(self.domain),
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.root / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )

    def start(self, timeout: float = 15.0) -> None:
        cfg = self.write_config()
        env = dict(os.environ)
        env["PROSODY_CONFIG"] = str(cfg)
        self._log_handle = open(self.root / "stdout.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.launcher, PROSODY, "--config", str(cfg), "-F"],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited: {self.tail()}")
            ports = [self.c2s_port, self.http_port, self.component_port]
            if self.tls:
                ports.append(self.https_port)
            if self._all_listening(ports):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prosody did not listen in time: {self.tail()}")

    def _all_listening(self, ports: list[int]) -> bool:
        if not self.launcher:
            return all(_listening(p, self.bind) for p in ports)
        out = subprocess.run([*self.launcher, "ss", "-Hltn"], capture_output=True, text=True)
        return all(f"{self.bind}:{p} " in out.stdout for p in ports)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._log_handle.close()

    def restart(self) -> None:
        """Stop and start on the same ports; all sessions and rooms are lost."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, n: int = 30) -> str:
        text = ""
        for name in ("stdout.log", "prosody.log"):
            p = self.root / name
            if p.exists():
                text += "\n".join(p.read_text(errors="replace").splitlines()[-n:]) + "\n"
        return text

    def __enter__(self) -> ProsodyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0
