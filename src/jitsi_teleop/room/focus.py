"""Jicofo's ``conference`` IQ: ask the focus to create/own the room before joining.

On a Jitsi deployment only Jicofo may create rooms (``restrict_room_creation``), and joins
before the focus is in the room are held back; so we ask ``focus.<domain>`` and retry while it
answers ``ready="false"``, like lib-jitsi-meet (1 s doubling).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from slixmpp.exceptions import IqError, IqTimeout

from .config import FocusError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FocusReply:
    ready: bool
    focus_jid: str | None
    session_id: str | None
    properties: dict[str, str] = field(default_factory=dict)
    vnode: str | None = None


async def request_conference(
    xmpp,
    focus_jid: str,
    room_jid: str,
    *,
    token: str | None = None,
    machine_uid: str | None = None,
    timeout: float = 30.0,
    iq_timeout: float = 5.0,
    retry_initial: float = 1.0,
    retry_max: float = 8.0,
) -> FocusReply:
    """Send the conference IQ until the focus says ready; FocusError on refusal or timeout."""
    deadline = time.monotonic() + timeout
    delay = retry_initial
    machine_uid = machine_uid or secrets.token_hex(16)
    session_id: str | None = None
    last = "no answer"
    while True:
        iq = xmpp.make_iq_set(ito=focus_jid)
        conf = iq["focus_conference"]
        conf["room"] = room_jid
        conf["machine-uid"] = machine_uid
        if token:
            conf["token"] = token
        if session_id:
            conf["session-id"] = session_id
        conf.add_property("rtcstatsEnabled", "false")
        conf.add_property("visitors-version", "1")
        try:
            reply = await iq.send(timeout=min(iq_timeout, max(0.5, deadline - time.monotonic())))
        except IqError as e:
            cond = e.iq["error"]["condition"]
            text = e.iq["error"]["text"]
            raise FocusError(f"focus refused the conference: {cond} {text}".strip(), cond) from e
        except IqTimeout:
            last = "focus did not answer"
        else:
            conf = reply["focus_conference"]
            session_id = conf["session-id"] or session_id
            result = FocusReply(
                ready=conf["ready"] == "true",
                focus_jid=conf["focusjid"] or None,
                session_id=session_id,
                properties=conf.property_dict(),
                vnode=conf["vnode"] or None,
            )
            if result.ready:
                return result
            last = "focus not ready"
        if time.monotonic() + delay > deadline:
            raise FocusError(f"{last} within {timeout:g} s")
        log.debug("%s, retrying in %.1f s", last, delay)
        await asyncio.sleep(delay)
        delay = min(retry_max, delay * 2)
