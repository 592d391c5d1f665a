"""Fuzz targets: every parser that takes bytes from outside, with its documented errors.

Each target is a plain ``fn(data: bytes) -> None`` that feeds ``data`` to one parser the way
the product does and returns quietly when the parser accepts the input or refuses it with one
of its documented errors. Anything else escaping the function is a finding: an undocumented
exception, a broken invariant (an ``AssertionError`` raised here, e.g. a frame that decodes but
does not re-encode to the same bytes), or, judged by the engine, a hang or runaway memory.

The same functions serve the coverage-guided engine (atheris, ``bench/faults.py fuzz``), the
pure-Python fallback engine, and the regression tests (test/test_fuzz_regressions.py), so a
saved crashing input replays exactly. Targets never touch the network or the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from dexter_driver import protocol as dexter
from dexter_driver.sim import DexterSim, SimConfig
from jitsi_teleop import pairing, protect, wire
from jitsi_teleop.bridge import topics
from jitsi_teleop.links.p2p import DescriptionError, P2PDescription
from jitsi_teleop.room import transport_bosh as bosh

FuzzFn = Callable[[bytes], None]


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``parser`` names what is exercised, ``documented`` its refusals."""

    name: str
    parser: str
    fn: FuzzFn
    documented: tuple[str, ...]
    seeds: Callable[[], list[bytes]] = field(default=lambda: [b""])
    #: libFuzzer dictionary: tokens the mutator inserts whole (syntax, edge-case numbers)
    dictionary: tuple[bytes, ...] = ()


def _chunks(data: bytes, limit: int = 16) -> list[bytes]:
    """Split ``data`` into length-prefixed pieces (u16 length each), for multi-message targets."""
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data) and len(out) < limit:
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2
        out.append(data[pos : pos + n])
        pos += n
    if pos < len(data) and len(out) < limit:
        out.append(data[pos:])
    return out


def _join(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">H", len(p)) + p for p in parts)


# ---------------------------------------------------------------------------------------------
# wire: frames, reassembly, descriptors

_SAMPLE_HASH = "RIHS01_" + "ab" * 32


def _frame_seeds() -> list[bytes]:
    f = wire.Frame(3, 7, 123456, b"\x00\x01cdr", wire.Flags.RELIABLE)
    frags = wire.Fragmenter(40).split(wire.Frame(4, 9, 1, b"x" * 50))
    return [wire.encode(f), _join(*(wire.encode(x) for x in frags)), b""]


def fuzz_wire_frame(data: bytes) -> None:
    """wire.decode on each piece; decoded frames must re-encode to the same bytes (canonical:
    the header is the AEAD's associated data) and the reassembler must stay within bounds."""
    r = wire.Reassembler(max_partial=4, max_bytes=4096, max_payload=8192)
    for i, piece in enumerate([data, *_chunks(data)]):
        try:
            frame = wire.decode(piece)
        except wire.WireError:
            continue
        assert wire.encode(frame) == bytes(piece), "decoded frame does not re-encode identically"
        if i == 0:
            continue
        out = r.push(frame, now=i * 0.5)
        assert r.pending <= r.max_partial and r.buffered_bytes >= 0, "reassembler out of bounds"
        if out is not None:
            assert not out.is_fragment


def _descriptor_seeds() -> list[bytes]:
    d = wire.StreamDescriptor(1, "/joint_states", "sensor_msgs/msg/JointState", _SAMPLE_HASH)
    e = wire.StreamDescriptor(2, "/cmd", "std_msgs/msg/String", _SAMPLE_HASH, "reliable", 5, 1.0)
    return [wire.encode_descriptors([d, e]), b'{"v":1,"streams":[]}']


def fuzz_wire_descriptors(data: bytes) -> None:
    """wire.decode_descriptors; what it accepts must survive encode -> decode unchanged."""
    try:
        got = wire.decode_descriptors(data)
    except wire.WireError:
        return
    assert wire.decode_descriptors(wire.encode_descriptors(got)) == sorted(
        got, key=lambda d: d.stream_id
    ), "descriptor set does not round-trip"


# ---------------------------------------------------------------------------------------------
# protect: sealed records

_KEY = bytes(range(32))
_TAG = b"\x01\x02\x03\x04"


def _protect_seeds() -> list[bytes]:
    s = protect.FrameSealer(_KEY, _TAG)
    recs = [s.seal(wire.Frame(1, i, i, b"payload%d" % i)) for i in range(3)]
    return [b"\x00" + recs[0], b"\x01" + _join(b"\x00abc", b"\x01\x00\x05", b"\x02\x00\x00")]


def fuzz_protect_open(data: bytes) -> None:
    """FrameOpener.open on raw records (mode 0), or on a script of genuine records sealed with
    the right key, tampered, replayed and sent out of order (mode 1), so that the replay window
    is reached; only ProtectError may come out, and what opens is what was sealed."""
    opener = protect.FrameOpener(_KEY, _TAG, window=64, max_record=4096)
    if not data:
        return
    if data[0] % 2 == 0:
        with contextlib.suppress(protect.ProtectError):
            opener.open(data[1:])
        return
    sealer = protect.FrameSealer(_KEY, _TAG, max_record=4096)
    sent: list[tuple[bytes, wire.Frame]] = []
    for op in _chunks(data[1:], limit=64):
        if not op:
            continue
        kind, arg = op[0] % 4, op[1:]
        if kind == 0:  # a genuine record; the first byte of arg may jump the counter ahead
            if arg:
                sealer._counter += arg[0] * (1 + (arg[0] > 200) * 1000)
            frame = wire.Frame(len(sent) % 5, len(sent), 0, arg[1:64])
            rec = sealer.seal(frame)
            sent.append((rec, frame))
        elif not sent:
            continue
        else:
            i = (arg[0] if arg else 0) % len(sent)
            rec, frame = sent[i]
            if kind == 2 and len(arg) >= 2:  # tamper one byte
                pos = arg[1] % len(rec)
                rec = (
                    rec[:pos] + bytes([rec[pos] ^ (arg[2] if len(arg) > 2 else 1)]) + rec[pos + 1 :]
                )
            elif kind == 3:  # truncate or extend
                rec = rec[: (arg[1] if len(arg) > 1 else 0)] + arg[2:]
        try:
            got = opener.open(rec)
        except protect.ProtectError:
            continue
        assert any(got == f for r, f in sent if r == rec), "opened a record nobody sealed"
    assert opener.counters.opened <= len(sent), "opened more records than were sealed"


# ---------------------------------------------------------------------------------------------
# pairing


def _secret() -> pairing.Secret:
    return pairing.Secret(bytes(32))


_FP = "sha-256 " + ":".join(["ab"] * 32)


def _pairing_seeds() -> list[bytes]:
    a = pairing.Pairing(_secret(), pairing.Role.LEADER, "room", "alice", [_FP])
    b = pairing.Pairing(_secret(), pairing.Role.FOLLOWER, "room", "bob", [_FP])
    init = a.initiate("bob")
    resp = b.handle(init, "alice").reply
    assert resp is not None
    confirm = a.handle(resp, "bob").reply
    assert confirm is not None
    return [b"\x00" + init, b"\x01" + resp, b"\x02" + confirm, b"\x03" + init[:-32]]


def fuzz_pairing(data: bytes) -> None:
    """pairing.decode_message, then Pairing.handle at a responder and at an initiator that has
    a handshake in flight; mode 3 appends a valid INIT MAC (an insider who holds the secret),
    so the checks behind the MAC are reached. Only HandshakeError may come out."""
    with contextlib.suppress(pairing.MalformedMessage):
        pairing.decode_message(data[1:])
    if not data:
        return
    mode, msg = data[0] % 4, data[1:]
    me = pairing.Pairing(_secret(), pairing.Role.FOLLOWER, "room", "bob", [_FP])
    if mode == 1:
        me.initiate("alice")
    if mode == 3:
        msg = msg + pairing._mac(me._init_key, msg)
    for sender in ("alice", "mallory"):
        with contextlib.suppress(pairing.HandshakeError):
            me.handle(msg, sender)


# ---------------------------------------------------------------------------------------------
# P2P description (signalled over the room as JSON)


def _p2p_seeds() -> list[bytes]:
    d = P2PDescription("uf", "pw+/=", ("127.0.0.1 5000", "::1 6000"), (_FP,), datagram=None)
    dd = P2PDescription(
        "uf", "pw", ("10.0.0.1 1",), (_FP,), 5000, 65536, ("u2", "p2", ("1.2.3.4 9",))
    )
    return [json.dumps(d.to_dict()).encode(), json.dumps(dd.to_dict()).encode()]


def fuzz_p2p_description(data: bytes) -> None:
    """P2PDescription.from_dict on what the room's JSON signal carries; DescriptionError only.
    Inputs that are not JSON are the signal decoder's to refuse (target ``muc_stanza``)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return
    with contextlib.suppress(DescriptionError):
        P2PDescription.from_dict(obj)


# ---------------------------------------------------------------------------------------------
# stanzas: room presence and the slow path's message decoding

_MUC = None


def _muc():
    """One Room (never connected) and one MucLink on a private loop, built on first use."""
    global _MUC
    if _MUC is None:
        from xml.etree import ElementTree as ET

        from slixmpp import Iq, Message, Presence

        from jitsi_teleop.links.muc import MucLink
        from jitsi_teleop.room.config import RoomConfig
        from jitsi_teleop.room.occupants import Occupant, TeleopInfo
        from jitsi_teleop.room.room import Room
        from jitsi_teleop.room.stanzas import register_stanzas

        register_stanzas()
        loop = asyncio.new_event_loop()
        room = Room(
            RoomConfig(room="lab", domain="example.org", tcp_host="127.0.0.1", nick="0000aaaa")
        )
        room._occupants["peer"] = Occupant("peer", teleop=TeleopInfo("follower", "r", "ab12"))
        room._occupants["twin"] = Occupant("twin", teleop=TeleopInfo("follower", "r", "ab12"))

        async def make() -> MucLink:
            link = MucLink(room, "peer", peer_silence=0.0)
            link.set_receive_callback(lambda n, s, p: None)
            link.set_signal_callback(lambda n, o: None)
            return link

        link = loop.run_until_complete(make())
        _MUC = (loop, room, link, ET, Message, Presence, Iq)
    return _MUC


def _stanza_seeds() -> list[bytes]:
    ns = 'xmlns="jabber:client"'
    t = 'xmlns="urn:jitsi-teleop:0"'
    u = 'xmlns="http://jabber.org/protocol/muc#user"'
    return [
        b"\x00" + s
        for s in (
            f'<message {ns} type="chat"><frame {t} s="1" n="2" t="5" k="r" e="ab">AAEC</frame>'
            f'<ack {t} e="00" s="1" n="3"/></message>'.encode(),
            f'<message {ns} type="chat"><signal {t} e="ab" n="1">{{"k":"offer","d":{{}}}}</signal>'
            f"</message>".encode(),
            f'<presence {ns}><x {u}><item jid="a@b/c" role="moderator"/><status code="110"/></x>'
            f'<teleop {t} v="0" role="leader" robot="r" key="ab12"/></presence>'.encode(),
            f'<presence {ns} type="unavailable"><x {u}><status code="333"/></x>'
            "</presence>".encode(),
            f'<iq {ns} type="result"><services xmlns="urn:xmpp:extdisco:2"><service type="turn" '
            f'host="h" port="3478" transport="udp"/></services></iq>'.encode(),
        )
    ]


def fuzz_muc_stanza(data: bytes) -> None:
    """A stanza from a room occupant, as slixmpp hands it over: presence goes through the room's
    occupant parsing, messages through the slow path's frame/signal/ack decoding, IQ results
    through the extdisco, focus and Jingle readers. None of these may raise: bad input is
    counted and dropped. Input that is not XML never becomes a stanza (the stream parser)."""
    loop, room, link, ET, Message, Presence, Iq = _muc()
    from jitsi_teleop.room.extdisco import parse_services

    if not data:
        return
    nick = ("peer", "twin", "stranger", "0000aaaa")[data[0] % 4]
    try:
        xml = ET.fromstring(data[1:])
    except (ET.ParseError, ValueError):
        return
    tag = xml.tag.split("}")[-1]

    async def feed() -> None:
        if tag == "presence":
            pres = Presence(xml=xml)
            pres["from"] = f"{room.room_jid}/{nick}"
            room._on_room_presence(pres)
        elif tag == "message":
            msg = Message(xml=xml)
            msg["from"] = f"{room.room_jid}/{nick}"
            link._on_message(nick, msg)
        elif tag == "iq":
            iq = Iq(xml=xml)
            parse_services(iq)
            iq["focus_conference"].property_dict()
            str(iq["jingle"]["reason"]["condition"])
        await asyncio.sleep(0)

    loop.run_until_complete(feed())
    # keep the room's state from growing across inputs
    for n in list(room._occupants):
        if n not in ("peer", "twin"):
            del room._occupants[n]


# ---------------------------------------------------------------------------------------------
# BOSH


def _bosh_seeds() -> list[bytes]:
    ns = "http://jabber.org/protocol/httpbind"
    return [
        f"<body xmlns='{ns}' sid='s1' wait='60' hold='1' requests='2' inactivity='30'/>".encode(),
        f"<body xmlns='{ns}'><message xmlns='jabber:client'/></body>".encode(),
        f"<?xml version='1.0'?><body xmlns='{ns}' type='terminate' condition='x'/>".encode(),
    ]


def fuzz_bosh_body(data: bytes) -> None:
    """transport_bosh.parse_body on a response (decoded as the transport does), then the session
    parameters when it carries a sid, as session creation reads them; BoshError only."""
    text = data.decode("utf-8", errors="replace")
    try:
        resp = bosh.parse_body(text)
    except bosh.BoshError:
        return
    if resp.attrs.get("sid"):
        params = bosh.BoshSessionParams.from_attrs(resp.attrs, 60, 1)
        assert params.requests >= 1


# ---------------------------------------------------------------------------------------------
# Dexter


def _status_seeds() -> list[bytes]:
    st = dexter.decode_status(
        struct.pack(f"<{dexter.REPLY_WORDS}i", 1, 2, 3, 4, ord("g"), *([0] * 55))
    )
    return [b"\x00" + dexter.encode_status(st), b"\x01"]


def fuzz_dexter_status(data: bytes) -> None:
    """dexter_driver.protocol.decode_status on a reply (mode 1 pads/cuts to 240 bytes so that
    every input reaches the field checks); MalformedReply only."""
    if not data:
        return
    body = data[1:]
    if data[0] % 2:
        body = (body + bytes(dexter.REPLY_SIZE))[: dexter.REPLY_SIZE]
    with contextlib.suppress(dexter.MalformedReply):
        dexter.decode_status(body)


def _request_seeds() -> list[bytes]:
    return [
        dexter.encode_request(1, 2, dexter.Instruction.status()).rstrip(b"\0"),
        b"1 2 3 4 a 100 200 300 400 500;",
        b"1 2 3 4 S J1Force 5;",
        b"1 2 3 4 z 10;",
        b'\xff{"op":"wall","normal":[0,0,1],"offset":0.1}',
    ]


def fuzz_dexter_request(data: bytes) -> None:
    """dexter_driver.protocol.parse_request; MalformedRequest (or MissingTerminator) only."""
    with contextlib.suppress(dexter.MalformedRequest):
        dexter.parse_request(data)


_SIM_LOOP: asyncio.AbstractEventLoop | None = None
#: ops the robot (and so the simulator) answers only after a wait: sleep, queued moves when
#: the FIFO is full, mode files, register writes and finish wait for the FIFO to drain
_BLOCKING_OPLETS = set("zaRwFS")
_SIM_BUDGET_S = 0.2


def fuzz_sim(data: bytes) -> None:
    """The simulator's request handling (DexterSim.handle_message, a fresh simulator per input)
    on up to four requests, or its control-port JSON parser (first byte 0xff). Every request
    gets a 240-byte reply or none (no ';'); the control port always answers a dict. A request
    that blocks past the budget is a finding unless its oplet is one that waits by design."""
    global _SIM_LOOP
    if _SIM_LOOP is None:
        _SIM_LOOP = asyncio.new_event_loop()
    sim = DexterSim(SimConfig(port=0))
    if data[:1] == b"\xff":
        reply = sim.control(data[1:])
        assert isinstance(reply, dict) and "ok" in reply
        json.dumps(reply)
        return

    async def run() -> None:
        for chunk in data.split(b"\n")[:4]:
            chunk = chunk[: dexter.MESSAGE_SIZE]
            try:
                reply = await asyncio.wait_for(sim.handle_message(chunk), _SIM_BUDGET_S)
            except asyncio.TimeoutError:
                try:
                    oplet = dexter.parse_request(chunk).oplet
                except dexter.ProtocolError:
                    oplet = ""
                assert oplet in _BLOCKING_OPLETS, f"oplet {oplet!r} blocked past the budget"
                continue
            assert reply is None or len(reply) == dexter.REPLY_SIZE

    _SIM_LOOP.run_until_complete(run())


# ---------------------------------------------------------------------------------------------
# configuration files


def _config_seeds() -> list[bytes]:
    return [
        b"\x00topics:\n  - topic: /joint_states\n    type: sensor_msgs/msg/JointState\n"
        b"    from: leader\n    delivery: latest\n    max_rate_hz: 500\n"
        b"    qos: {reliability: best_effort, depth: 1}\n",
        b"\x01" + pairing.format_key_file(bytes(32)).encode(),
    ]


def fuzz_config(data: bytes) -> None:
    """The files a site reads: the topic file (bridge.topics.parse_topics, TopicConfigError)
    and the pairing key file (pairing.parse_key_file, ValueError)."""
    if not data:
        return
    text = data[1:].decode("utf-8", errors="replace")
    if data[0] % 2 == 0:
        with contextlib.suppress(topics.TopicConfigError):
            topics.parse_topics(text)
    else:
        with contextlib.suppress(ValueError):
            pairing.parse_key_file(text)


_NUMBERS = (b"inf", b"-inf", b"nan", b"1e999", b"-0", b"9" * 30, b"4294967296", b"-1", b"0x10")
_JSON = (b"[", b"]", b"{", b"}", b'"', b":", b",", b"null", b"true", b"[[[[[[[[", b"\\u0000")
_XML = (b"<", b"/>", b"</", b"='", b'="', b"xmlns=", b"&amp;", b"<![CDATA[", b"<?xml ?>", b"<!--")
_YAML = (b"topics:", b"\n  - ", b": ", b"&a ", b"*a", b"[", b"{", b"? ", b"!!", b"- [", b"~")
_DEXTER = (b" ", b";", b",", b"\n", b"\xff", b"S ", b"a ", b"z ", b"w ", b"J1Force", b"RunFile")

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "wire_frame",
            "jitsi_teleop.wire.decode + Reassembler",
            fuzz_wire_frame,
            ("WireError",),
            _frame_seeds,
        ),
        Target(
            "wire_descriptors",
            "jitsi_teleop.wire.decode_descriptors",
            fuzz_wire_descriptors,
            ("WireError",),
            _descriptor_seeds,
        ),
        Target(
            "protect_open",
            "jitsi_teleop.protect.FrameOpener.open",
            fuzz_protect_open,
            ("ProtectError",),
            _protect_seeds,
        ),
        Target(
            "pairing",
            "jitsi_teleop.pairing.decode_message + Pairing.handle",
            fuzz_pairing,
            ("HandshakeError",),
            _pairing_seeds,
        ),
        Target(
            "p2p_description",
            "jitsi_teleop.links.p2p.P2PDescription.from_dict",
            fuzz_p2p_description,
            ("DescriptionError",),
            _p2p_seeds,
        ),
        Target(
            "muc_stanza",
            "room.Room presence parsing, links.muc.MucLink receive, extdisco/focus/jingle",
            fuzz_muc_stanza,
            (),
            _stanza_seeds,
        ),
        Target(
            "bosh_body",
            "jitsi_teleop.room.transport_bosh.parse_body + BoshSessionParams",
            fuzz_bosh_body,
            ("BoshError",),
            _bosh_seeds,
        ),
        Target(
            "dexter_status",
            "dexter_driver.protocol.decode_status",
            fuzz_dexter_status,
            ("MalformedReply",),
            _status_seeds,
        ),
        Target(
            "dexter_request",
            "dexter_driver.protocol.parse_request",
            fuzz_dexter_request,
            ("MalformedRequest",),
            _request_seeds,
        ),
        Target(
            "dexter_sim",
            "dexter_driver.sim.DexterSim.handle_message + control",
            fuzz_sim,
            ("none (replies carry the error code)",),
            _request_seeds,
        ),
        Target(
            "config",
            "bridge.topics.parse_topics + pairing.parse_key_file",
            fuzz_config,
            ("TopicConfigError", "ValueError"),
            _config_seeds,
        ),
    )
}

_DICTS = {
    "wire_descriptors": _JSON + _NUMBERS + (b'"stream_id"', b'"topic"', b'"v"', b'"streams"'),
    "p2p_description": _JSON + _NUMBERS + (b'"candidates"', b'"datagram"', b"127.0.0.1 1"),
    "muc_stanza": _XML + _JSON + _NUMBERS + (b"frame", b"signal", b"ack", b"teleop", b"status"),
    "bosh_body": _XML + _NUMBERS + (b"body", b"sid=", b"hold=", b"wait=", b"requests="),
    "dexter_request": _DEXTER + _NUMBERS,
    "dexter_sim": _DEXTER + _NUMBERS + _JSON + (b'"op"', b'"wall"', b'"hand"', b'"values"'),
    "config": _YAML + _NUMBERS + (b"qos:", b"depth:", b"jitsi-teleop-key-v1 "),
}
for _name, _words in _DICTS.items():
    TARGETS[_name] = dataclasses.replace(TARGETS[_name], dictionary=_words)
