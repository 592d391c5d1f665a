"""Dexter TCP protocol: request encoding/parsing, 240-byte status encoding/decoding, units.

Pure (no I/O, no asyncio), so the client, the simulator and the tests share one definition of
the wire format (docs/dexter-protocol.md §1, §2, §5; firmware DexRun.c, Sep 2020). Every unit
conversion of the driver lives here: the robot speaks integer arcseconds (J1..J5), microns and
Dynamixel servo units (J6/J7); everything above this module speaks radians and metres.
"""

from __future__ import annotations

import math
import numbers
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "ARCSEC_PER_RAD",
    "COMMAND_REG",
    "COMMAND_REG_FOLLOW_ME",
    "COMMAND_REG_KEEP_POSITION",
    "ERR_BAD_OPLET",
    "ERR_NO_TERMINATOR",
    "ERR_OK",
    "FOLLOW_ME_FILE",
    "HDI_INTERPOLATION",
    "HDI_JOINT_LIMITS_DEG",
    "HDI_JOINT_LIMITS_RAD",
    "JOINT_COUNT",
    "JOINT_LIMITS_RAD",
    "KEEP_POSITION_FILE",
    "MAX_REQUEST_LEN",
    "MESSAGE_SIZE",
    "PARAMETERS",
    "REPLY_SIZE",
    "REPLY_WORDS",
    "DexterStatus",
    "EncodeError",
    "ErrorCode",
    "Instruction",
    "JointStatus",
    "MalformedReply",
    "MalformedRequest",
    "MissingTerminator",
    "ParsedRequest",
    "ProtocolError",
    "ServoStatus",
    "arcsec_to_rad",
    "atoi",
    "clamp_joints",
    "decode_status",
    "encode_request",
    "encode_status",
    "format_arg",
    "j6_rad_to_units",
    "j6_units_to_rad",
    "j7_rad_to_units",
    "j7_units_to_rad",
    "legacy_speed_to_arcsec",
    "m_to_um",
    "parse_request",
    "rad_to_arcsec",
    "s_to_us",
    "servo_status",
    "um_to_m",
    "us_to_s",
]

# --------------------------------------------------------------------------------------------
# Sizes, codes, names
# --------------------------------------------------------------------------------------------

MESSAGE_SIZE = 256  #: request buffer of the firmware's single recv(); we NUL-pad to this
MAX_REQUEST_LEN = MESSAGE_SIZE - 1  #: longest request text (one byte stays NUL)
REPLY_WORDS = 60
REPLY_SIZE = 4 * REPLY_WORDS  #: 240 bytes = 60 little-endian int32
JOINT_COUNT = 5

ERR_OK = 0
ERR_BAD_OPLET = 1  #: unknown oplet or parameter
ERR_NO_TERMINATOR = 2  #: previous request had no ';' (reported in the next reply)
ERR_FLAG_FIRMWARE_MISMATCH = 1024
ERR_FLAG_J7_SERVO = 1 << 27
ERR_FLAG_J6_SERVO = 1 << 28
ERR_FLAG_BOUNDARY = 1 << 29
ERR_FLAG_MONITOR = 1 << 30

COMMAND_REG = 42  #: FPGA register that selects the control mode (`w 42 <value>`)
COMMAND_REG_FOLLOW_ME = 12448  #: EnableLoop 32 + CAL_RUN 128 + AngleEnable 4096 + RotEnable 8192
COMMAND_REG_KEEP_POSITION = 12960  #: the same + ResetForce 512
FOLLOW_ME_FILE = "setFollowMeMode.make_ins"
KEEP_POSITION_FILE = "setKeepPositionMode.make_ins"

#: `S` parameter names the firmware knows, with their index (usable instead of the name).
#: None = name-only (index unknown or not in FW 2020). Boundary order (High, Low per joint) is
#: an assumption; the names are what the driver sends.
PARAMETERS: dict[str, int | None] = {
    "MaxSpeed": 0,
    "Acceleration": 1,
    "J1Force": 2,
    "J3Force": 3,
    "J2Force": 4,
    "J4Force": 5,
    "J5Force": 6,
    "J1Friction": 7,
    "J2Friction": 8,
    "J3Friction": 9,
    "J4Friction": 10,
    "J5Friction": 11,
    "J1BoundryHigh": 12,
    "J1BoundryLow": 13,
    "J2BoundryHigh": 14,
    "J2BoundryLow": 15,
    "J3BoundryHigh": 16,
    "J3BoundryLow": 17,
    "J4BoundryHigh": 18,
    "J4BoundryLow": 19,
    "J5BoundryHigh": 20,
    "J5BoundryLow": 21,
    "EERoll": 23,
    "EESpan": 24,
    "StartSpeed": 25,
    "ServoSet2X": 27,
    "ServoSet": 28,
    "RebootServo": 29,
    "J1_PID_P": 31,
    "J2_PID_P": 32,
    "J3_PID_P": 33,
    "J4_PID_P": 34,
    "J5_PID_P": 35,
    "AngularSpeed": 36,
    "AngularSpeedStartAndEnd": 37,
    "LinkLengths": 51,
    "AxisCal": 55,
    "Interpolation": 56,
    "HomeOffset": 57,
    "RunFile": None,
}

# --------------------------------------------------------------------------------------------
# Units (the only place in the driver where they are converted)
# --------------------------------------------------------------------------------------------

ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi
DYNAMIXEL_RAD_PER_UNIT = math.radians(0.29)  #: XL-320: 0.29 degrees per unit
J6_ZERO_UNITS = 512  #: J6 (tool roll) 0 rad = 512 units
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def rad_to_arcsec(rad: float) -> int:
    """Radians to the robot's integer arcseconds (rounded); rejects NaN/inf."""
    if not math.isfinite(rad):
        raise ValueError(f"angle must be finite, got {rad!r}")
    return round(rad * ARCSEC_PER_RAD)


def arcsec_to_rad(arcsec: float) -> float:
    return arcsec / ARCSEC_PER_RAD


LEGACY_SPEED_ARCSEC_PER_NBIT = 0.46423  #: firmware factor for `S MaxSpeed`/`StartSpeed`


def legacy_speed_to_arcsec(nbits: float) -> float:
    """Legacy `S MaxSpeed`/`StartSpeed` "nbits" to arcsec/s, as the firmware converts them."""
    return nbits * LEGACY_SPEED_ARCSEC_PER_NBIT


def s_to_us(seconds: float) -> int:
    """Seconds to the integer microseconds of `z` (and of the reply clock's fraction)."""
    if not math.isfinite(seconds):
        raise ValueError(f"duration must be finite, got {seconds!r}")
    return round(seconds * 1e6)


def us_to_s(us: float) -> float:
    return us * 1e-6


def m_to_um(m: float) -> int:
    if not math.isfinite(m):
        raise ValueError(f"length must be finite, got {m!r}")
    return round(m * 1e6)


def um_to_m(um: float) -> float:
    return um * 1e-6


def j6_units_to_rad(units: float) -> float:
    """J6 (tool roll, XL-320) position units to radians, 512 = 0."""
    return (units - J6_ZERO_UNITS) * DYNAMIXEL_RAD_PER_UNIT


def j6_rad_to_units(rad: float) -> int:
    if not math.isfinite(rad):
        raise ValueError(f"angle must be finite, got {rad!r}")
    return round(rad / DYNAMIXEL_RAD_PER_UNIT) + J6_ZERO_UNITS


def j7_units_to_rad(units: float) -> float:
    """J7 (gripper, XL-320) position units to radians, 0 = 0."""
    return units * DYNAMIXEL_RAD_PER_UNIT


def j7_rad_to_units(rad: float) -> int:
    if not math.isfinite(rad):
        raise ValueError(f"angle must be finite, got {rad!r}")
    return round(rad / DYNAMIXEL_RAD_PER_UNIT)


# --------------------------------------------------------------------------------------------
# Joint limits (HDI, Defaults.make_ins)
# --------------------------------------------------------------------------------------------

HDI_JOINT_LIMITS_DEG: tuple[tuple[float, float], ...] = (
    (-185.0, 185.0),
    (-105.0, 105.0),
    (-150.0, 150.0),
    (-120.0, 120.0),
    (-185.0, 185.0),
)
HDI_JOINT_LIMITS_RAD: tuple[tuple[float, float], ...] = tuple(
    (math.radians(lo), math.radians(hi)) for lo, hi in HDI_JOINT_LIMITS_DEG
)
JOINT_LIMITS_RAD = HDI_JOINT_LIMITS_RAD  #: the limits the driver enforces (HDI)


def clamp_joints(
    q_rad: Sequence[float],
    limits: Sequence[tuple[float, float]] = HDI_JOINT_LIMITS_RAD,
) -> tuple[tuple[float, ...], bool]:
    """(q clamped to the limits, whether anything was clamped). NaN/inf raise ValueError."""
    values = tuple(float(v) for v in q_rad)
    if len(values) != JOINT_COUNT:
        raise ValueError(f"need {JOINT_COUNT} joint values (J1..J5), got {len(values)}")
    bad = [i + 1 for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite joint target for J{bad}")
    out = tuple(min(max(v, lo), hi) for v, (lo, hi) in zip(values, limits))
    return out, out != values


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """Bytes that do not follow the Dexter protocol."""


class MalformedReply(ProtocolError):
    """A status reply that is truncated, too long or holds impossible values."""


class MalformedRequest(ProtocolError):
    """A request the firmware could not parse (simulator side)."""


class MissingTerminator(MalformedRequest):
    """A request without ';': the firmware sends no reply and reports error 2 next time."""


class EncodeError(ProtocolError, ValueError):
    """A request that cannot be put on the wire (too long, bad characters, bad values)."""


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------

_ARG_RE = re.compile(r"[A-Za-z0-9_.+\-/#:]+")  #: no separators, no ';', printable ASCII


def format_arg(value: object) -> str:
    """One argument token: ints as ints, floats shortest-exact, names checked for separators."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, numbers.Integral):  # int, numpy integers
        return str(int(value))
    if isinstance(value, numbers.Real):  # float, numpy floats
        f = float(value)
        if not math.isfinite(f):
            raise EncodeError(f"argument must be finite, got {value!r}")
        return str(int(f)) if f.is_integer() else repr(f)
    text = str(value)
    if not _ARG_RE.fullmatch(text):
        raise EncodeError(f"argument {text!r} is empty or contains a separator or ';'")
    return text


@dataclass(frozen=True)
class Instruction:
    """An oplet and its argument tokens, without the header (the client adds job/instruction)."""

    oplet: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.oplet) != 1 or not self.oplet.isascii() or not self.oplet.isprintable():
            raise EncodeError(f"oplet must be one printable ASCII character, got {self.oplet!r}")
        if self.oplet in " ,;":
            raise EncodeError(f"oplet {self.oplet!r} is a separator")

    # -- builders for every oplet the driver uses ----------------------------------------------

    @classmethod
    def status(cls, mode: int | None = None) -> Instruction:
        """`g` [mode]: status, no action."""
        return cls("g", () if mode is None else (format_arg(int(mode)),))

    @classmethod
    def move_all_joints(
        cls, q_rad: Sequence[float], j6_rad: float | None = None, j7_rad: float | None = None
    ) -> Instruction:
        """`a`: queued coordinated move to absolute J1..J5 (arcsec) [+ J6/J7 servo units]."""
        return cls("a", _joint_args(q_rad, j6_rad, j7_rad))

    @classmethod
    def pid_move_all_joints(
        cls,
        offset_rad: Sequence[float],
        j6_rad: float | None = None,
        j7_rad: float | None = None,
    ) -> Instruction:
        """`P`: immediate set-point; J1..J5 are an OFFSET added to the `a` commanded position."""
        return cls("P", _joint_args(offset_rad, j6_rad, j7_rad))

    @classmethod
    def set_parameter(cls, name: str, *values: object) -> Instruction:
        """`S name value...`; the name must be one the firmware knows (see PARAMETERS)."""
        if name not in PARAMETERS:
            raise EncodeError(f"unknown S parameter {name!r}")
        if not values:
            raise EncodeError(f"S {name} needs at least one value")
        return cls("S", (name, *(format_arg(v) for v in values)))

    @classmethod
    def joint_force(cls, joint: int, value: float) -> Instruction:
        """`S J<n>Force v`: haptic force bias for one joint (raw FPGA units)."""
        return cls.set_parameter(f"J{_joint_number(joint)}Force", value)

    @classmethod
    def angular_speed(cls, rad_per_s: float) -> Instruction:
        """`S AngularSpeed`: `a` cruise speed, sent in arcsec/s."""
        if not math.isfinite(rad_per_s) or rad_per_s <= 0:
            raise EncodeError(f"angular speed must be positive and finite, got {rad_per_s!r}")
        return cls.set_parameter("AngularSpeed", rad_to_arcsec(rad_per_s))

    @classmethod
    def acceleration(cls, value: int) -> Instruction:
        """`S Acceleration`: the firmware's coupled 0..63 acceleration setting."""
        if not 0 <= int(value) <= 63:
            raise EncodeError(f"Acceleration must be 0..63, got {value!r}")
        return cls.set_parameter("Acceleration", int(value))

    @classmethod
    def boundaries(cls, joint: int, low_rad: float, high_rad: float) -> tuple[Instruction, ...]:
        """`S J<n>BoundryLow/High` (two instructions, arcsec): software joint limits."""
        n = _joint_number(joint)
        if not low_rad <= high_rad:
            raise EncodeError(f"J{n} boundary low {low_rad!r} > high {high_rad!r}")
        return (
            cls.set_parameter(f"J{n}BoundryLow", rad_to_arcsec(low_rad)),
            cls.set_parameter(f"J{n}BoundryHigh", rad_to_arcsec(high_rad)),
        )

    @classmethod
    def run_file(cls, filename: str) -> Instruction:
        """`S RunFile <file>`: run a file of oplets on the robot; replies when it has finished."""
        return cls.set_parameter("RunFile", filename)

    @classmethod
    def write_register(cls, address: int, value: int) -> Instruction:
        """`w addr value`: FPGA register write (the robot first waits for the FIFO to flush)."""
        return cls("w", (format_arg(int(address)), format_arg(int(value))))

    @classmethod
    def wait_until_idle(cls) -> Instruction:
        """`F`: the reply comes when the motion queue is empty."""
        return cls("F")

    @classmethod
    def sleep(cls, seconds: float) -> Instruction:
        """`z us`: the robot sleeps, then replies."""
        if not math.isfinite(seconds) or seconds < 0:
            raise EncodeError(f"sleep must be >= 0 and finite, got {seconds!r}")
        return cls("z", (str(s_to_us(seconds)),))


def _joint_number(joint: int) -> int:
    if not 1 <= int(joint) <= JOINT_COUNT:
        raise EncodeError(f"joint must be 1..{JOINT_COUNT}, got {joint!r}")
    return int(joint)


def _joint_args(
    q_rad: Sequence[float], j6_rad: float | None, j7_rad: float | None
) -> tuple[str, ...]:
    values = list(q_rad)
    if len(values) != JOINT_COUNT:
        raise EncodeError(f"need {JOINT_COUNT} joint values (J1..J5), got {len(values)}")
    try:
        args = [str(rad_to_arcsec(float(v))) for v in values]
        if j6_rad is not None or j7_rad is not None:
            args.append("NaN" if j6_rad is None else str(j6_rad_to_units(j6_rad)))
            args.append("NaN" if j7_rad is None else str(j7_rad_to_units(j7_rad)))
    except ValueError as exc:
        raise EncodeError(str(exc)) from exc
    return tuple(args)


def encode_request(
    job: int, instruction_id: int, instruction: Instruction, start_ms: int = 0, end: str = "1"
) -> bytes:
    """The exact wire bytes: `job instr start end oplet args;` NUL-padded to 256 bytes.

    The header is space separated (the firmware finds the payload after the 4th space); one
    instruction per write. Longer than 255 bytes raises EncodeError, since the firmware's single
    256-byte recv() would cut it.
    """
    header = (format_arg(int(job)), format_arg(int(instruction_id)), format_arg(int(start_ms)))
    text = " ".join((*header, format_arg(end), instruction.oplet, *instruction.args)) + ";"
    data = text.encode("ascii")
    if len(data) > MAX_REQUEST_LEN:
        raise EncodeError(
            f"request is {len(data)} bytes, the robot accepts at most {MAX_REQUEST_LEN}: "
            f"{text[:40]!r}…"
        )
    return data.ljust(MESSAGE_SIZE, b"\0")


@dataclass(frozen=True)
class ParsedRequest:
    """A request as the firmware sees it (header fields atoi'd, args split on spaces/commas)."""

    job: int
    instruction_id: int
    start: int
    end: str
    oplet: str  #: '' when the payload is empty
    args: tuple[str, ...]


_SEP_RE = re.compile(r"[ ,]+")
_ATOI_RE = re.compile(r"^\s*([+-]?\d+)")


def atoi(text: str) -> int:
    """C atoi: leading integer or 0, wrapped to int32 like the firmware's int."""
    m = _ATOI_RE.match(text)
    if not m:
        return 0
    return (int(m.group(1)) - INT32_MIN) % 2**32 + INT32_MIN


def parse_request(data: bytes) -> ParsedRequest:
    """Parse one received chunk like DexRun's ProcessServerReceiveDataDDE.

    Text ends at the first NUL; the payload starts after the 4th space and ends at the first ';'
    (MissingTerminator if there is none); header and arguments split on spaces or commas.
    """
    text = data.split(b"\0", 1)[0].decode("latin-1")
    semi = text.find(";")
    if semi < 0:
        raise MissingTerminator(f"request has no ';': {text[:40]!r}")
    pos = -1
    for _ in range(4):
        pos = text.find(" ", pos + 1)
        if pos < 0 or pos > semi:
            raise MalformedRequest(f"request header needs 4 space-separated fields: {text[:40]!r}")
    header = [t for t in _SEP_RE.split(text[:pos]) if t]
    while len(header) < 4:
        header.append("")
    tokens = [t for t in _SEP_RE.split(text[pos + 1 : semi]) if t]
    oplet, args = "", ()
    if tokens:
        first = tokens[0]
        oplet = first[0]
        args = ((first[1:],) if len(first) > 1 else ()) + tuple(tokens[1:])
    return ParsedRequest(
        job=atoi(header[0]),
        instruction_id=atoi(header[1]),
        start=atoi(header[2]),
        end=header[3],
        oplet=oplet,
        args=args,
    )


# --------------------------------------------------------------------------------------------
# Status reply
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCode:
    """The reply's error word: base code (err & 255) plus the firmware's flag bits."""

    raw: int

    @property
    def base(self) -> int:
        return self.raw & 255

    @property
    def firmware_mismatch(self) -> bool:
        return bool(self.raw & ERR_FLAG_FIRMWARE_MISMATCH)

    @property
    def j7_servo(self) -> bool:
        return bool(self.raw & ERR_FLAG_J7_SERVO)

    @property
    def j6_servo(self) -> bool:
        return bool(self.raw & ERR_FLAG_J6_SERVO)

    @property
    def boundary(self) -> bool:
        return bool(self.raw & ERR_FLAG_BOUNDARY)

    @property
    def monitor(self) -> bool:
        """Encoder position/velocity limit hit; the robot has switched to open loop."""
        return bool(self.raw & ERR_FLAG_MONITOR)

    @property
    def ok(self) -> bool:
        return self.raw == 0

    @classmethod
    def make(
        cls,
        base: int = 0,
        *,
        firmware_mismatch: bool = False,
        j7_servo: bool = False,
        j6_servo: bool = False,
        boundary: bool = False,
        monitor: bool = False,
    ) -> ErrorCode:
        if not 0 <= base <= 255:
            raise ValueError(f"base error code must be 0..255, got {base}")
        raw = base
        raw |= ERR_FLAG_FIRMWARE_MISMATCH if firmware_mismatch else 0
        raw |= ERR_FLAG_J7_SERVO if j7_servo else 0
        raw |= ERR_FLAG_J6_SERVO if j6_servo else 0
        raw |= ERR_FLAG_BOUNDARY if boundary else 0
        raw |= ERR_FLAG_MONITOR if monitor else 0
        return cls(raw)


@dataclass(frozen=True)
class JointStatus:
    """One stepper joint's status block; angles in radians, raw registers as int."""

    measured_angle: float  #: encoder angle (use this for feedback)
    position_at: float  #: stepped set-point on the way to the goal
    delta: float  #: instantaneous tracking error (∝ load in keep mode: the effort proxy)
    pid_delta: float  #: PID correction
    force_delta: float  #: follow mode: measured − commanded
    sent: int = 0  #: SENT_* register, raw (the firmware does not scale it)
    sin: int = 0  #: raw 12-bit encoder ADC
    cos: int = 0


@dataclass(frozen=True)
class ServoStatus:
    """A Dynamixel (J6 roll / J7 gripper) as reported by the status monitor thread."""

    position_units: int
    load_units: int
    position: float  #: radians
    error: int  #: Dynamixel error byte


@dataclass(frozen=True)
class DexterStatus:
    """A decoded 240-byte status reply (g0 layout)."""

    job: int
    instruction_id: int
    clock_s: float  #: robot clock (CLOCK_REALTIME), seconds
    oplet: str
    error: ErrorCode
    joints: tuple[JointStatus, ...]  #: J1..J5
    j6: ServoStatus
    j7: ServoStatus
    end_effector_io: int = 0
    status_mode: int = 0  #: idx 8 (0 in the g0 layout)
    dma: tuple[int, int] = field(default=(0, 0), compare=False)  #: idx 6, 7 (legacy)

    @property
    def measured_angles(self) -> tuple[float, ...]:
        return tuple(j.measured_angle for j in self.joints)

    @property
    def robot_time(self) -> float:
        """Alias of ``clock_s``."""
        return self.clock_s

    @property
    def delta(self) -> tuple[float, ...]:
        """Alias of ``deltas`` (DELTA of J1..J5, rad)."""
        return self.deltas

    @property
    def position_at(self) -> tuple[float, ...]:
        return tuple(j.position_at for j in self.joints)

    @property
    def deltas(self) -> tuple[float, ...]:
        return tuple(j.delta for j in self.joints)

    @property
    def pid_deltas(self) -> tuple[float, ...]:
        return tuple(j.pid_delta for j in self.joints)

    @property
    def force_deltas(self) -> tuple[float, ...]:
        return tuple(j.force_delta for j in self.joints)


_JOINT_BASES = (10, 20, 30, 40, 50)
#: servo slot (b + 8) of each joint block
_IDX_J7_POS, _IDX_J7_LOAD, _IDX_J6_POS, _IDX_J6_LOAD, _IDX_SERVO_ERR = 18, 28, 38, 48, 58
_UNUSED_JUNK = 2147483647  #: what the robot leaves in the unused slot (b + 9)
#: J4/J5 DELTA/PID_DELTA are in 1/interpolation units; HDI uses 1 1 1 1 1, HD 1 1 1 16 16.
HDI_INTERPOLATION = (1, 1, 1, 1, 1)
_REPLY = struct.Struct(f"<{REPLY_WORDS}i")


def decode_status(data: bytes, interpolation: Sequence[int] = HDI_INTERPOLATION) -> DexterStatus:
    """Decode one 240-byte reply; MalformedReply if it is not one."""
    if len(data) != REPLY_SIZE:
        raise MalformedReply(f"status reply must be {REPLY_SIZE} bytes, got {len(data)}")
    w = _REPLY.unpack(data)
    oplet_code, micros = w[4], w[3]
    if not 32 < oplet_code < 127:
        raise MalformedReply(f"reply oplet code {oplet_code} is not a printable ASCII character")
    if not 0 <= micros < 1_000_000:
        raise MalformedReply(f"reply clock microseconds {micros} out of range 0..999999")
    if w[2] < 0:
        raise MalformedReply(f"reply clock seconds {w[2]} is negative")
    joints = tuple(_decode_joint(w, b, interpolation[i]) for i, b in enumerate(_JOINT_BASES))
    errs = w[_IDX_SERVO_ERR]
    return DexterStatus(
        job=w[0],
        instruction_id=w[1],
        clock_s=w[2] + us_to_s(micros),
        oplet=chr(oplet_code),
        error=ErrorCode(w[5]),
        joints=joints,
        j6=ServoStatus(
            w[_IDX_J6_POS], w[_IDX_J6_LOAD], j6_units_to_rad(w[_IDX_J6_POS]), errs & 255
        ),
        j7=ServoStatus(
            w[_IDX_J7_POS], w[_IDX_J7_LOAD], j7_units_to_rad(w[_IDX_J7_POS]), (errs >> 8) & 255
        ),
        end_effector_io=w[9],
        status_mode=w[8],
        dma=(w[6], w[7]),
    )


def _decode_joint(w: Sequence[int], b: int, interp: int) -> JointStatus:
    return JointStatus(
        measured_angle=arcsec_to_rad(w[b + 6]),
        position_at=arcsec_to_rad(w[b]),
        delta=arcsec_to_rad(w[b + 1] / interp),
        pid_delta=arcsec_to_rad(w[b + 2] / interp),
        force_delta=arcsec_to_rad(w[b + 3]),
        sent=w[b + 7],
        sin=w[b + 4],
        cos=w[b + 5],
    )


def encode_status(status: DexterStatus, interpolation: Sequence[int] = HDI_INTERPOLATION) -> bytes:
    """The 240 bytes the robot would send for ``status`` (angles rounded to arcsec).

    Used by the simulator; J6/J7 use their raw units (``position`` is derived from them).
    """
    if len(status.joints) != JOINT_COUNT:
        raise EncodeError(f"status needs {JOINT_COUNT} joints, got {len(status.joints)}")
    if len(status.oplet) != 1:
        raise EncodeError(f"status oplet must be one character, got {status.oplet!r}")
    w = [0] * REPLY_WORDS
    seconds = math.floor(status.clock_s)
    micros = s_to_us(status.clock_s - seconds)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    w[0], w[1], w[2], w[3] = status.job, status.instruction_id, seconds, micros
    w[4], w[5] = ord(status.oplet), status.error.raw
    w[6], w[7] = status.dma
    w[8], w[9] = status.status_mode, status.end_effector_io
    for i, (b, j) in enumerate(zip(_JOINT_BASES, status.joints)):
        interp = interpolation[i]
        w[b] = rad_to_arcsec(j.position_at)
        w[b + 1] = rad_to_arcsec(j.delta) * interp
        w[b + 2] = rad_to_arcsec(j.pid_delta) * interp
        w[b + 3] = rad_to_arcsec(j.force_delta)
        w[b + 4], w[b + 5] = j.sin, j.cos
        w[b + 6] = rad_to_arcsec(j.measured_angle)
        w[b + 7] = j.sent
        w[b + 9] = _UNUSED_JUNK
    w[_IDX_J7_POS], w[_IDX_J7_LOAD] = status.j7.position_units, status.j7.load_units
    w[_IDX_J6_POS], w[_IDX_J6_LOAD] = status.j6.position_units, status.j6.load_units
    w[_IDX_SERVO_ERR] = (status.j6.error & 255) | ((status.j7.error & 255) << 8)
    try:
        return _REPLY.pack(*w)
    except struct.error as exc:
        raise EncodeError(f"status value does not fit in int32: {exc}") from exc


def servo_status(
    position_units: int, load_units: int = 0, error: int = 0, *, j6: bool
) -> ServoStatus:
    """A ServoStatus with its radians derived from the units (J6: 512 = 0; J7: 0 = 0)."""
    rad = j6_units_to_rad(position_units) if j6 else j7_units_to_rad(position_units)
    return ServoStatus(position_units, load_units, rad, error)
