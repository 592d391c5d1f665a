"""Every input the fuzz campaign (bench/faults.py fuzz) found to crash a parser, replayed.

Each case feeds the crashing bytes to the parser the way the product does and checks that the
parser now refuses them with its documented error (or answers, where it must never raise),
then replays them through the fuzz target itself, so the exact finding stays fixed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from dexter_driver import protocol as dexter
from dexter_driver.sim import DexterSim, SimConfig
from jitsi_teleop import wire
from jitsi_teleop.bridge import topics
from jitsi_teleop.console import commands
from jitsi_teleop.linklocal import txt
from jitsi_teleop.linklocal.carrier import LanConfig, LanRoom
from jitsi_teleop.links.p2p import DescriptionError, P2PDescription
from jitsi_teleop.pairing import Secret
from jitsi_teleop.room import discovery, extdisco, stanzas
from jitsi_teleop.room import transport_bosh as bosh
from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.session import Session, SessionConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import fuzz_targets

NS_BOSH = "http://jabber.org/protocol/httpbind"

#: found by the fuzzer: a topic file whose entry has keys of two types (str and None: the
#: YAML ``&elivery:`` is an anchor on an empty key); sorting them for the message raised
TOPICS_MIXED_KEYS = bytes.fromhex(
    "00746f706963733a0a20202d20746f7069633a202f6a6f696e745f7374617465730a20202020746f6d3a206c"
    "65616465720a2020202026656c69766572793a2069742c2064"
)
#: found by the fuzzer: `S` with a parameter "index" that isdigit() accepts and int() refuses
SIM_SET_SUPERSCRIPT = b"1 2 3 4 S \xb2 5;"
SIM_SET_DOUBLE_MINUS = b"1 2 3 4 S --5 5;"
#: found while writing the targets and confirmed by them (the campaign's dictionaries now hold
#: the tokens that reach them): non-finite BOSH session numbers, JSON and YAML nested deeper
#: than Python's recursion limit, an integer too large for float() on the control port
BOSH_HOLD_INF = f"<body xmlns='{NS_BOSH}' sid='s1' hold='inf' wait='nan'/>".encode()
DEEP_JSON = b"[" * 5000
SIM_CONTROL_HUGE_INT = b'{"op":"wall","normal":[0,0,1],"offset":1' + b"0" * 400 + b"}"
MUC_DEEP_SIGNAL = (
    b'<message xmlns="jabber:client" type="chat"><signal xmlns="urn:jitsi-teleop:0" e="ab" '
    b'n="1">' + DEEP_JSON + b"</signal></message>"
)


def test_topic_file_with_keys_of_mixed_types_is_a_config_error() -> None:
    with pytest.raises(topics.TopicConfigError, match="unknown keys"):
        topics.parse_topics(TOPICS_MIXED_KEYS[1:].decode())
    fuzz_targets.fuzz_config(TOPICS_MIXED_KEYS)


def test_topic_file_nested_too_deep_is_a_config_error() -> None:
    with pytest.raises(topics.TopicConfigError, match="not valid YAML"):
        topics.parse_topics(DEEP_JSON.decode())
    fuzz_targets.fuzz_config(b"\x00" + DEEP_JSON)


@pytest.mark.parametrize("request_bytes", [SIM_SET_SUPERSCRIPT, SIM_SET_DOUBLE_MINUS])
def test_sim_answers_set_with_odd_parameter_index(request_bytes: bytes) -> None:
    """The firmware reads the index with atoi: the simulator answers instead of dying."""
    sim = DexterSim(SimConfig(port=0))
    reply = asyncio.run(sim.handle_message(request_bytes))
    assert reply is not None and len(reply) == dexter.REPLY_SIZE
    assert dexter.decode_status(reply).oplet == "S"
    fuzz_targets.fuzz_sim(request_bytes)


@pytest.mark.parametrize("line", [DEEP_JSON, SIM_CONTROL_HUGE_INT])
def test_sim_control_port_refuses_with_a_reason(line: bytes) -> None:
    reply = DexterSim(SimConfig(port=0)).control(line)
    assert reply["ok"] is False and reply["error"]
    fuzz_targets.fuzz_sim(b"\xff" + line)


def test_bosh_non_finite_session_numbers_fall_back_to_defaults() -> None:
    resp = bosh.parse_body(BOSH_HOLD_INF.decode())
    params = bosh.BoshSessionParams.from_attrs(resp.attrs, 45, 1)
    assert (params.hold, params.wait, params.requests) == (1, 45, 2)
    fuzz_targets.fuzz_bosh_body(BOSH_HOLD_INF)


def test_muc_signal_nested_too_deep_is_counted_invalid() -> None:
    _loop, _room, link, *_ = fuzz_targets._muc()
    before = link.stats.invalid
    fuzz_targets.fuzz_muc_stanza(b"\x00" + MUC_DEEP_SIGNAL)
    assert link.stats.invalid == before + 1


# ---------------------------------------------------------------------------------------------
# Regexes anchored with ``$`` matched before a trailing newline: every check of outside input
# now uses fullmatch, and each of these values is refused with the parser's documented error.

_HASH = "RIHS01_" + "ab" * 32


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("topic", "/joint_states\n", "invalid topic name"),
        ("ros_type", "sensor_msgs/msg/JointState\n", "invalid ROS type name"),
        ("type_hash", _HASH + "\n", "invalid type hash"),
    ],
)
def test_descriptor_field_with_trailing_newline_is_refused(field, value, message) -> None:
    d = wire.StreamDescriptor(1, "/joint_states", "sensor_msgs/msg/JointState", _HASH)
    doc = json.loads(wire.encode_descriptors([d]))
    wire.decode_descriptors(json.dumps(doc).encode())
    doc["streams"][0][field] = value
    with pytest.raises(wire.BadDescriptor, match=message):
        wire.decode_descriptors(json.dumps(doc).encode())


def test_p2p_ice_token_with_trailing_newline_is_refused() -> None:
    d = json.loads(fuzz_targets._p2p_seeds()[0])
    P2PDescription.from_dict(d)
    d["ufrag"] = "uf\n"
    with pytest.raises(DescriptionError, match="ufrag is not a valid ICE token"):
        P2PDescription.from_dict(d)


@pytest.mark.parametrize(("attr", "reason"), [("key", "bad key id"), ("robot", "bad robot name")])
def test_presence_teleop_field_with_trailing_newline_is_refused(attr, reason) -> None:
    attrs = {"v": "0", "role": "leader", "robot": "arm", "key": "ab12"}
    attrs[attr] += "&#10;"
    xml = "<teleop xmlns='urn:jitsi-teleop:0' " + " ".join(f"{k}='{v}'" for k, v in attrs.items())
    info = stanzas.TeleopPresence(xml=ET.fromstring(xml + "/>"))
    assert info.validate() == reason


@pytest.mark.parametrize("attr", ["s", "n"])
def test_slow_path_frame_number_with_trailing_newline_is_counted_invalid(attr) -> None:
    _loop, _room, link, *_ = fuzz_targets._muc()
    attrs = {"s": "1", "n": "2"}
    attrs[attr] += "&#10;"
    msg = (
        '<message xmlns="jabber:client" type="chat"><frame xmlns="urn:jitsi-teleop:0" '
        f's="{attrs["s"]}" n="{attrs["n"]}" t="5" k="r" e="{link.epoch}">AAEC</frame></message>'
    )
    before = link.stats.invalid
    fuzz_targets.fuzz_muc_stanza(b"\x00" + msg.encode())
    assert link.stats.invalid == before + 1


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("jt.room", "lab\n", "jt.room"),
        ("jt.key", "0123456789ab\n", "jt.key"),
        ("jt.robot", "arm\n", "jt.robot"),
        ("jt.muc", "0000aaaa\n", "jt.muc"),
    ],
)
def test_lan_txt_value_with_trailing_newline_is_refused(key, value, reason) -> None:
    p = txt.LanPresence("jt-1@host", 5298, "lab", "leader", "0123456789ab", robot="arm")
    props = {k.encode(): v.encode() for k, v in p.to_txt().items()}
    txt.parse_presence("jt-1@host", 5298, props)
    props[key.encode()] = value.encode()
    with pytest.raises(txt.TxtError, match=reason):
        txt.parse_presence("jt-1@host", 5298, props)
    with pytest.raises(txt.TxtError, match="bad_name"):
        txt.parse_presence("jt-1@host\n", 5298, dict(props))


@pytest.mark.parametrize(
    ("field", "value"),
    [("nick", "0000aaaa\n"), ("key_id", "ab12\n"), ("robot", "arm\n")],
)
def test_room_config_value_with_trailing_newline_is_refused(field, value) -> None:
    kw = {"room": "lab", "domain": "example.org", "tcp_host": "127.0.0.1", "nick": "0000aaaa"}
    RoomConfig(**kw)
    kw[field] = value
    with pytest.raises(ValueError, match=rf"{field} must.*\\n"):
        RoomConfig(**kw)


def test_topic_and_dexter_argument_and_turn_host_with_trailing_newline_are_refused() -> None:
    with pytest.raises(topics.TopicConfigError, match="must be a ROS topic name"):
        topics.parse_topics(
            'topics:\n  - topic: "/joint_states\\n"\n    type: sensor_msgs/msg/JointState\n'
            "    from: leader\n"
        )
    with pytest.raises(dexter.EncodeError, match="separator"):
        dexter.format_arg("J1Force\n")
    assert not extdisco._check_host("turn.example.org\n")


# ---------------------------------------------------------------------------------------------
# found by the new targets (clock_probe, linklocal_*, chat_command, config_js) or while
# writing them


def test_chat_log_with_a_non_ascii_digit_is_answered_not_raised() -> None:
    """'²'.isdigit() is True but int('²') raises: a chat line crashed the console."""
    parsed = commands.parse("log ²", ("follower",), "chat")
    assert parsed is not None and parsed.request is None and "log takes a number" in parsed.error
    fuzz_targets.fuzz_chat_command(b"\x01log \xc2\xb2")


#: found by the fuzzer (config_js): a meeting URL with an unbalanced '[' in its host, on
#: which urlsplit raises ValueError ("Invalid IPv6 URL")
CONFIG_JS_BAD_URL = bytes.fromhex(
    "002668747470733a2f2f6d6565742e6578611c1c001c1c7765625d736f636b65741c1c1c1c1c1c1c1c1c1c1c"
    "1c1c1c1c1c1c000000266892746ff7733a00"
)


def test_meeting_url_urllib_refuses_is_a_discovery_error() -> None:
    with pytest.raises(discovery.DiscoveryError, match="not a meeting URL"):
        discovery.parse_meeting_url("https://meet.ex[ample.org/Room")
    fuzz_targets.fuzz_config_js(CONFIG_JS_BAD_URL)


def test_session_refusal_nested_too_deep_is_counted_invalid() -> None:
    """A peer's refusal list is JSON: nesting past the recursion limit is refused, counted."""
    s = Session(
        LanRoom(LanConfig("lab", nick="jt-me@host", tls=False)),
        SessionConfig(),
        Secret(bytes(32)),
        "leader",
        [],
    )
    s._on_refusal(DEEP_JSON)
    assert s.counters.get("control_invalid") == 1 and not s.stats().peer_refusals
    s._on_refusal(b'["topic /x: unknown type"]')
    assert s.stats().peer_refusals == ["topic /x: unknown type"]
