"""Logging in with an XMPP account (JID + password) instead of anonymously.

Why: Jitsi "secure domain" deployments let only registered users create a room (Prosody
``authentication = "internal_hashed"`` on the main domain, guests anonymous on a guest domain),
and ordinary XMPP servers have no anonymous login at all. The password is read from a file or
the environment, never from a ROS parameter (``ros2 param dump`` would print it).

The SASL policy is ours, not slixmpp's defaults: SCRAM-SHA-1/256 (the password never crosses
the wire) on any connection, PLAIN only inside TLS, and a clear error when the server offers
nothing else than PLAIN on a cleartext connection.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from slixmpp import JID
from slixmpp.jid import InvalidJID

ENV_JID = "JITSI_TELEOP_JID"
ENV_PASSWORD = "JITSI_TELEOP_XMPP_PASSWORD"
ENV_PASSWORD_FILE = "JITSI_TELEOP_XMPP_PASSWORD_FILE"

#: what we may use; PLAIN only when the stream is encrypted (see :func:`security_settings`)
ALLOWED_MECHANISMS = frozenset(
    {"SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "PLAIN"}
)


class AccountError(ValueError):
    """The account settings are unusable; the message says which and what to do."""


@dataclass(frozen=True)
class Account:
    """A bare JID and its password (kept out of repr, logs and diagnostics)."""

    jid: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        try:
            j = JID(self.jid)
        except InvalidJID as e:
            raise AccountError(f"invalid account JID {self.jid!r}: {e}") from None
        if not j.user or not j.domain or j.resource:
            raise AccountError(f"account JID must be user@domain (no resource): {self.jid!r}")
        if not self.password:
            raise AccountError(f"empty password for {self.jid}")

    @property
    def domain(self) -> str:
        return JID(self.jid).domain


def load_account(
    jid: str = "",
    password_file: str = "",
    env: Mapping[str, str] | None = None,
) -> Account | None:
    """The account to log in with, or None for an anonymous login.

    JID from the argument else ``$JITSI_TELEOP_JID``; password from ``password_file`` (first
    line), else the file named by ``$JITSI_TELEOP_XMPP_PASSWORD_FILE``, else
    ``$JITSI_TELEOP_XMPP_PASSWORD``.
    """
    env = os.environ if env is None else env
    jid = jid or env.get(ENV_JID, "")
    path = password_file or env.get(ENV_PASSWORD_FILE, "")
    if not jid:
        if path:
            raise AccountError("a password file was given but no account JID (jid)")
        return None
    if path:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise AccountError(f"password file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise AccountError(f"password file {path}: not UTF-8 text") from None
        if not password:
            raise AccountError(f"password file {path} is empty")
    else:
        password = env.get(ENV_PASSWORD, "")
        if not password:
            raise AccountError(
                f"no password for {jid}: give password_file, or ${ENV_PASSWORD_FILE}, "
                f"or ${ENV_PASSWORD}"
            )
    return Account(jid, password)


def stream_encrypted(xmpp: object, url: str | None) -> bool:
    """True when the bytes of the stream are inside TLS: STARTTLS/direct TLS on TCP, or a
    ``wss://`` WebSocket / ``https://`` BOSH URL (``url``: the stream's URL, None on TCP)."""
    if url is not None:
        return url.startswith(("wss://", "https://"))
    sock = getattr(xmpp, "socket", None)
    return isinstance(sock, (ssl.SSLSocket, ssl.SSLObject)) or "starttls" in getattr(
        xmpp, "features", ()
    )


def security_settings(values: Iterable[str], encrypted: bool) -> dict[str, object]:
    """slixmpp's SASL security callback: SCRAM anywhere, PLAIN only with TLS."""
    out: dict[str, object] = {}
    for v in values:
        if v == "encrypted":
            out[v] = encrypted
        elif v in ("encrypted_plain", "unencrypted_scram"):
            out[v] = True
        elif v == "binding_proposed":
            out[v] = False
        else:  # unencrypted_plain, unencrypted_digest, unencrypted_cram, tls_version
            out[v] = False if v.startswith("unencrypted") else None
    return out


def no_mechanism_reason(offered: Iterable[str], encrypted: bool, jid: str) -> str:
    """One line saying why no login method was usable."""
    offered = set(offered)
    usable = offered & ALLOWED_MECHANISMS
    if usable == {"PLAIN"} and not encrypted:
        return (
            f"login as {jid} refused by us: the server offers only PLAIN on a connection "
            "without TLS, which would send the password in the clear (use STARTTLS or wss://)"
        )
    if not usable:
        names = ", ".join(sorted(offered)) or "none"
        return f"login as {jid}: the server offers no SCRAM or PLAIN (offered: {names})"
    return f"login as {jid}: no usable login method among {', '.join(sorted(offered))}"


def failure_reason(condition: str, text: str, jid: str) -> str:
    """One line for a SASL <failure/>."""
    what = {
        "not-authorized": "wrong password or unknown account",
        "account-disabled": "account disabled",
        "credentials-expired": "password expired",
        "encryption-required": "the server requires encryption for this method",
        "invalid-mechanism": "login method not supported by the server",
        "malformed-request": "malformed login request",
        "temporary-auth-failure": "temporary server failure; try again",
    }.get(condition, condition or "refused")
    line = f"login as {jid} refused: {what}"
    if condition:
        line += f" ({condition})"
    if text:
        line += f": {text}"
    return line
