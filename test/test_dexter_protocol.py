"""Pure tests of dexter_driver.protocol: wire bytes, round trips, units and every malformed case."""

from __future__ import annotations

import contextlib
import math
import random
import struct

import numpy as np
import pytest

from dexter_driver import protocol as p
from dexter_driver.protocol import (
    DexterStatus,
    EncodeError,
    ErrorCode,
    Instruction,
    JointStatus,
    MalformedReply,
    MalformedRequest,
    MissingTerminator,
    ProtocolError,
    decode_status,
    encode_request,
    encode_status,
    parse_request,
)

RAD_1ARCSEC = math.pi / (180 * 3600)


def words(**idx: int) -> list[int]:
    """A valid reply as 60 ints ('g', clock 1 s) with some indices overridden (w<idx>=value)."""
    w = [0] * p.REPLY_WORDS
    w[0], w[1], w[2], w[4] = 1, 1, 1, ord("g")
    for k, v in idx.items():
        w[int(k[1:])] = v
    return w


def pack(w: list[int]) -> bytes:
    return struct.pack("<60i", *w)


def sample_status(**kw: object) -> DexterStatus:
    """A status whose every angle is a whole number of arcseconds (exact round trips)."""
    joints = tuple(
        JointStatus(
            measured_angle=(1000 * (i + 1)) * RAD_1ARCSEC,
            position_at=(1001 * (i + 1)) * RAD_1ARCSEC,
            delta=-(5 + i) * RAD_1ARCSEC,
            pid_delta=(7 + i) * RAD_1ARCSEC,
            force_delta=-(30 + i) * RAD_1ARCSEC,
            sent=123 + i,
            sin=2048 + i,
            cos=1024 - i,
        )
        for i in range(5)
    )
    base: dict[str, object] = dict(
        job=7,
        instruction_id=42,
        clock_s=1528436767.321857,
        oplet="g",
        error=ErrorCode.make(0, boundary=True),
        joints=joints,
        j6=p.servo_status(600, 12, 3, j6=True),
        j7=p.servo_status(100, 1030, 5, j6=False),
        end_effector_io=9,
    )
    base.update(kw)
    return DexterStatus(**base)  # type: ignore[arg-type]


# -- units ------------------------------------------------------------------------------------


def test_arcsec_conversions() -> None:
    assert p.rad_to_arcsec(1.0) == 206265
    assert p.rad_to_arcsec(math.radians(185)) == 666000
    assert p.arcsec_to_rad(648000) == pytest.approx(math.pi)
    for a in (-666000, -1, 0, 1, 12345, 540000):
        assert p.rad_to_arcsec(p.arcsec_to_rad(a)) == a
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            p.rad_to_arcsec(bad)


def test_micron_conversions() -> None:
    assert p.m_to_um(0.941292) == 941292
    assert p.um_to_m(500000) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        p.m_to_um(math.nan)


def test_dynamixel_conversions() -> None:
    assert p.j6_units_to_rad(512) == 0.0
    assert p.j6_units_to_rad(612) == pytest.approx(math.radians(29.0))
    assert p.j7_units_to_rad(100) == pytest.approx(math.radians(29.0))
    for u in (0, 300, 512, 1023):
        assert p.j6_rad_to_units(p.j6_units_to_rad(u)) == u
        assert p.j7_rad_to_units(p.j7_units_to_rad(u)) == u
    with pytest.raises(ValueError):
        p.j6_rad_to_units(math.nan)
    with pytest.raises(ValueError):
        p.j7_rad_to_units(math.inf)


def test_hdi_limits_match_the_robot_defaults() -> None:
    arcsec = [p.rad_to_arcsec(hi) for _, hi in p.HDI_JOINT_LIMITS_RAD]
    assert arcsec == [666000, 378000, 540000, 432000, 666000]
    assert all(lo == -hi for lo, hi in p.HDI_JOINT_LIMITS_RAD)
    assert p.JOINT_LIMITS_RAD == p.HDI_JOINT_LIMITS_RAD


def test_clamp_joints() -> None:
    q, clamped = p.clamp_joints([0.1, -0.2, 0.3, 0.0, 1.0])
    assert (q, clamped) == ((0.1, -0.2, 0.3, 0.0, 1.0), False)
    q, clamped = p.clamp_joints([10.0, -10.0, 0.0, 0.0, 0.0])
    assert clamped
    assert q[0] == p.HDI_JOINT_LIMITS_RAD[0][1]
    assert q[1] == p.HDI_JOINT_LIMITS_RAD[1][0]
    for bad in ([math.nan, 0, 0, 0, 0], [0, 0, 0, 0, math.inf]):
        with pytest.raises(ValueError, match="non-finite"):
            p.clamp_joints(bad)
    with pytest.raises(ValueError, match="5 joint values"):
        p.clamp_joints([0.0] * 4)


# -- request encoding -------------------------------------------------------------------------


def test_status_request_wire_bytes() -> None:
    data = encode_request(1, 2, Instruction.status())
    assert len(data) == p.MESSAGE_SIZE == 256
    assert data == b"1 2 0 1 g;" + b"\0" * (256 - 10)
    assert encode_request(3, 4, Instruction.status(1), start_ms=5, end="undefined").rstrip(
        b"\0"
    ) == (b"3 4 5 undefined g 1;")


@pytest.mark.parametrize(
    ("instruction", "text"),
    [
        (Instruction.move_all_joints([0, 0, 0, 0, 0]), "a 0 0 0 0 0"),
        (
            Instruction.move_all_joints([math.radians(185), -1.0, 0.5, 0, RAD_1ARCSEC]),
            "a 666000 -206265 103132 0 1",
        ),
        (
            Instruction.move_all_joints([0] * 5, j6_rad=0.0, j7_rad=None),
            "a 0 0 0 0 0 512 NaN",
        ),
        (Instruction.pid_move_all_joints([RAD_1ARCSEC * 36, 0, 0, 0, -1.0]), "P 36 0 0 0 -206265"),
        (Instruction.joint_force(1, 250), "S J1Force 250"),
        (Instruction.joint_force(5, -12.5), "S J5Force -12.5"),
        (Instruction.set_parameter("J3Force", 0), "S J3Force 0"),
        (Instruction.angular_speed(math.radians(30)), "S AngularSpeed 108000"),
        (Instruction.acceleration(3), "S Acceleration 3"),
        (Instruction.run_file("setFollowMeMode.make_ins"), "S RunFile setFollowMeMode.make_ins"),
        (Instruction.run_file(p.KEEP_POSITION_FILE), "S RunFile setKeepPositionMode.make_ins"),
        (Instruction.set_parameter("J1_PID_P", 0.1), "S J1_PID_P 0.1"),
        (Instruction.set_parameter("LinkLengths", 82440, 59500), "S LinkLengths 82440 59500"),
        (Instruction.write_register(42, 12448), "w 42 12448"),
        (Instruction.wait_until_idle(), "F"),
        (Instruction.sleep(0.25), "z 250000"),
        (Instruction.status(), "g"),
    ],
)
def test_instruction_wire_form(instruction: Instruction, text: str) -> None:
    data = encode_request(9, 10, instruction)
    assert data == f"9 10 0 1 {text};".encode().ljust(256, b"\0")


def test_boundaries_are_two_instructions() -> None:
    low, high = Instruction.boundaries(2, math.radians(-105), math.radians(100))
    assert (low.oplet, low.args) == ("S", ("J2BoundryLow", "-378000"))
    assert (high.oplet, high.args) == ("S", ("J2BoundryHigh", "360000"))
    with pytest.raises(EncodeError):
        Instruction.boundaries(2, 1.0, -1.0)
    with pytest.raises(EncodeError):
        Instruction.boundaries(6, -1.0, 1.0)


def test_every_force_parameter_is_known() -> None:
    for n in range(1, 6):
        assert f"J{n}Force" in p.PARAMETERS
        assert f"J{n}BoundryHigh" in p.PARAMETERS
        assert f"J{n}BoundryLow" in p.PARAMETERS
    assert p.PARAMETERS["J3Force"] == 3 and p.PARAMETERS["J2Force"] == 4
    assert p.PARAMETERS["AngularSpeed"] == 36


def test_request_of_255_bytes_is_accepted_256_rejected() -> None:
    header = "1 1 0 1 S RunFile "
    name = "x" * (255 - len(header) - 1)
    data = encode_request(1, 1, Instruction.run_file(name))
    assert data[254:256] == b";\0"
    with pytest.raises(EncodeError, match="at most 255"):
        encode_request(1, 1, Instruction.run_file(name + "x"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Instruction("gg"),
        lambda: Instruction(""),
        lambda: Instruction(";"),
        lambda: Instruction(" "),
        lambda: Instruction("é"),
        lambda: Instruction.set_parameter("NoSuchParam", 1),
        lambda: Instruction.set_parameter("J1Force"),
        lambda: Instruction.set_parameter("J1Force", math.nan),
        lambda: Instruction.set_parameter("J1Force", math.inf),
        lambda: Instruction.run_file("two words"),
        lambda: Instruction.run_file("semi;colon"),
        lambda: Instruction.run_file("comma,name"),
        lambda: Instruction.run_file(""),
        lambda: Instruction.move_all_joints([0.0] * 4),
        lambda: Instruction.move_all_joints([0.0, 0.0, math.nan, 0.0, 0.0]),
        lambda: Instruction.pid_move_all_joints([0.0, 0.0, 0.0, 0.0, math.inf]),
        lambda: Instruction.move_all_joints([0.0] * 5, j6_rad=math.nan),
        lambda: Instruction.joint_force(0, 1),
        lambda: Instruction.angular_speed(0.0),
        lambda: Instruction.angular_speed(math.nan),
        lambda: Instruction.acceleration(64),
        lambda: Instruction.sleep(-1.0),
    ],
)
def test_bad_instructions_raise_encode_error(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EncodeError):
        make()


def test_encode_error_is_a_value_error_and_a_protocol_error() -> None:
    assert issubclass(EncodeError, ValueError)
    assert issubclass(EncodeError, ProtocolError)
    assert issubclass(MissingTerminator, MalformedRequest)
    assert issubclass(MalformedReply, ProtocolError)


# -- request parsing (the simulator's side) ---------------------------------------------------


@pytest.mark.parametrize(
    "instruction",
    [
        Instruction.status(),
        Instruction.move_all_joints([0.1, -0.2, 0.3, -0.4, 0.5], j6_rad=0.1, j7_rad=0.2),
        Instruction.joint_force(4, -300),
        Instruction.run_file(p.FOLLOW_ME_FILE),
        Instruction.wait_until_idle(),
    ],
)
def test_parse_round_trip(instruction: Instruction) -> None:
    req = parse_request(encode_request(123, 456, instruction, start_ms=789))
    assert (req.job, req.instruction_id, req.start, req.end) == (123, 456, 789, "1")
    assert (req.oplet, req.args) == (instruction.oplet, instruction.args)


def test_parse_tolerates_commas_and_extra_separators() -> None:
    req = parse_request(b"1 2 3 4 a 10,20, 30 ,40,,50;")
    assert (req.oplet, req.args) == ("a", ("10", "20", "30", "40", "50"))
    req = parse_request(b"1 1 1 1 g ;")
    assert (req.job, req.instruction_id, req.oplet, req.args) == (1, 1, "g", ())
    req = parse_request(b"1 2 3,4 g 5;")  # a comma in the header shifts the 4th space
    assert (req.job, req.instruction_id, req.start, req.end) == (1, 2, 3, "4")
    assert (req.oplet, req.args) == ("5", ())


def test_parse_wiki_example_with_undefined_end() -> None:
    req = parse_request(b"1 2 1528438131000 undefined g;")
    assert (req.job, req.instruction_id, req.end, req.oplet) == (1, 2, "undefined", "g")
    assert p.INT32_MIN <= req.start <= p.INT32_MAX  # atoi into a C int wraps


def test_parse_stops_at_first_semicolon_and_nul() -> None:
    req = parse_request(b"1 2 3 4 S J1Force 5; S J2Force 6;\0junk without semicolon")
    assert req.args == ("J1Force", "5")
    with pytest.raises(MissingTerminator):
        parse_request(b"1 2 3 4 g\0;")


def test_parse_compact_oplet_argument() -> None:
    req = parse_request(b"1 2 3 4 g1;")
    assert (req.oplet, req.args) == ("g", ("1",))


def test_parse_empty_payload_has_no_oplet() -> None:
    req = parse_request(b"5 6 7 8 ;")
    assert (req.job, req.oplet, req.args) == (5, "", ())


def test_parse_non_numeric_header_is_atoi_zero() -> None:
    req = parse_request(b"x 7y -3 z g;")
    assert (req.job, req.instruction_id, req.start) == (0, 7, -3)


@pytest.mark.parametrize("data", [b"1 2 3 4 g", b"", b"\0" * 256, b"1 2 3 4 a 1 2 3 4 5"])
def test_parse_missing_terminator(data: bytes) -> None:
    with pytest.raises(MissingTerminator, match="no ';'"):
        parse_request(data)


@pytest.mark.parametrize("data", [b"1 2 3 g;", b"g;", b"1 2 3;4 g;"])
def test_parse_short_header(data: bytes) -> None:
    with pytest.raises(MalformedRequest, match="4 space-separated"):
        parse_request(data)


def test_atoi_like_c() -> None:
    assert p.atoi("42abc") == 42
    assert p.atoi("  -7") == -7
    assert p.atoi("+3") == 3
    assert p.atoi("abc") == 0
    assert p.atoi("") == 0
    assert p.atoi(str(2**31)) == -(2**31)


# -- status decoding --------------------------------------------------------------------------


def test_decode_wiki_example_header() -> None:
    head = bytes.fromhex("01000000 01000000 1f181a5b 41e90400 67000000".replace(" ", ""))
    st = decode_status(head + bytes(p.REPLY_SIZE - len(head)))
    assert (st.job, st.instruction_id, st.oplet) == (1, 1, "g")
    assert st.clock_s == pytest.approx(1528436767.321857, abs=1e-6)
    assert st.robot_time == st.clock_s
    assert st.error.ok and st.error.base == 0


def test_decode_joint_blocks_and_servo_slots() -> None:
    w = words()
    for i, b in enumerate((10, 20, 30, 40, 50)):
        w[b], w[b + 1], w[b + 2], w[b + 3] = 100 * i, 10 + i, 20 + i, 30 + i
        w[b + 4], w[b + 5], w[b + 6], w[b + 7], w[b + 9] = 1, 2, 3600 * (i + 1), 99, 2147483647
    w[18], w[28], w[38], w[48], w[58] = 300, 40, 612, 50, 0x0302
    w[9] = 5
    st = decode_status(pack(w))
    assert st.measured_angles == pytest.approx([math.radians(i + 1) for i in range(5)])
    assert st.joints[1].position_at == pytest.approx(100 * RAD_1ARCSEC)
    assert st.deltas == pytest.approx([(10 + i) * RAD_1ARCSEC for i in range(5)])
    assert st.delta == st.deltas
    assert st.pid_deltas == pytest.approx([(20 + i) * RAD_1ARCSEC for i in range(5)])
    assert st.force_deltas == pytest.approx([(30 + i) * RAD_1ARCSEC for i in range(5)])
    assert [j.sent for j in st.joints] == [99] * 5
    assert (st.joints[0].sin, st.joints[0].cos) == (1, 2)
    assert (st.j7.position_units, st.j7.load_units, st.j7.error) == (300, 40, 3)  # high byte
    assert (st.j6.position_units, st.j6.load_units, st.j6.error) == (612, 50, 2)  # low byte
    assert st.j6.position == pytest.approx(math.radians(29.0))
    assert st.j7.position == pytest.approx(math.radians(87.0))
    assert st.end_effector_io == 5


def test_decode_error_flags() -> None:
    raw = 2 | 1024 | (1 << 27) | (1 << 28) | (1 << 29) | (1 << 30)
    err = decode_status(pack(words(w5=raw))).error
    assert err.base == 2 and not err.ok
    assert err.firmware_mismatch and err.j7_servo and err.j6_servo
    assert err.boundary and err.monitor
    err = decode_status(pack(words(w5=1 | (1 << 29)))).error
    assert err.base == 1 and err.boundary and not err.monitor and not err.j6_servo
    assert ErrorCode.make(2, monitor=True, firmware_mismatch=True).raw == 2 | 1024 | (1 << 30)
    with pytest.raises(ValueError):
        ErrorCode.make(256)


def test_decode_interpolation_scales_j4_j5_deltas() -> None:
    w = words(w41=160, w42=-32, w51=16, w11=16)
    st = decode_status(pack(w), interpolation=(1, 1, 1, 16, 16))
    assert st.deltas[3] == pytest.approx(10 * RAD_1ARCSEC)
    assert st.pid_deltas[3] == pytest.approx(-2 * RAD_1ARCSEC)
    assert st.deltas[4] == pytest.approx(RAD_1ARCSEC)
    assert st.deltas[0] == pytest.approx(16 * RAD_1ARCSEC)


@pytest.mark.parametrize("size", [0, 1, 4, 239, 241, 256, 480])
def test_decode_wrong_length(size: int) -> None:
    with pytest.raises(MalformedReply, match="240 bytes"):
        decode_status(bytes(size))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"w4": 0}, "oplet"),
        ({"w4": 32}, "oplet"),
        ({"w4": 200}, "oplet"),
        ({"w4": -1}, "oplet"),
        ({"w3": 1_000_000}, "microseconds"),
        ({"w3": -1}, "microseconds"),
        ({"w2": -5}, "negative"),
    ],
)
def test_decode_impossible_values(override: dict[str, int], match: str) -> None:
    with pytest.raises(MalformedReply, match=match):
        decode_status(pack(words(**override)))


def test_decode_random_garbage_is_rejected_or_decoded_never_crashes() -> None:
    rng = random.Random(1)
    for _ in range(300):
        data = bytes(rng.getrandbits(8) for _ in range(p.REPLY_SIZE))
        with contextlib.suppress(MalformedReply):
            decode_status(data)


# -- status encoding (the simulator's side) ----------------------------------------------------


def test_status_round_trip_is_exact_for_whole_arcseconds() -> None:
    st = sample_status()
    data = encode_status(st)
    assert len(data) == p.REPLY_SIZE
    back = decode_status(data)
    assert back.job == st.job and back.instruction_id == st.instruction_id
    assert back.clock_s == pytest.approx(st.clock_s, abs=1e-6)
    assert back.oplet == st.oplet and back.error == st.error
    for a, b in zip(back.joints, st.joints):
        assert a.measured_angle == pytest.approx(b.measured_angle, abs=1e-12)
        assert a.position_at == pytest.approx(b.position_at, abs=1e-12)
        assert a.delta == pytest.approx(b.delta, abs=1e-12)
        assert a.pid_delta == pytest.approx(b.pid_delta, abs=1e-12)
        assert a.force_delta == pytest.approx(b.force_delta, abs=1e-12)
        assert (a.sent, a.sin, a.cos) == (b.sent, b.sin, b.cos)
    assert back.j6 == st.j6 and back.j7 == st.j7
    assert back.end_effector_io == 9
    assert encode_status(back) == data


def test_status_encoding_layout() -> None:
    w = struct.unpack("<60i", encode_status(sample_status()))
    assert w[0:2] == (7, 42)
    assert (w[2], w[3]) == (1528436767, 321857)
    assert w[4] == ord("g")
    assert w[5] == 1 << 29
    assert [w[b + 6] for b in (10, 20, 30, 40, 50)] == [1000, 2000, 3000, 4000, 5000]
    assert (w[18], w[28], w[38], w[48]) == (100, 1030, 600, 12)
    assert w[58] == 3 | (5 << 8)
    assert w[19] == 2147483647


def test_status_encoding_rounds_angles_and_carries_the_clock() -> None:
    st = sample_status(clock_s=10.9999999)
    w = struct.unpack("<60i", encode_status(st))
    assert (w[2], w[3]) == (11, 0)
    j = JointStatus(0.4 * RAD_1ARCSEC, 0.6 * RAD_1ARCSEC, 0.0, 0.0, 0.0)
    w = struct.unpack("<60i", encode_status(sample_status(joints=(j,) * 5)))
    assert (w[16], w[10]) == (0, 1)


def test_status_encoding_rejects_bad_values() -> None:
    with pytest.raises(EncodeError, match="5 joints"):
        encode_status(sample_status(joints=sample_status().joints[:4]))
    with pytest.raises(EncodeError, match="int32"):
        encode_status(sample_status(job=2**31))
    with pytest.raises(EncodeError, match="one character"):
        encode_status(sample_status(oplet="gg"))
    j = JointStatus(math.nan, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        encode_status(sample_status(joints=(j,) * 5))


def test_status_is_frozen() -> None:
    st = sample_status()
    with pytest.raises(AttributeError):
        st.job = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        st.joints[0].delta = 1.0  # type: ignore[misc]


def test_time_and_legacy_speed_conversions() -> None:
    assert p.s_to_us(0.25) == 250000
    assert p.us_to_s(1500) == pytest.approx(0.0015)
    with pytest.raises(ValueError):
        p.s_to_us(math.inf)
    assert p.legacy_speed_to_arcsec(7754.7355 * 30) == pytest.approx(108000, rel=1e-3)


def test_arguments_allow_paths_but_no_separators() -> None:
    ins = Instruction.run_file("/srv/samba/share/make_ins/x.make_ins")
    assert ins.args == ("RunFile", "/srv/samba/share/make_ins/x.make_ins")
    assert p.format_arg(True) == "1" and p.format_arg(2.0) == "2" and p.format_arg(0.5) == "0.5"
    assert p.format_arg(np.int64(7)) == "7" and p.format_arg(np.float32(0.5)) == "0.5"
    with pytest.raises(EncodeError):
        p.format_arg(np.float32("nan"))
    for bad in ("a b", "a\tb", "a;b", "a,b", "a\0b", "é"):
        with pytest.raises(EncodeError):
            p.format_arg(bad)
