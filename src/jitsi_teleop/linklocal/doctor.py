"""``jitsi-teleop doctor lan:NAME``: which link-local sites can this machine see, and why can
one not be used?

It browses ``_presence._tcp`` for a while without announcing anything, lists every service
(role, key id, addresses), and for each says why it cannot be this site's peer: another LAN
room, a malformed record, a name two hosts claim, the same role as ours (``--role``), another
key (``--secret-file``), or a stream port that does not answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .dnssd import DirectoryConfig, LanDirectory, local_addresses
from .txt import check_lan_room

REASONS = {
    "other_room": "announces another LAN room",
    "same_role": "has the same role as this site",
    "key_mismatch": "holds another pairing key (key id differs from this site's)",
    "name_conflict": "more than one host announces this name",
    "not_teleop": "an ordinary XEP-0174 client, not a jitsi-teleop site",
    "txt_malformed": "its TXT record is malformed",
    "txt_oversized": "its TXT record is oversized",
    "no_txt": "no TXT record",
    "unresolved": "its address could not be resolved",
    "tcp_unreachable": "its stream port does not accept connections",
}


@dataclass
class LanDoctorReport:
    ok: bool = False
    kind: str = "ok"
    reason: str = ""
    room: str = ""
    addresses: list[str] = field(default_factory=list)
    peers: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "usage": 2, "unreachable": 3, "check": 9}.get(self.kind, 10)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d

    def human(self) -> str:
        lines = [
            f"LAN room {self.room}: {len(self.peers)} link-local service(s) seen on "
            f"{', '.join(self.addresses)} in {self.elapsed_s:.1f} s"
        ]
        for p in self.peers:
            verdict = "usable" if p["usable"] else f"not usable: {p['why']}"
            lines.append(
                f"  {p['instance']:<32} {p['role'] or '-':<9} key {p['key_id'] or '-':<12} "
                f"{', '.join(p['addresses']) or '-':<22} {verdict}"
            )
        if self.counters:
            refused = ", ".join(f"{k} {v}" for k, v in sorted(self.counters.items()))
            lines.append(f"  refused announcements: {refused}")
        return "\n".join(lines)


async def run_lan_doctor(
    room: str,
    *,
    role: str | None = None,
    key_id: str | None = None,
    addresses: list[str] | None = None,
    browse_s: float = 4.0,
) -> LanDoctorReport:
    t0 = time.monotonic()
    report = LanDoctorReport()
    try:
        name = check_lan_room(room[4:] if room.startswith("lan:") else room)
    except ValueError as e:
        report.kind, report.reason = "usage", str(e)
        return report
    report.room = f"lan:{name}"
    addrs = list(addresses or local_addresses())
    report.addresses = addrs
    if not addrs:
        report.kind, report.reason = "unreachable", "no IPv4 interface to browse on"
        return report
    directory = LanDirectory(DirectoryConfig(addresses=addrs))
    try:
        await directory.start(None)
        await asyncio.sleep(browse_s)
        peers = list(directory.peers.values())
        report.counters = dict(directory.counters)
    except OSError as e:
        report.kind, report.reason = "unreachable", f"cannot use multicast DNS: {e}"
        return report
    finally:
        await directory.close()
    want = {"leader": "follower", "follower": "leader"}.get(role or "")
    for p in sorted(peers, key=lambda p: p.instance):
        pr = p.presence
        why = p.problem
        if why is None and pr is not None and pr.room != name:
            why = "other_room"
        if why is None and len(p.addresses) > 1:
            why = "name_conflict"
        if why is None and pr is not None and want is not None and pr.role != want:
            why = "same_role"
        if why is None and pr is not None and key_id and pr.key_id != key_id:
            why = "key_mismatch"
        if why is None and p.endpoints and not await _tcp_open(*p.endpoints[0]):
            why = "tcp_unreachable"
        report.peers.append(
            {
                "instance": p.instance,
                "role": pr.role if pr else None,
                "key_id": pr.key_id if pr else None,
                "robot": pr.robot if pr else None,
                "room": pr.room if pr else None,
                "addresses": [f"{a}:{port}" for a, port in p.endpoints],
                "usable": why is None,
                "problem": why,
                "why": REASONS.get(why or "", why or ""),
            }
        )
    report.elapsed_s = time.monotonic() - t0
    if not any(p["usable"] for p in report.peers):
        report.kind = "check"
        report.reason = f"no usable peer in {report.room}" + (
            f" ({len(report.peers)} other service(s) seen)" if report.peers else ""
        )
        return report
    report.ok = True
    return report


async def _tcp_open(host: str, port: int) -> bool:
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (OSError, asyncio.TimeoutError):
        return False
    w.close()
    return True
