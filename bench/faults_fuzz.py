"""Fault campaign, part 4: coverage-guided fuzzing of every parser that takes bytes from outside.

Each target of bench/fuzz_targets.py runs in a subprocess of its own (one crash does not end the
campaign), under atheris (libFuzzer for Python) with the project's packages instrumented for
coverage. A finding is an exception other than the parser's documented ones, an input that takes
longer than ``--timeout`` seconds, or a process over ``--rss-limit-mb``; libFuzzer keeps each such
input in ``--artifacts``/<target>/ (crash-, timeout-, oom- files). Without atheris (``--engine
random``, or when it cannot be imported) a pure-Python engine mutates the seeds at random instead:
the same targets and checks, but no coverage feedback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from faults_common import DEFAULT_JSON, HERE, ROOT, print_table, write_section

DEFAULT_ARTIFACTS = HERE / "results" / "fuzz-artifacts"
DEFAULT_CORPUS = ROOT / ".fuzz-corpus"
INSTRUMENT = ["jitsi_teleop", "dexter_driver"]


# ---------------------------------------------------------------------------------------------
# fuzz: parent side


@dataclass
class TargetResult:
    name: str
    parser: str
    documented: list[str]
    engine: str
    inputs: int = 0
    seconds: float = 0.0
    coverage: int | None = None  #: libFuzzer "cov": instrumented edges reached
    features: int | None = None  #: libFuzzer "ft": coverage features
    corpus: int | None = None
    runs: int = 0  #: processes started (a crash ends one; the target is resumed)
    findings: list[dict] = field(default_factory=list)
    date: str = ""  #: when this target's run started (UTC)
    interrupted: bool = False  #: stopped by SIGINT before its inputs or its time


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


_STATUS_RE = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")
_EXEC_RE = re.compile(r"stat::number_of_executed_units: (\d+)")
_RANDOM_RE = re.compile(r"^random-engine: inputs (\d+)")


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _dict_args(name: str, args: argparse.Namespace) -> list[str]:
    path = Path(args.corpus) / f"{name}.dict"
    return [f"-dict={path}"] if path.exists() else []


def _worker_cmd(
    name: str, engine: str, args: argparse.Namespace, runs: int, corpus: Path, artifacts: Path
) -> list[str]:
    base = [sys.executable, str(HERE / "faults.py"), "_fuzz-worker", "--engine", engine, name]
    if engine == "random":
        return [
            *base,
            "--",
            str(runs),
            str(args.seconds),
            str(args.timeout),
            str(args.rss_limit_mb),
            str(corpus),
            str(artifacts),
        ]
    return [
        *base,
        "--",
        f"-runs={runs}",
        f"-max_total_time={max(1, int(args.seconds))}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        *_dict_args(name, args),
        f"-seed={args.seed}",
        str(corpus),
    ]


def _run_target(name: str, args: argparse.Namespace, engine: str) -> TargetResult:
    sys.path.insert(0, str(HERE))
    import fuzz_targets

    t = fuzz_targets.TARGETS[name]
    res = TargetResult(name, t.parser, list(t.documented), engine, date=_now())
    corpus = Path(args.corpus) / name
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in t.seeds():
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()[:12]}").write_bytes(seed)
    if t.dictionary:
        (Path(args.corpus) / f"{name}.dict").write_text(
            "".join('"' + "".join(f"\\x{b:02x}" for b in w) + '"\n' for w in t.dictionary)
        )
    artifacts = Path(args.artifacts) / name
    artifacts.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    while res.inputs < args.inputs and time.monotonic() - t0 < args.seconds and res.runs < 4:
        before = set(artifacts.iterdir())
        remaining = args.inputs - res.inputs
        cmd = _worker_cmd(name, engine, args, remaining, corpus, artifacts)
        log_path = Path(args.corpus) / f"{name}.log"
        with open(log_path, "w") as log:
            proc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                timeout=args.seconds + 10 * args.timeout + 120,
            )
        res.runs += 1
        text = log_path.read_text(errors="replace")
        executed = 0
        for line in text.splitlines():
            if m := _STATUS_RE.match(line):
                executed = max(executed, int(m.group(1)))
                res.coverage, res.features, res.corpus = map(int, m.groups()[1:])
            elif m := _EXEC_RE.search(line) or _RANDOM_RE.match(line):
                executed = max(executed, int(m.group(1)))
        res.inputs += executed
        new = sorted(set(artifacts.iterdir()) - before)
        for a in new:
            kind = a.name.split("-", 1)[0]
            res.findings.append(
                {
                    "kind": kind,
                    "artifact": str(a.relative_to(ROOT)) if a.is_relative_to(ROOT) else str(a),
                    "input_hex": a.read_bytes()[:512].hex(),
                    "error": _error_summary(text),
                }
            )
        if proc.returncode == 0 and not new:
            break  # ran its inputs or its time
        if "libFuzzer: run interrupted" in text and not new:
            res.interrupted = True  # SIGINT (a person stopping a long run): not a finding
            break
        if not new:  # died without leaving an input: record it rather than loop
            res.findings.append(
                {
                    "kind": f"exit-{proc.returncode}",
                    "artifact": str(log_path),
                    "input_hex": "",
                    "error": _error_summary(text),
                }
            )
            break
    res.seconds = round(time.monotonic() - t0, 1)
    return res


def _error_summary(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line or line.startswith("random-engine: finding"):
            tail = [x for x in lines[i + 1 : i + 40] if x.strip()]
            errs = [x for x in tail if re.match(r"^\w[\w.]*(Error|Exception|Exit)\b", x)]
            return (errs[0] if errs else " ".join(tail[-1:]))[:300]
        if "ALARM: working on the last Unit" in line or "out-of-memory" in line:
            return line.strip()[:300]
    return ""


def cmd_fuzz(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    import fuzz_targets

    names = args.targets or list(fuzz_targets.TARGETS)
    unknown = [n for n in names if n not in fuzz_targets.TARGETS]
    if unknown:
        print(f"unknown targets {unknown}; known: {list(fuzz_targets.TARGETS)}", file=sys.stderr)
        return 2
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "random"
        if engine == "random":
            print("atheris is not installed: using the random engine (no coverage feedback)")
    results = []
    for name in names:
        r = _run_target(name, args, engine)
        results.append(r)
        print(f"{name}: {r.inputs} inputs in {r.seconds} s, findings {len(r.findings)}", flush=True)
    rows = [
        [
            r.name,
            r.inputs,
            r.seconds,
            r.coverage if r.coverage is not None else "-",
            r.features if r.features is not None else "-",
            len(r.findings),
        ]
        for r in results
    ]
    print()
    print_table(["target", "inputs", "seconds", "cov", "ft", "findings"], rows)
    for r in results:
        for f in r.findings:
            print(f"FINDING {r.name}: {f['kind']} {f['artifact']}: {f['error']}")
    section = {
        "date": _now(),
        "engine": engine,
        "engine_version": _engine_version(engine),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
        "inputs_requested": args.inputs,
        "seconds_limit": args.seconds,
        "timeout_s": args.timeout,
        "rss_limit_mb": args.rss_limit_mb,
        "max_len": args.max_len,
        "targets": [asdict(r) for r in results],
        "total_inputs": sum(r.inputs for r in results),
        "total_findings": sum(len(r.findings) for r in results),
    }
    if args.json:
        if args.targets:
            section = _merged(Path(args.json), section)
        write_section(Path(args.json), "fuzz", section)
        print(f"\nwrote the fuzz section of {args.json}")
    return 1 if section["total_findings"] else 0


def _merged(path: Path, section: dict) -> dict:
    """A run of some targets (``--targets``) replaces only their entries in the JSON's fuzz
    section: the others keep the figures of the run that produced them (each entry has its
    own date), so a target fixed and rerun after the campaign joins the campaign's figures."""
    try:
        old = json.loads(path.read_text()).get("fuzz") or {}
    except (OSError, ValueError):
        return section
    ran = {t["name"] for t in section["targets"]}
    kept = [t for t in old.get("targets", []) if t["name"] not in ran]
    out = {**section, "targets": kept + section["targets"]}
    if kept:
        out["date"] = old.get("date", section["date"])  # the campaign's; reruns carry theirs
    out["total_inputs"] = sum(t["inputs"] for t in out["targets"])
    out["total_findings"] = sum(len(t["findings"]) for t in out["targets"])
    return out


def _engine_version(engine: str) -> str:
    if engine != "atheris":
        return "random mutation (bench/faults.py)"
    try:
        from importlib.metadata import version

        return f"atheris {version('atheris')}"
    except Exception:
        return "atheris"


# ---------------------------------------------------------------------------------------------
# fuzz: worker side (runs in the subprocess)


def cmd_fuzz_worker(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=INSTRUMENT):
            import fuzz_targets
        target = fuzz_targets.TARGETS[args.name]
        prefix = next(
            (a.split("=", 1)[1] for a in args.rest if a.startswith("-artifact_prefix=")), ""
        )
        atheris.Setup([sys.argv[0], *args.rest], _keeping_input(target.fn, prefix))
        atheris.Fuzz()
        return 0
    import fuzz_targets

    target = fuzz_targets.TARGETS[args.name]
    runs, seconds, timeout, rss_mb, corpus, artifacts = args.rest
    return _random_engine(
        target.fn,
        int(runs),
        float(seconds),
        int(timeout),
        int(rss_mb),
        Path(corpus),
        Path(artifacts),
    )


def _keeping_input(fn, prefix: str):
    """Save the input before an exception leaves the target: libFuzzer writes the crash file
    itself, but not when the process dies some other way while reporting (seen with asyncio)."""

    def run(data: bytes) -> None:
        try:
            fn(data)
        except BaseException:
            if prefix:
                path = Path(f"{prefix}crash-{hashlib.sha1(data).hexdigest()}")
                if not path.exists():
                    path.write_bytes(data)
            raise

    return run


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(7)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2 and b:
            del b[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            other = rng.choice(pool)
            i = rng.randrange(len(other) + 1)
            b[pos:pos] = other[i : i + rng.randint(1, 64)]
        elif op == 4 and b:
            b[min(pos, len(b) - 1)] = rng.choice(b"\x00\xff\x7f\x80 ;,:<>/\"'{}[]0123456789-.e")
        elif op == 5:
            b[pos:pos] = rng.choice([b"[" * 2000, b"9" * 400, b"1e999", b"-0", b"\xc3\x28"])
        elif op == 6 and b:
            b = b[:pos] + b[pos:] * 2
    return bytes(b[:65536])


def _random_engine(
    fn, runs: int, seconds: float, timeout: int, rss_mb: int, corpus: Path, artifacts: Path
) -> int:
    """Random mutation of the corpus; the same finding rules as libFuzzer's, less clever."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (rss_mb * 2**20 * 4, resource.RLIM_INFINITY))
    pool = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.is_file()] or [b""]
    rng = random.Random(1)

    def on_alarm(signum, frame):
        raise TimeoutError(f"input took more than {timeout} s")

    signal.signal(signal.SIGALRM, on_alarm)
    t0, n = time.monotonic(), 0
    while n < runs and time.monotonic() - t0 < seconds:
        data = pool[n] if n < len(pool) else _mutate(rng, rng.choice(pool), pool)
        n += 1
        signal.alarm(timeout)
        try:
            fn(data)
        except BaseException as e:
            signal.alarm(0)
            kind = (
                "timeout"
                if isinstance(e, TimeoutError)
                else "oom"
                if isinstance(e, MemoryError)
                else "crash"
            )
            path = artifacts / f"{kind}-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            print(f"random-engine: inputs {n}")
            print("random-engine: finding")
            traceback.print_exc(file=sys.stdout)
            print(f"{type(e).__name__}: {e}")
            return 1
        signal.alarm(0)
    print(f"random-engine: inputs {n}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    fz = sub.add_parser("fuzz", help="fuzz every parser that takes bytes from outside")
    fz.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    fz.add_argument("--seconds", type=float, default=6 * 3600, help="time limit per target")
    fz.add_argument("--quick", action="store_true", help="CI: 3 s per target")
    fz.add_argument("--targets", nargs="*", help="default: all")
    fz.add_argument("--timeout", type=int, default=10, help="per-input limit, s (a hang)")
    fz.add_argument("--rss-limit-mb", type=int, default=1024)
    fz.add_argument("--max-len", type=int, default=8192, help="longest input, bytes")
    fz.add_argument("--seed", type=int, default=1)
    fz.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    fz.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="corpus cache (not committed)")
    fz.add_argument("--artifacts", default=str(DEFAULT_ARTIFACTS))
    fz.add_argument("--json", default=str(DEFAULT_JSON), help="'' to write nothing")
    fz.set_defaults(run=_run_fuzz)
    wk = sub.add_parser("_fuzz-worker", help=argparse.SUPPRESS)
    wk.add_argument("name")
    wk.add_argument("--engine", default="atheris")
    wk.add_argument("rest", nargs=argparse.REMAINDER)
    wk.set_defaults(run=_run_worker)


def _run_fuzz(args: argparse.Namespace) -> int:
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
    return cmd_fuzz(args)


def _run_worker(args: argparse.Namespace) -> int:
    if args.rest[:1] == ["--"]:
        args.rest = args.rest[1:]
    return cmd_fuzz_worker(args)
