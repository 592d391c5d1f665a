#!/usr/bin/env python3
"""Fault campaign (issue 18): cuts, restarts, fuzzing and a soak, as figures.

Each part is a sub-command, in a module of its own (``bench/faults_<part>.py``), that prints a
table and replaces its own section of bench/results/faults.json, so parts run alone and their
figures accumulate. ``faults.py all`` (``make faults``) runs every part's full campaign in turn;
CI runs ``--quick`` versions from pytest.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: the campaign's parts, in the order ``all`` runs them (each module has ``add_parser(sub)``)
PARTS = ["fuzz", "cuts", "server", "robot", "soak"]
#: the runs ``all`` makes of a part (default: one, with no options): cuts on both fast paths
RUNS = {"cuts": [[], ["--nat", "symmetric"]]}


def _run_all(args: argparse.Namespace) -> int:
    """Every part in a process of its own, so one part's crash or leak cannot skew the next."""
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        print(f"unknown parts {unknown}; known: {PARTS}", file=sys.stderr)
        return 2
    failed = []
    for part in args.parts or PARTS:
        for opts in RUNS.get(part, [[]]):
            label = " ".join([part, *opts])
            print(f"\n=== faults: {label} ===", flush=True)
            rc = subprocess.call([sys.executable, str(HERE / "faults.py"), part, *opts])
            if rc:
                failed.append(f"{label} (exit {rc})")
    if failed:
        print(f"\nparts that failed: {', '.join(failed)}")
    return 1 if failed else 0


def _modules_for(argv: list[str]) -> list[str]:
    """The part modules a command needs: only its own. Importing every part would import the
    project's packages before the fuzz worker instruments them (atheris instruments only what
    is imported inside ``instrument_imports``), and the fuzzer would run blind."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first == "_fuzz-worker":
        return ["fuzz"]
    return [first] if first in PARTS else PARTS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    for part in _modules_for(argv):
        importlib.import_module(f"faults_{part}").add_parser(sub)
    al = sub.add_parser("all", help="every part's full campaign, one after the other")
    al.add_argument("parts", nargs="*", help=f"default: all of {', '.join(PARTS)}")
    al.set_defaults(run=_run_all)
    args = ap.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
