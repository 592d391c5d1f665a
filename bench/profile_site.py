"""Profile (issue 14): where each ROS node of a site spends its Python time at 100 Hz.

Starts ``jitsi-teleop demo --ros`` and, once the script runs, samples every driver, teleop and
transport process with py-spy (``--gil``: only samples holding the GIL, i.e. Python work, not
waits) for ``--seconds``; prints per node the functions with the most samples (self and
inclusive) and writes them to ``bench/results/site_profile.txt``.

    python bench/profile_site.py [--seconds 12] [--out bench/results/site_profile.txt]

Needs py-spy (``pip install py-spy``, in the bench extra) and the rights to read other
processes' memory (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODES = {"dexter_driver": "driver", "/teleop": "teleop", "/transport": "transport"}


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    return f"{m.group(1)} ({m.group(2).split('/')[-1]})" if m else frame


def summarize(path: Path, top: int = 12) -> str:
    """Self and inclusive sample shares of one py-spy raw (collapsed stacks) file."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = [_short(f) for f in stack.split(";")]
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames[1:]):
            incl[f] += int(n)
    if not total:
        return "  (no samples)"
    out = [f"  {total} samples holding the GIL; self:"]
    out += [f"    {100 * n / total:5.1f}% {f}" for f, n in own.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * n / total:5.1f}% {f}" for f, n in incl.most_common(top + 8)]
    return "\n".join(out)


def node_pids(parent: int) -> dict[int, str]:
    """The demo's node processes: pid -> 'leader driver' etc. (by ROS domain: lower = leader)."""
    found = []
    for pid in subprocess.run(
        ["pgrep", "-P", str(parent)], capture_output=True, text=True
    ).stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        dom = next((int(e[14:]) for e in env if e.startswith(b"ROS_DOMAIN_ID=")), -1)
        for key, name in NODES.items():
            if f"{key} --ros-args" in cmd:
                found.append((dom, name, int(pid)))
    lowest = min((d for d, _, _ in found), default=0)
    return {pid: f"{'leader' if d == lowest else 'follower'} {n}" for d, n, pid in found}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--out", default=str(HERE / "results" / "site_profile.txt"))
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="profile-site-"))
    exe = Path(sys.executable).parent / "jitsi-teleop"
    duration = args.seconds + 25
    demo = subprocess.Popen(
        [
            *(str(exe), "demo", "--ros", "--no-status", "--duration", f"{duration:g}"),
            *("--report", str(tmp / "report")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(20)  # start-up, pairing, the script under way
        pids = node_pids(demo.pid)
        spies = {
            pid: subprocess.Popen(
                [
                    *(spy, "record", "-p", str(pid), "-d", f"{args.seconds:g}", "-r", "250"),
                    *("--gil", "--nonblocking", "-f", "raw", "-o", str(tmp / f"{pid}.txt")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in pids
        }
        for s in spies.values():
            s.wait(args.seconds + 60)
    finally:
        demo.wait(duration + 120)
    parts = [
        f"py-spy --gil, {args.seconds:g} s at 250 Hz per node, jitsi-teleop demo --ros "
        f"(100 Hz), executor {os.environ.get('JITSI_TELEOP_EXECUTOR', 'events')}, "
        f"uvloop {os.environ.get('JITSI_TELEOP_UVLOOP', '1')}"
    ]
    for pid, name in sorted(pids.items(), key=lambda x: x[1]):
        f = tmp / f"{pid}.txt"
        parts.append(f"== {name}\n" + (summarize(f) if f.exists() else "  (no profile)"))
    text = "\n".join(parts) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
