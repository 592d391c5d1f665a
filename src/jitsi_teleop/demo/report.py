"""The demo's report: figures from the sites' time series, plots, summary.json, summary text.

Tracking is the distance between the leader's and the follower's tool tips at the same instant
(both sites share CLOCK_MONOTONIC), so it includes the link delay and the follower's playout
delay; it is measured outside the contact window, where the tips differ by design (the follower
is held by the table, the leader is not). The contact force at the follower is its estimate
from the servo deflection (what it sends); the force at the leader is the tip force its
rendered torque amounts to (after scale, saturation and the passivity controller).

What a healthy run looks like (checked by test/test_demo.py): RMS tip error outside contact
below :data:`TRACKING_RMS_BOUND_MM`, and a peak force rendered at the leader of at least
:data:`FEEDBACK_MIN_RATIO` of the follower's peak contact force (the feedback scale is 0.5).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .scenario import Scenario

__all__ = [
    "FEEDBACK_MIN_RATIO",
    "TRACKING_RMS_BOUND_MM",
    "Series",
    "build_report",
    "format_summary",
    "load_series",
    "percentile",
]

#: RMS tool-tip error outside contact that a healthy run stays under, mm. Measured on two
#: cores: 3.2 mm at the default 20 s, 5.0 mm at 20 s with 40 ± 10 ms and 5 % loss, about 9 mm
#: at 10 s (the test's length: the hand moves twice as fast). Nearly all of it is the follower
#: being 60-90 ms behind (playout delay, servo lag, link); shifted by that lag the tips agree
#: within 0.2-2.5 mm. Margin ×2 over the 10 s figure.
TRACKING_RMS_BOUND_MM = 20.0
#: peak leader force / peak follower force a healthy run reaches: measured 0.41-0.52 (the
#: feedback scale is 0.5, less the deadband and what the passivity controller takes); ×2 margin
FEEDBACK_MIN_RATIO = 0.2

FloatArray = NDArray[np.float64]


@dataclass
class Series:
    """One CSV as columns; ``text`` columns stay strings."""

    columns: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def __len__(self) -> int:
        first = next(iter(self.columns.values()), [])
        return len(first)


def load_series(path: Path, text: Sequence[str] = ()) -> Series:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    cols: dict[str, Any] = {}
    for i, name in enumerate(header):
        values = [r[i] for r in body]
        cols[name] = values if name in text else np.asarray(values, dtype=float)
    return Series(cols)


def percentile(values: Sequence[float] | FloatArray, p: float) -> float | None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.percentile(v, p)) if v.size else None


def _tips(s: Series) -> FloatArray:
    return np.column_stack([s["tip_x"], s["tip_y"], s["tip_z"]])


def _follower_tip_at(leader: Series, follower: Series, lag_s: float = 0.0) -> FloatArray:
    ft = _tips(follower)
    t = leader["t"] + lag_s
    return np.column_stack([np.interp(t, follower["t"], ft[:, i]) for i in range(3)])


def _tracking(
    leader: Series, follower: Series, scenario: Scenario, bound_mm: float
) -> dict[str, Any]:
    t = leader["t"]
    ok = (t >= follower["t"][0]) & (t <= follower["t"][-1])
    free = ok & scenario.outside_contact(t)
    err = 1e3 * np.linalg.norm(_follower_tip_at(leader, follower) - _tips(leader), axis=1)
    out: dict[str, Any] = {
        "rms_mm": float(np.sqrt(np.mean(err[free] ** 2))) if free.any() else None,
        "max_mm": float(err[free].max()) if free.any() else None,
        "rms_mm_all": float(np.sqrt(np.mean(err[ok] ** 2))) if ok.any() else None,
        "samples": int(free.sum()),
        "bound_rms_mm": bound_mm,
        "window": "outside contact: t < {:.2f} s or t >= {:.2f} s".format(*scenario.contact_window),
    }
    best = (math.inf, 0.0)
    for lag in np.arange(0.0, 0.3001, 0.005):  # how late the follower is, on average
        e = np.linalg.norm(_follower_tip_at(leader, follower, lag) - _tips(leader), axis=1)
        sel = free & (t + lag <= follower["t"][-1])
        if sel.any():
            best = min(best, (float(np.sqrt(np.mean(e[sel] ** 2))) * 1e3, float(lag)))
    out["best_lag_ms"] = best[1] * 1e3
    out["rms_mm_at_best_lag"] = best[0] if math.isfinite(best[0]) else None
    return out


def _topic_values(rows: Series, topic: str, column: str = "latency_ms") -> FloatArray:
    sel = np.asarray([tp == topic for tp in rows["topic"]], dtype=bool)
    return np.asarray(rows[column], dtype=float)[sel] if len(rows) else np.zeros(0)


def _latency(rows: Series, topic: str) -> dict[str, Any]:
    sel = np.asarray([tp == topic for tp in rows["topic"]], dtype=bool)
    est, true = rows["latency_ms"][sel], rows["true_latency_ms"][sel]
    paths = [p for p, s in zip(rows["path"], sel) if s]
    return {
        "topic": topic,
        "messages": int(sel.sum()),
        "p50_ms": percentile(est, 50),
        "p99_ms": percentile(est, 99),
        "max_ms": percentile(est, 100),
        "true_p50_ms": percentile(true, 50),
        "true_p99_ms": percentile(true, 99),
        "p2p_fraction": paths.count("p2p") / len(paths) if paths else 0.0,
    }


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }


def build_report(
    out: Path,
    scenario: Scenario,
    sites: dict[str, dict[str, Any]],
    options: dict[str, Any],
    extra: dict[str, Any],
    tracking_bound_mm: float = TRACKING_RMS_BOUND_MM,
) -> dict[str, Any]:
    """Read the sites' CSVs in ``out``, write the plots and summary.json; return the summary.
    ``tracking_bound_mm``: the RMS a healthy run stays under (``--ros`` has its own)."""
    leader = load_series(out / "leader.csv")
    follower = load_series(out / "follower.csv")
    lat_f = load_series(out / "latency_follower.csv", text=("topic", "path"))
    lat_l = load_series(out / "latency_leader.csv", text=("topic", "path"))
    l2f = _latency(lat_f, "/joint_states")
    f2l = _latency(lat_l, "/teleop/feedback")
    both = np.concatenate(
        [_topic_values(lat_f, "/joint_states"), _topic_values(lat_l, "/teleop/feedback")]
    )
    peak_f = float(follower["est_force"].max(initial=0.0))
    peak_l = float(leader["rendered_force"].max(initial=0.0))
    sent = {r: int(sites[r].get("sent", 0)) for r in sites}
    streams = {r: sites[r].get("streams", {}) for r in sites}
    received = sum(c["received"] for s in streams.values() for c in s.values())
    dropped = sum(c["lost"] for s in streams.values() for c in s.values())
    discarded = sum(c["discarded"] for s in streams.values() for c in s.values())
    paths = {r: sites[r].get("path") for r in sites}
    summary: dict[str, Any] = {
        "ok": True,
        "path": paths["leader"] if paths["leader"] == paths["follower"] else "mixed",
        "paths": paths,
        "tracking": _tracking(leader, follower, scenario, tracking_bound_mm),
        "contact": {
            "peak_follower_n": peak_f,
            "peak_wall_n": float(follower["wall_force"].max(initial=0.0)),
            "peak_leader_n": peak_l,
            "leader_to_follower_ratio": peak_l / peak_f if peak_f > 0 else None,
            "min_ratio": FEEDBACK_MIN_RATIO,
            "window_s": list(scenario.contact_window),
        },
        "latency": {
            "p50_ms": percentile(both, 50),
            "p99_ms": percentile(both, 99),
            "leader_to_follower": l2f,
            "follower_to_leader": f2l,
            "note": "one-way, the session's estimate (clock offset over the link); true_*: "
            "measured on the shared CLOCK_MONOTONIC of the two site processes",
        },
        "messages": {
            "sent": sum(sent.values()),
            "received": received,
            "dropped": dropped,
            "dropped_note": "sent but not delivered: lost on the way, or discarded on arrival "
            "(superseded by a newer sample, or stale)",
            "discarded_on_arrival": discarded,
            "by_site": {r: {"sent": sent[r], "received": streams[r]} for r in sites},
            **accounting(sites),
        },
        "scenario": {
            "duration_s": scenario.duration_s,
            "phases": [[p.name, p.start, p.end] for p in scenario.phases],
            "table_z_m": scenario.wall.offset,
        },
        "pairing": _pairing(sites),
        "options": options,
        "sites": sites,
        "machine": machine_info(),
        **extra,
    }
    summary["checks"] = _checks(summary)
    _plots(out, scenario, leader, follower, lat_f, lat_l, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def accounting(sites: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every message the publishers handed to a transport, per topic and direction:
    ``taken`` = ``received`` + ``lost`` (on the way) + ``discarded`` (on arrival: superseded
    or stale) + ``superseded`` (before sending: the shaper's newest-wins, or the link's
    buffer was busy) + ``not_sent`` (no path yet) + ``errors`` + ``unaccounted`` (what none of
    the counters explains; 0 when the counts come from a clean cut)."""
    rows: dict[str, dict[str, int]] = {}
    total: dict[str, int] = {}
    for role, site in sites.items():
        peer = sites.get("follower" if role == "leader" else "leader", {})
        received = peer.get("streams_by_remote") or peer.get("streams", {})
        for topic, o in site.get("out", {}).items():
            r = received.get(topic, {"received": 0, "lost": 0, "discarded": 0})
            taken, sent = o.get("taken", 0), o.get("sent", 0)
            # lost on the way: sent, neither delivered nor discarded on arrival (at a clean
            # cut nothing is in flight); negative would mean more arrived than was sent
            lost = sent - r["received"] - r["discarded"]
            row = {
                "taken": taken,
                "received": r["received"],
                "lost": max(0, lost),
                "discarded": r["discarded"],
                "superseded": o.get("coalesced", 0) + o.get("link_busy", 0),
                "not_sent": o.get("not_sent", 0),
                "errors": o.get("errors", 0),
            }
            explained = sum(v for k, v in row.items() if k != "taken")
            row["unaccounted"] = taken - explained
            # the receiver's own count of sequence gaps (includes frames discarded on arrival
            # and the sender's newest-wins drops; summed over paths, so it double-counts
            # around a path switch): shown, not used
            row["gaps_seen"] = r["lost"]
            rows[f"{role}: {topic}"] = row
            for k, v in row.items():
                total[k] = total.get(k, 0) + v
    return {
        "by_topic": rows,
        "accounted": total,
        "accounted_note": "taken (handed to the transport by the publishers) = received + "
        "lost (on the way) + discarded (on arrival: superseded or stale) + superseded (before "
        "sending: newest wins at the rate limit or while the link's buffer is busy) + not_sent "
        "(no path yet) + errors + unaccounted; lost = sent - received - discarded, at a "
        "clean cut (--ros: the publishers stop, then the transports report); gaps_seen: the "
        "receiver's own sequence-gap count, for comparison",
    }


def _checks(s: dict[str, Any]) -> dict[str, bool]:
    """What a healthy run shows (the bounds above); informative: the run itself worked."""
    tr, c = s["tracking"], s["contact"]
    ratio = c["leader_to_follower_ratio"]
    return {
        "tracking_within_bound": tr["rms_mm"] is not None and tr["rms_mm"] < tr["bound_rms_mm"],
        "force_fed_back": ratio is not None and ratio > FEEDBACK_MIN_RATIO,
        "data_channel": s["path"] == "p2p",
    }


def _shade(ax: Any, scenario: Scenario) -> None:
    a, b = scenario.contact_window
    ax.axvspan(a, b, color="0.9", zorder=0, label="contact phase")


def _plots(
    out: Path,
    scenario: Scenario,
    leader: Series,
    follower: Series,
    lat_f: Series,
    lat_l: Series,
    summary: dict[str, Any],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(5, 1, sharex=True, figsize=(9, 9))
    for i, ax in enumerate(axes, start=1):
        _shade(ax, scenario)
        ax.plot(leader["t"], leader[f"q{i}"], label="leader")
        ax.plot(follower["t"], follower[f"q{i}"], "--", label="follower")
        ax.set_ylabel(f"J{i} (rad)")
    axes[0].legend(loc="upper right", fontsize="small")
    axes[0].set_title("Joint angles: leader (operator) vs follower (remote)")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(out / "joints.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for series, topic, label in (
        (lat_f, "/joint_states", "leader → follower (/joint_states)"),
        (lat_l, "/teleop/feedback", "follower → leader (/teleop/feedback)"),
    ):
        v = _topic_values(series, topic)
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(v, bins=60, alpha=0.6, label=f"{label}, n={v.size}")
    lat = summary["latency"]
    for key, style in (("p50_ms", "-"), ("p99_ms", ":")):
        if lat[key] is not None:
            label = f"{lat.get('lines_label', '')}{key[:3]} {lat[key]:.1f} ms"
            ax.axvline(lat[key], color="k", ls=style, lw=1, label=label)
    ax.set_xlabel(lat.get("histogram_label", "one-way latency (ms, session estimate)"))
    ax.set_ylabel("messages")
    ax.set_title(f"Latency over the {summary['path']} path")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    _shade(ax, scenario)
    ax.plot(follower["t"], follower["wall_force"], color="0.5", lw=1, label="wall force (sim)")
    ax.plot(follower["t"], follower["est_force"], label="estimated at follower (sent)")
    ax.plot(leader["t"], leader["rendered_force"], label="rendered at leader")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("tip force (N)")
    ax.set_title("Contact force: follower estimate vs force rendered on the leader")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "force.png", dpi=90)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    _shade(ax1, scenario)
    _shade(ax2, scenario)
    ax1.plot(leader["t"], 1e3 * leader["tip_z"], label="leader tip z")
    ax1.plot(follower["t"], 1e3 * follower["tip_z"], "--", label="follower tip z")
    ax1.plot(leader["t"], 1e3 * leader["hand_z"], ":", label="hand (script)")
    ax1.axhline(1e3 * scenario.wall.offset, color="k", lw=0.8, label="table (follower only)")
    ax1.set_ylabel("height (mm)")
    ax1.legend(fontsize="small", loc="lower left")
    err = 1e3 * np.linalg.norm(_follower_tip_at(leader, follower) - _tips(leader), axis=1)
    ax2.plot(leader["t"], err)
    ax2.set_ylabel("tip error (mm)")
    ax2.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(out / "tracking.png", dpi=90)
    plt.close(fig)


def _fmt(v: Any, fmt: str = ".1f") -> str:
    return "–" if v is None else f"{v:{fmt}}"


def _pairing(sites: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per site: seconds from joining the room to paired and to the fast path, and what it
    refused from the room (by reason; ``unproven_claimants``: occupants that claimed the
    peer's role and could not prove it)."""
    out: dict[str, Any] = {}
    for role, site in sites.items():
        p = site.get("pairing") or {}
        refusals = {k: v for k, v in (p.get("refusals") or {}).items() if v}
        out[role] = {
            "join_to_paired_s": (p.get("timings") or {}).get("join_to_paired_s"),
            "join_to_fast_path_s": (p.get("timings") or {}).get("join_to_fast_path_s"),
            "refused": {
                k: v
                for k, v in refusals.items()
                if k not in ("unproven_claimants", "candidates", "offers")
            },
            "unproven_claimants": refusals.get("unproven_claimants", 0),
        }
    return out


def _pairing_line(s: dict[str, Any]) -> str | None:
    p = s.get("pairing")
    if not p:
        return None
    parts = []
    for role in ("leader", "follower"):
        r = p.get(role)
        if r is None:
            continue
        refused = ", ".join(f"{k} {v}" for k, v in sorted(r["refused"].items())) or "nothing"
        parts.append(
            f"{role} paired {_fmt(r['join_to_paired_s'], '.2f')} s, fast path "
            f"{_fmt(r['join_to_fast_path_s'], '.2f')} s after joining; refused {refused}; "
            f"impostors {r['unproven_claimants']}"
        )
    return "pairing: " + " | ".join(parts) if parts else None


def format_summary(s: dict[str, Any], out: Path) -> str:
    tr, c, lat, msg = s["tracking"], s["contact"], s["latency"], s["messages"]
    cpu = s.get("cpu", {})
    lines = [
        f"path: {s['path']}   duration {s['scenario']['duration_s']:g} s"
        + (f"   route: {s['route'].get('follower')}" if s.get("route") else ""),
        f"tracking error (tool tip, outside contact): RMS {_fmt(tr['rms_mm'])} mm, "
        f"max {_fmt(tr['max_mm'])} mm (bound {tr['bound_rms_mm']:g} mm RMS; "
        f"follower {_fmt(tr['best_lag_ms'], '.0f')} ms behind: RMS {_fmt(tr['rms_mm_at_best_lag'])}"
        " mm)",
        f"contact: peak force at follower {_fmt(c['peak_follower_n'])} N "
        f"(wall {_fmt(c['peak_wall_n'])} N), rendered at leader {_fmt(c['peak_leader_n'])} N",
        f"latency one-way: p50 {_fmt(lat['p50_ms'], '.2f')} ms, p99 {_fmt(lat['p99_ms'], '.2f')} ms"
        f" (leader→follower p50 {_fmt(lat['leader_to_follower']['p50_ms'], '.2f')}, "
        f"follower→leader p50 {_fmt(lat['follower_to_leader']['p50_ms'], '.2f')})",
        f"messages: sent {msg['sent']}, received {msg['received']}, dropped {msg['dropped']} "
        f"({msg['discarded_on_arrival']} of them superseded or stale on arrival)",
    ]
    acc = msg.get("accounted")
    if acc:
        lines.append(
            f"accounted: {acc['taken']} taken by the transports = {acc['received']} received "
            f"+ {acc['lost']} lost + {acc['discarded']} discarded on arrival + "
            f"{acc['superseded']} superseded before sending + {acc['not_sent']} not sent "
            f"(no path yet) + {acc['errors']} errors + {acc['unaccounted']} unaccounted "
            "(per topic in summary.json)"
        )
    pairing = _pairing_line(s)
    if pairing:
        lines.append(pairing)
    if cpu:
        lines.append("cpu: " + ", ".join(f"{k} {v:.0f}%" for k, v in cpu.items() if v is not None))
    ros = s.get("ros")
    if ros and ros.get("skipped"):
        lines.append(f"skipped {', '.join(ros['skipped'])}: {ros['skipped_note']}")
    lost = sum((ros or {}).get("robot_reconnects", {}).values())
    if lost:
        lines.append(f"the drivers lost their simulators {lost} times (1 s timeout; CPU short?)")
    failed = [k for k, ok in s.get("checks", {}).items() if not ok]
    if failed:
        lines.append("not as a healthy run: " + ", ".join(failed))
    lines.append(f"report: {out}/ (summary.json, joints/latency/force/tracking.png, CSV data)")
    return "\n".join(lines)
