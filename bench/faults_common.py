"""Shared by the parts of the fault campaign (bench/faults.py): where results go, how a part
replaces its own section of faults.json, and the plain-text tables every part prints."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_JSON = HERE / "results" / "faults.json"


def stamp() -> dict[str, str]:
    """When and where a part ran: every section carries it, since parts run at different times."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
    }


def write_section(path: Path, name: str, section: dict) -> None:
    """Replace one part's section of the campaign JSON, keeping the other parts' figures."""
    doc: dict = {}
    if path.exists():
        with contextlib.suppress(ValueError):
            doc = json.loads(path.read_text())
    doc[name] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
