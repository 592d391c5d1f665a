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
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from dexter_driver import protocol as dexter
from dexter_driver.sim import DexterSim, SimConfig
from jitsi_teleop import clock, pairing, protect, wire
from jitsi_teleop.bridge import topics
from jitsi_teleop.console.commands import Sender
from jitsi_teleop.console.console import Console, ConsoleConfig
from jitsi_teleop.console.eventlog import EventLog
from jitsi_teleop.linklocal import dnssd, txt
from jitsi_teleop.linklocal import stream as lstream
from jitsi_teleop.linklocal.carrier import LanConfig, LanRoom
from jitsi_teleop.linklocal.txt import LanPresence
from jitsi_teleop.links.p2p import DescriptionError, P2PDescription
from jitsi_teleop.protect import SessionCipher
from jitsi_teleop.room import discovery
from jitsi_teleop.room import transport_bosh as bosh
from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.room.occupants import Occupant, TeleopInfo
from jitsi_teleop.room.room import Room
from jitsi_teleop.roomlock import MAX_PASSWORD
from jitsi_teleop.session import PATH_MUC, PATH_P2P, Session, SessionConfig

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
#: a request whose oplet waits by design gets only this long: its parsing runs before the wait,
#: and waiting the full budget made the 10^6 campaign crawl (the corpus fills with waits)
_SIM_BLOCKING_BUDGET_S = 0.005


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
                oplet = dexter.parse_request(chunk).oplet
            except dexter.ProtocolError:
                oplet = ""
            blocking = oplet in _BLOCKING_OPLETS
            budget = _SIM_BLOCKING_BUDGET_S if blocking else _SIM_BUDGET_S
            try:
                reply = await asyncio.wait_for(sim.handle_message(chunk), budget)
            except asyncio.TimeoutError:
                assert blocking, f"oplet {oplet!r} blocked past the budget"
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


# ---------------------------------------------------------------------------------------------
# clock probes (CONTROL frames: authentic, but their numbers are the peer's to choose)


def _clock_seeds() -> list[bytes]:
    prober = clock.ClockProber()
    ping = prober.ping(1_000)
    pong = clock.answer_ping(ping, 5_000, 5_010)
    return [_join(b"\x00", b"\x01" + ping, b"\x02" + pong, b"\x06" + pong[-16:])]


def fuzz_clock(data: bytes) -> None:
    """A script of probes against clock.answer_ping, ClockProber.on_pong and ClockEstimator:
    pings made here, pongs from the input (op 6/7 answers the newest outstanding ping with the
    input's t2/t3, so the sample checks and the estimator are reached). ClockError only, and
    every estimate stays finite whatever times the peer claims."""
    prober = clock.ClockProber(max_outstanding=4)
    est = clock.ClockEstimator(window=8, min_drift_span_us=1_000)
    now = 1_000_000
    last: tuple[int, int] | None = None
    for op in _chunks(data, limit=64):
        if not op:
            continue
        kind, arg = op[0] % 8, op[1:]
        now += 1 + int.from_bytes(arg[:3].ljust(3, b"\0"), "big")
        if kind == 0:
            ping = prober.ping(now)
            last = struct.unpack(">BBIQQQ", ping)[2:4]
            continue
        if kind == 1:
            with contextlib.suppress(clock.ClockError):
                pong = clock.answer_ping(arg, now, now + 1)
                assert len(pong) == clock.PROBE_SIZE
            continue
        if kind in (6, 7) and last is not None:
            t2, t3 = struct.unpack(">QQ", arg[-16:].rjust(16, b"\0"))
            arg = struct.pack(">BBIQQQ", clock.PROBE_VERSION, clock.PONG, *last, t2, t3)
        try:
            sample = prober.on_pong(arg, now)
        except clock.ClockError:
            continue
        est.add(sample)
        e = est.estimate(now)
        if e is not None:
            ts = int.from_bytes(arg[-8:], "big")
            for v in (e.offset_us, e.error_us, e.drift_ppm, e.one_way_latency_us(ts, now)):
                assert math.isfinite(v), f"clock estimate not finite: {e}"


# ---------------------------------------------------------------------------------------------
# link-local (XEP-0174): TXT records and XML streams from anything on the LAN


def _txt_wire(props: dict[str, str]) -> bytes:
    out = b""
    for k, v in props.items():
        item = f"{k}={v}".encode()
        out += bytes([len(item)]) + item
    return out


def _txt_seeds() -> list[bytes]:
    p = LanPresence("jt-1@host", 5298, "lab", "leader", "0123456789ab", robot="arm", msg="hi")
    return [_join(b"jt-1@host", b"\x14\xb2", _txt_wire(p.to_txt())), _join(b"a@b", b"", b"\x00")]


def fuzz_linklocal_txt(data: bytes) -> None:
    """A browsed service as the LAN directory reads it: the DNS TXT wire format
    (dnssd._decode_txt), then txt.parse_presence with the instance name and SRV port from the
    input. TxtError only; what parses must survive to_txt -> parse unchanged."""
    parts = _chunks(data, limit=3)
    if len(parts) < 3:
        return
    instance = parts[0].decode("utf-8", errors="replace")
    port = int.from_bytes(parts[1][:3], "big") if parts[1] else 0
    props = dnssd._decode_txt(parts[2])
    try:
        pres = txt.parse_presence(instance, port, props)
    except txt.TxtError:
        return
    again = dnssd._decode_txt(_txt_wire(pres.to_txt()))
    assert txt.parse_presence(instance, port, again) == pres, "presence does not round-trip"


_LAN: tuple | None = None


class _FakeStream:
    """Stands in for the XmlStream a stanza arrived on: its peer's name, and what we send."""

    peer = "jt-peer@host"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True


def _lan():
    """One LanRoom (never joined: no socket, no mDNS) that knows the peer, built on first use."""
    global _LAN
    if _LAN is None:
        room = LanRoom(LanConfig("lab", nick="jt-me@host", tls=False))
        room._occupants[_FakeStream.peer] = Occupant(
            _FakeStream.peer, teleop=TeleopInfo("follower", "r", "ab12")
        )
        _LAN = (room, _FakeStream())
    return _LAN


def _stream_seeds() -> list[bytes]:
    head = lstream.stream_header("jt-peer@host", "jt-me@host")
    return [
        _join(
            head,
            lstream.FEATURES_NONE,
            b"<message to='jt-me@host' type='chat'><body>hi</body></message>",
            b"<iq type='get' id='1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            b"<iq type='get' id='2'><ping xmlns='urn:xmpp:ping'/></iq>" + lstream.CLOSE,
        ),
        _join(head + b"<stream:error><conflict/></stream:error>"),
    ]


def fuzz_linklocal_stream(data: bytes) -> None:
    """An XEP-0174 XML stream from a LAN host, in the pieces TCP delivered it in: the stream
    parser (header, restricted XML, stanza size), then each stanza as the LAN room handles it
    (messages to the room's handlers, IQs answered). StreamError only; our answers must parse."""
    room, fake = _lan()
    parser = lstream._Parser(max_stanza_bytes=4096)
    fake.sent.clear()
    try:
        for piece in _chunks(data, limit=32):
            for el in parser.feed(piece):
                if el.tag == lstream.ERROR_TAG or lstream.is_features(el):
                    continue
                room._on_stanza(fake, el)
    except lstream.StreamError:
        pass
    for answer in fake.sent:
        ET.fromstring(answer)
    room._unclaimed = type(room._unclaimed)()  # keep state from growing across inputs


# ---------------------------------------------------------------------------------------------
# chat console: text from anyone in the room


class _Actions:
    def status_text(self) -> str:
        return "ok"

    def who_text(self) -> str:
        return "nobody"

    def estop(self, actor: str) -> str:
        return "stopped"

    def note(self, actor: str, text: str) -> None:
        pass

    def chime(self, actor: str) -> str:
        return "chimed"


def _chat_seeds() -> list[bytes]:
    return [b"\x00follower: log 5", b"\x01help", b"\x02note hello", b"\x03bot status", b"\x00log"]


def fuzz_chat_command(data: bytes) -> None:
    """console.Console.handle on a chat line (group chat, private or direct; raw bytes or
    text), as the chat adapter feeds it: it never raises, and its reply fits the byte budget."""
    if not data:
        return
    t = [0.0]

    def tick() -> float:
        t[0] += 100.0  # the rate limiter always admits: reach the commands
        return t[0]

    cfg = ConsoleConfig(names=("follower", "bot"), site="follower", max_reply_bytes=300)
    console = Console(cfg, EventLog(":memory:"), _Actions(), clock=tick)
    channel = ("groupchat", "chat", "direct", "chat")[data[0] % 4]
    sender = Sender(
        nick="alice", jid="alice@example.org", moderator=bool(data[0] & 4), channel=channel
    )
    body: str | bytes = data[1:] if data[0] & 8 else data[1:].decode("utf-8", errors="replace")
    for _ in range(2):
        reply = console.handle(body, sender)
        if reply is not None:
            assert len(reply.text.encode("utf-8")) <= cfg.max_reply_bytes, "reply over budget"


# ---------------------------------------------------------------------------------------------
# Jitsi deployment discovery: config.js served by whatever web server the meeting URL names


def _config_js_seeds() -> list[bytes]:
    js = (
        "var config = {\n  hosts: {\n    domain: 'meet.example.org',\n"
        "    muc: 'conference.' + subdomain + 'meet.example.org',\n  },\n"
        "  // bosh: '//old/http-bind',\n  bosh: '//meet.example.org/http-bind',\n"
        "  websocket: 'wss://meet.example.org/' + subdir + 'xmpp-websocket',\n};\n"
    )
    return [_join(b"https://meet.example.org/tenant/MyRoom", js.encode())]


def fuzz_config_js(data: bytes) -> None:
    """room.discovery.settings_from_config_js on a meeting URL and the config.js text a web
    server returned, then the room settings built from it; DiscoveryError, or ValueError from
    the room settings' checks, only."""
    parts = _chunks(data, limit=2)
    if len(parts) < 2:
        return
    url = parts[0].decode("utf-8", errors="replace")
    text = parts[1].decode("utf-8", errors="replace")
    try:
        settings = discovery.settings_from_config_js(url, text)
    except discovery.DiscoveryError:
        return
    with contextlib.suppress(ValueError):
        settings.room_config(nick="0000aaaa")


# ---------------------------------------------------------------------------------------------
# a paired session's receive path: sealed frames (data and control) from the peer and others

_SESSION_KEYS = (bytes(range(32)), bytes(range(1, 33)), b"sess")
_SESSION_STREAMS = (
    wire.StreamDescriptor(1, "/cmd", "sensor_msgs/msg/JointState", _SAMPLE_HASH),
    wire.StreamDescriptor(2, "/events", "std_msgs/msg/String", _SAMPLE_HASH, "reliable"),
)
_FRAME_OP = struct.Struct(">BHIHH")  # op, stream id, seq, fragment index, fragment count


_SESSION_LOOP: asyncio.AbstractEventLoop | None = None


def _session_loop() -> asyncio.AbstractEventLoop:
    global _SESSION_LOOP
    if _SESSION_LOOP is None:
        _SESSION_LOOP = asyncio.new_event_loop()
    return _SESSION_LOOP


def _session_op(op: int, stream: int, seq: int, payload: bytes, idx: int = 0, n: int = 1) -> bytes:
    return _FRAME_OP.pack(op, stream, seq, idx, n) + payload


def _session_seeds() -> list[bytes]:
    ctrl, rel = int(wire.Flags.CONTROL), int(wire.Flags.RELIABLE)
    descs = b"\0" * 8 + wire.encode_descriptors(_SESSION_STREAMS)
    big = wire.Frame(2, 0, 0, bytes(range(256)) * 8, wire.Flags.RELIABLE)
    frags = wire.Fragmenter(700).split(big)
    return [
        b"\x00"
        + _join(
            _session_op(ctrl | rel, 1, 0, descs),  # the peer's descriptors (CTRL_DESCRIPTORS)
            _session_op(0, 1, 0, b"state"),  # a latest sample
            _session_op(rel, 2, 1, b"second"),  # reliable, out of order ...
            _session_op(rel, 2, 0, b"first"),  # ... then in order
            _session_op(ctrl | rel, 5, 1, b'["bad topic"]'),  # CTRL_REFUSAL
            _session_op(ctrl | rel, 6, 2, b"room password"),  # CTRL_ROOM_LOCK
            _session_op(ctrl, 4, 0, struct.pack(">BHI", 1, 1, 0)),  # CTRL_ACK
            _session_op(ctrl, 2, 0, bytes(8)),  # CTRL_PING
            _session_op(0x80, 0, 0, b"\x01garbage that is not a record"),  # raw
            _session_op(0x40, 1, 1, b"from a stranger"),  # sealed, but not from the peer
        ),
        b"\x01"
        + _join(
            _session_op(ctrl | rel, 1, 0, descs),
            *(
                _session_op(int(f.flags), f.stream_id, f.seq, f.payload, f.frag_index, f.frag_count)
                for f in frags
            ),
        ),
    ]


def fuzz_session(data: bytes) -> None:
    """A paired Session's receive path (Session._on_record, as both links call it): records
    sealed with the peer's key (data and control frames of any stream, flags, sequence and
    fragment fields, on either path), unsealed records, and frames from another occupant.
    Nothing may escape into the frame handler (``handler_errors``); only described, unrefused
    streams are delivered, a reliable stream in order from 0, a latest stream only newer;
    nothing unsealed or foreign is delivered; buffers stay within their bounds."""
    if not data:
        return
    loop = _session_loop()  # the session spawns tasks (cancelled below)
    room = Room(RoomConfig(room="lab", domain="example.org", tcp_host="127.0.0.1", nick="0000aaaa"))
    delivered: list[tuple[wire.StreamDescriptor, bytes, int]] = []
    session: Session | None = None

    def on_receive(d: wire.StreamDescriptor, payload: bytes, info) -> None:
        assert session is not None
        assert session._remote.get(d.stream_id) == d, "delivered a stream the peer never described"
        assert d.stream_id not in session._refused, "delivered a refused stream"
        delivered.append((d, bytes(payload), info.seq))

    expected = list(_SESSION_STREAMS) if data[0] & 1 else None
    role = "leader" if data[0] & 2 else "follower"
    session = Session(
        room, SessionConfig(), _secret(), role, [], expected=expected, on_receive=on_receive
    )
    send_key, recv_key, tag = _SESSION_KEYS
    session._peer = "peer"
    session._cipher = SessionCipher(send_key, recv_key, tag)
    peer = SessionCipher(recv_key, send_key, tag)
    stranger = SessionCipher(bytes(32), bytes(range(2, 34)), tag)
    sealed: set[bytes] = set()
    fragments = False
    now_us = time.monotonic_ns() // 1000

    async def feed() -> None:
        nonlocal fragments
        session._send_descriptors()  # one reliable frame of ours awaiting the peer's ack
        for op in _chunks(data[1:], limit=64):
            path = PATH_P2P if len(op) and op[0] & 0x08 else PATH_MUC
            if len(op) < _FRAME_OP.size or op[0] & 0x80:  # an unsealed record
                session._on_record(path, "peer", op[1:])
                continue
            code, sid, seq, idx, n = _FRAME_OP.unpack_from(op)
            payload = op[_FRAME_OP.size :]
            ts = (now_us, 0, now_us + 10**9, max(0, now_us - 10**9))[(code >> 4) & 3]
            frame = wire.Frame(sid, seq, ts, payload, wire.Flags(code & 7), idx, n)
            foreign = bool(code & 0x40)
            try:
                record = (stranger if foreign else peer).seal(frame)
            except (wire.WireError, protect.ProtectError):
                continue  # not a frame a peer could seal: nothing to deliver
            if not foreign:
                sealed.add(payload)
                fragments |= frame.is_fragment
            session._on_record(path, "peer", record)
        await asyncio.sleep(0)

    try:
        loop.run_until_complete(feed())
    finally:
        for task in list(session._background):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    assert not session.counters.get("handler_errors"), f"handler error: {session.counters}"
    last: dict[int, int] = {}
    for d, payload, seq in delivered:
        assert fragments or payload in sealed, "delivered a payload the peer never sealed"
        if d.delivery == "reliable":
            assert seq == last.get(d.stream_id, -1) + 1, "reliable stream out of order"
        else:
            assert d.stream_id not in last or wire.seq_newer(seq, last[d.stream_id]), "older"
        last[d.stream_id] = seq
    for rx in session._rx_rel.values():
        assert len(rx.held) <= session.config.max_reorder, "reorder buffer over its bound"
    assert len(session.peer_refusals) <= 1024
    password = room.config.password  # what we would present when we rejoin
    assert password is None or len(password) <= MAX_PASSWORD, "room password over its bound"


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
        Target(
            "clock_probe",
            "jitsi_teleop.clock: answer_ping, ClockProber.on_pong, ClockEstimator",
            fuzz_clock,
            ("ClockError",),
            _clock_seeds,
        ),
        Target(
            "linklocal_txt",
            "linklocal.dnssd._decode_txt + linklocal.txt.parse_presence",
            fuzz_linklocal_txt,
            ("TxtError",),
            _txt_seeds,
        ),
        Target(
            "linklocal_stream",
            "linklocal.stream._Parser + LanRoom stanza handling",
            fuzz_linklocal_stream,
            ("StreamError",),
            _stream_seeds,
        ),
        Target(
            "chat_command",
            "console.Console.handle (chat commands from the room)",
            fuzz_chat_command,
            (),
            _chat_seeds,
        ),
        Target(
            "session_receive",
            "session.Session._on_record: open, reassemble, control and data frames",
            fuzz_session,
            (),
            _session_seeds,
        ),
        Target(
            "config_js",
            "room.discovery.settings_from_config_js + RoomConfig",
            fuzz_config_js,
            ("DiscoveryError", "ValueError"),
            _config_js_seeds,
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
    "linklocal_txt": (
        b"txtvers=1",
        b"port.p2pj=",
        b"jt.room=",
        b"jt.role=leader",
        b"jt.key=",
        b"jt.robot=",
        b"jt.muc=",
        b"status=",
        b"msg=",
        b"nick=",
        b"@",
        b"=",
    ),
    "linklocal_stream": (
        *_XML,
        b"<stream:stream",
        b"xmlns:stream='http://etherx.jabber.org/streams'",
        b"</stream:stream>",
        b"jt-me@host",
        b"jt-peer@host",
        b"message",
        b"iq",
        b"type='get'",
        b"urn:xmpp:ping",
        b"<![CDATA[",
    ),
    "chat_command": (
        b"follower",
        b"bot",
        b": ",
        b"log ",
        b"note ",
        b"help",
        b"status",
        b"who",
        b"estop",
        b"chime",
        b"\xb2",
        b"\xd9\xa5",
        *_NUMBERS,
    ),
    "config_js": (
        *_JSON,
        b"hosts",
        b"domain",
        b"muc",
        b"focus",
        b"bosh",
        b"websocket",
        b"'",
        b" + ",
        b"subdir",
        b"subdomain",
        b"//",
        b"/*",
        b"*/",
        b"<!--#",
        b"https://",
    ),
    "session_receive": (*_JSON, b'"stream_id"', b'"topic"', b'"delivery"', b'"reliable"'),
    "config": _YAML + _NUMBERS + (b"qos:", b"depth:", b"jitsi-teleop-key-v1 "),
}
for _name, _words in _DICTS.items():
    TARGETS[_name] = dataclasses.replace(TARGETS[_name], dictionary=_words)
