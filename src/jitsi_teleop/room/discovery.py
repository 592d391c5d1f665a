"""Find a Jitsi deployment's XMPP settings from a meeting URL (its ``config.js``).

``config.js`` is JavaScript, not JSON, written in two common styles: Debian's object literal
(``hosts: { domain: '...', muc: 'conference.' + subdomain + '...' }``) and docker's
assignments (``config.hosts.muc = 'muc.' + subdomain + 'meet.jitsi';``), both with nginx SSI
(``<!--# echo var="subdir" -->``) that is expanded when served and raw when read from disk.
We read only the few keys we need, evaluating string concatenations with ``subdir`` and
``subdomain`` set for the meeting's tenant; anything cleverer is ignored, and every value can
be given explicitly instead.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from .config import RoomConfig

_SSI = re.compile(r"<!--#.*?-->", re.S)
_KEYS = ("domain", "muc", "focus", "anonymousdomain", "authdomain", "bosh", "websocket")


class DiscoveryError(Exception):
    """The meeting URL or the deployment's config.js could not be used."""


@dataclass(frozen=True)
class JitsiSettings:
    """What a client needs to join; ``websocket_guessed`` when config.js did not say.

    With both URLs the client tries the WebSocket first and falls back to BOSH;
    ``transport_reason`` says why these URLs (for ``doctor``)."""

    web_url: str
    room: str
    domain: str
    muc_domain: str
    focus: str
    websocket_url: str | None
    bosh_url: str | None
    anonymous_domain: str | None = None
    websocket_guessed: bool = False
    transport_reason: str = ""

    def room_config(self, **overrides: Any) -> RoomConfig:
        """A RoomConfig for this deployment; keyword arguments override any field."""
        base: dict[str, Any] = dict(
            room=self.room,
            domain=self.anonymous_domain or self.domain,
            muc_domain=self.muc_domain,
            websocket_url=self.websocket_url,
            bosh_url=self.bosh_url,
            focus=self.focus,
        )
        base.update(overrides)
        if base.get("tcp_host"):
            base["websocket_url"] = base["bosh_url"] = None
        return RoomConfig(**base)


@dataclass(frozen=True)
class MeetingUrl:
    base: str  # https://host/[tenant/]
    room: str
    tenant: str  # "" or "tenant"


def parse_meeting_url(url: str) -> MeetingUrl:
    """``https://meet.example.org/[tenant/]MyRoom`` -> base URL, room name, tenant."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (urllib checks the port only when asked)
    except ValueError as e:  # e.g. "Invalid IPv6 URL" for an unbalanced '['
        raise DiscoveryError(f"not a meeting URL ({e}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DiscoveryError(f"not a meeting URL (http/https): {url!r}")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise DiscoveryError(f"meeting URL has no room name: {url!r}")
    room = segments[-1]
    tenant = "/".join(segments[:-1])
    base = f"{parts.scheme}://{parts.netloc}/" + (tenant + "/" if tenant else "")
    return MeetingUrl(base=base, room=room, tenant=tenant)


def _strip_comments(text: str) -> str:
    """Remove // and /* */ comments, leaving string literals (URLs contain //) intact."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


_TOKEN = re.compile(
    r"""\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|`((?:[^`\\]|\\.)*)`"""
    r"""|([A-Za-z_$][\w$]*)|(\+))"""
)


def _eval_concat(text: str, pos: int, variables: dict[str, str]) -> str | None:
    """Evaluate ``'a' + var + "b"`` starting at ``pos``; None if it is anything else."""
    parts: list[str] = []
    expect_operand = True
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            break
        single, double, backtick, ident, plus = m.groups()
        if plus:
            if expect_operand:
                return None
            expect_operand = True
        else:
            if not expect_operand:
                break
            if ident is not None:
                if ident not in variables:
                    return None
                parts.append(variables[ident])
            elif backtick is not None:
                parts.append(
                    re.sub(r"\$\{\s*(\w+)\s*\}", lambda v: variables.get(v.group(1), ""), backtick)
                )
            else:
                parts.append(single if single is not None else double)
            expect_operand = False
        pos = m.end()
    if expect_operand or not re.match(r"[ \t]*(?:[,;})\r\n]|$)", text[pos:]):
        return None  # not a plain string expression (a call, a ternary, ...)
    return "".join(parts)


def parse_config_js(text: str, tenant: str = "") -> dict[str, str]:
    """Pure parser: the values of domain, muc, focus, anonymousdomain, authdomain, bosh and
    websocket that config.js sets (commented-out settings are ignored)."""
    variables = {
        "subdir": f"{tenant}/" if tenant else "",
        "subdomain": f"{tenant.replace('/', '_').replace('.', '_').lower()}." if tenant else "",
    }
    src = _strip_comments(_SSI.sub("", text))
    found: dict[str, str] = {}
    for key in _KEYS:
        prefix = (
            r"(?:config\s*\.\s*)?(?:hosts\s*\.\s*)?"
            if key not in ("bosh", "websocket")
            else r"(?:config\s*\.\s*)?"
        )
        pattern = re.compile(r"(?:^|(?<=[\s{,;(]))" + prefix + key + r"""\s*(?::|=(?!=))""")
        for m in pattern.finditer(src):
            value = _eval_concat(src, m.end(), variables)
            if value is not None:
                found[key] = value
                break
    return found


def _absolute(url: str, base: str, websocket: bool) -> str:
    scheme = urlsplit(base).scheme
    if url.startswith("//"):
        if websocket:
            return ("wss:" if scheme == "https" else "ws:") + url
        return f"{scheme}:{url}"
    if "://" not in url:
        url = urljoin(base, url)
        if websocket:
            url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return url


def settings_from_config_js(meeting_url: str, text: str) -> JitsiSettings:
    """Combine a meeting URL and its config.js text into JitsiSettings (pure)."""
    meeting = parse_meeting_url(meeting_url)
    values = parse_config_js(text, meeting.tenant)
    domain = values.get("domain") or ""
    if not domain:
        raise DiscoveryError("config.js does not set hosts.domain")
    try:
        return _settings(meeting, values, domain)
    except ValueError as e:  # a URL in config.js that urllib refuses
        raise DiscoveryError(f"config.js: {e}") from None


def _settings(meeting: MeetingUrl, values: dict[str, str], domain: str) -> JitsiSettings:
    host = urlsplit(meeting.base).hostname or ""
    muc = values.get("muc") or f"conference.{domain}"
    focus = values.get("focus") or f"focus.{domain}"
    ws = values.get("websocket")
    guessed = False
    if ws:
        ws = _absolute(ws, meeting.base, websocket=True)
    else:
        ws = _absolute("xmpp-websocket", meeting.base, websocket=True)
        guessed = True
    bosh = values.get("bosh")
    if bosh:
        bosh = _absolute(bosh, meeting.base, websocket=False)
        reason = "config.js sets " + (
            "websocket, and bosh as fallback"
            if not guessed
            else ("bosh but no websocket: trying the usual WebSocket path first, BOSH if it fails")
        )
    else:
        # every Jitsi deployment serves /http-bind next to /xmpp-websocket
        bosh = _absolute("http-bind", meeting.base, websocket=False)
        reason = "config.js sets " + ("websocket" if not guessed else "neither websocket nor bosh")
        reason += "; BOSH at the usual path as fallback"
    return JitsiSettings(
        web_url=meeting.base,
        room=meeting.room.lower(),
        domain=domain,
        muc_domain=muc.lower(),
        focus=focus,
        websocket_url=ws,
        bosh_url=bosh,
        anonymous_domain=values.get("anonymousdomain") or None,
        websocket_guessed=guessed or not host,
        transport_reason=reason,
    )


async def fetch_config_js(
    meeting_url: str, *, insecure: bool = False, timeout: float = 10.0
) -> str:
    """GET ``<base>/config.js`` for a meeting URL (TLS verified unless ``insecure``)."""
    import aiohttp

    meeting = parse_meeting_url(meeting_url)
    url = urljoin(meeting.base, "config.js")
    ctx: ssl.SSLContext | bool = ssl.create_default_context()
    if insecure:
        ctx = False
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
            s.get(url, ssl=ctx if url.startswith("https:") else None) as resp,
        ):
            if resp.status != 200:
                raise DiscoveryError(f"GET {url}: HTTP {resp.status}")
            return await resp.text()
    except aiohttp.ClientConnectorCertificateError as e:
        raise DiscoveryError(f"GET {url}: TLS certificate verification failed") from e
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
        raise DiscoveryError(f"GET {url}: {e or type(e).__name__}") from e


async def discover(
    meeting_url: str, *, insecure: bool = False, timeout: float = 10.0, **explicit: str | None
) -> JitsiSettings:
    """Fetch and parse config.js; ``explicit`` values (domain, muc_domain, focus,
    websocket_url, bosh_url) replace what was found. An explicit ``bosh_url`` without an
    explicit ``websocket_url`` forces BOSH."""
    text = await fetch_config_js(meeting_url, insecure=insecure, timeout=timeout)
    settings = settings_from_config_js(meeting_url, text)
    overrides: dict[str, Any] = {k: v for k, v in explicit.items() if v}
    if overrides.get("bosh_url") and not overrides.get("websocket_url"):
        overrides.update(websocket_url=None, transport_reason="bosh_url given: BOSH forced")
    elif overrides.get("websocket_url"):
        overrides["transport_reason"] = "websocket_url given" + (
            ", BOSH as fallback" if overrides.get("bosh_url") or settings.bosh_url else ""
        )
    return replace(settings, **overrides) if overrides else settings
