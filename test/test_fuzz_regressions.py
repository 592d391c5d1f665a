"""Every input the fuzz campaign (bench/faults.py fuzz) found to crash a parser, replayed.

Each case feeds the crashing bytes to the parser the way the product does and checks that the
parser now refuses them with its documented error (or answers, where it must never raise),
then replays them through the fuzz target itself, so the exact finding stays fixed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from dexter_driver import protocol as dexter
from dexter_driver.sim import DexterSim, SimConfig
from jitsi_teleop.bridge import topics
from jitsi_teleop.room import transport_bosh as bosh

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
