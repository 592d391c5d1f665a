"""An audible warning at the robot's site ("the robot may move"), through the machine's audio.

Why not a library: a short tone through whatever player the machine has (PipeWire, Pulse or
ALSA command-line players) needs nothing installed, and a machine without audio says so
instead of pretending: the console replies "unavailable" and the event log records it.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import subprocess
import wave
from dataclasses import dataclass

#: players tried in order, with the arguments that read a WAV file
PLAYERS = (("pw-play", ()), ("paplay", ()), ("aplay", ("-q",)))


@dataclass(frozen=True)
class ChimeResult:
    played: bool
    text: str


def tone_wav(freqs: tuple[float, ...] = (880.0, 660.0), each_s: float = 0.25) -> bytes:
    """A two-tone chime as 16-bit mono WAV bytes."""
    rate = 16000
    frames = bytearray()
    for f in freqs:
        n = int(rate * each_s)
        for i in range(n):
            env = min(1.0, i / 400, (n - i) / 400)  # no clicks
            frames += struct.pack("<h", int(12000 * env * math.sin(2 * math.pi * f * i / rate)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return buf.getvalue()


def audio_output() -> tuple[str, tuple[str, ...]] | None:
    """The player to use, or None when this machine has no audio output we can reach."""
    has_device = os.path.isdir("/dev/snd") or bool(
        os.environ.get("PULSE_SERVER") or os.environ.get("PIPEWIRE_REMOTE")
    )
    if not has_device:
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        has_device = bool(runtime) and (
            os.path.exists(os.path.join(runtime, "pulse", "native"))
            or os.path.exists(os.path.join(runtime, "pipewire-0"))
        )
    if not has_device:
        return None
    for name, args in PLAYERS:
        path = shutil.which(name)
        if path:
            return path, args
    return None


def chime(timeout_s: float = 3.0) -> ChimeResult:
    """Play the chime now (blocking, at most ``timeout_s``)."""
    out = audio_output()
    if out is None:
        return ChimeResult(False, "chime unavailable: this site has no audio output")
    path, args = out
    try:
        done = subprocess.run(
            [path, *args, "-"]
            if os.path.basename(path) == "aplay"
            else [path, *args, "/dev/stdin"],
            input=tone_wav(),
            capture_output=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return ChimeResult(False, f"chime failed: {e}")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        return ChimeResult(False, f"chime failed: {err[-1] if err else done.returncode}")
    return ChimeResult(True, "chimed")
