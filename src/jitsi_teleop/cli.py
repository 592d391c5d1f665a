"""``jitsi-teleop`` command line: argument parsing and wiring only.

Subcommands register themselves in ``build_parser``; each has a ``run`` function that returns
the process exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check that a Jitsi room (or plain XMPP MUC) works for teleoperation",
        description="Connect, join, list teleop endpoints, report STUN/TURN and round trips. "
        "Exit status 0 when everything worked; otherwise a one-line reason.",
    )
    p.add_argument(
        "meeting_url",
        nargs="?",
        help="meeting URL, e.g. https://meet.example.org/MyRoom (reads config.js); or "
        "lan:NAME: list the link-local (XEP-0174) sites on this LAN and why one is unusable",
    )
    p.add_argument("--websocket", help="XMPP WebSocket URL (ws:// or wss://)")
    p.add_argument(
        "--bosh",
        help="XMPP BOSH URL (http:// or https://, e.g. https://HOST/http-bind): use BOSH "
        "(with --websocket: only if the WebSocket cannot be opened)",
    )
    p.add_argument("--tcp", metavar="HOST:PORT", help="plain XMPP over TCP instead")
    p.add_argument("--domain", help="XMPP domain (hosts.domain)")
    p.add_argument("--muc", help="MUC domain (default conference.<domain>)")
    p.add_argument("--room", help="room name (default: from the meeting URL)")
    p.add_argument("--focus", help="focus component JID (default focus.<domain> with a URL)")
    p.add_argument("--no-focus", action="store_true", help="do not send the conference IQ")
    p.add_argument("--password", help="room password")
    p.add_argument("--token", help="JWT for token-authenticated deployments")
    p.add_argument(
        "--jid",
        help="log in with this account (user@domain) instead of anonymously; password from "
        "--password-file or $JITSI_TELEOP_XMPP_PASSWORD(_FILE)",
    )
    p.add_argument("--password-file", help="file whose first line is the account's password")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify TLS certificates (self-signed test servers only)",
    )
    p.add_argument("--timeout", type=float, default=20.0, help="overall time limit (s)")
    p.add_argument(
        "--require-turn", action="store_true", help="fail when the server announces no TURN server"
    )
    p.add_argument(
        "--no-ice-check",
        action="store_true",
        help="skip gathering with the STUN/TURN servers and the call through the TURN relay",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="log XMPP details to stderr")
    lan = p.add_argument_group("with lan:NAME")
    lan.add_argument("--role", choices=("leader", "follower"), help="this site's role")
    lan.add_argument("--secret-file", help="this site's pairing key: flag peers with another")
    lan.add_argument(
        "--lan-address", action="append", help="IPv4 address to browse on (repeatable)"
    )
    lan.add_argument("--browse", type=float, default=4.0, help="seconds to listen (default 4)")
    p.set_defaults(run=_run_doctor)


def _run_lan_doctor(args: argparse.Namespace) -> int:
    from .linklocal.doctor import run_lan_doctor

    key_id = None
    if args.secret_file:
        from .pairing import load_secret

        key_id = load_secret(key_file=args.secret_file).key_id
    report = asyncio.run(
        run_lan_doctor(
            args.meeting_url,
            role=args.role,
            key_id=key_id,
            addresses=args.lan_address,
            browse_s=args.browse,
        )
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.human())
    if not report.ok:
        print(f"jitsi-teleop doctor: {report.kind}: {report.reason}", file=sys.stderr)
    return report.exit_code


def _run_doctor(args: argparse.Namespace) -> int:
    if (args.meeting_url or "").startswith("lan:"):
        return _run_lan_doctor(args)
    from .room.account import AccountError, load_account
    from .room.doctor import DoctorOptions, run_doctor

    try:
        account = load_account(args.jid or "", args.password_file or "")
    except AccountError as e:
        print(f"jitsi-teleop doctor: usage: {e}", file=sys.stderr)
        return 2
    opts = DoctorOptions(
        account=account,
        meeting_url=args.meeting_url,
        websocket=args.websocket,
        bosh=args.bosh,
        tcp=args.tcp,
        domain=args.domain,
        muc=args.muc,
        room=args.room,
        focus=args.focus,
        no_focus=args.no_focus,
        password=args.password,
        token=args.token,
        insecure=args.insecure,
        timeout=args.timeout,
        require_turn=args.require_turn,
        ice_check=not args.no_ice_check,
    )
    report = asyncio.run(run_doctor(opts))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.human())
    if not report.ok:
        print(f"jitsi-teleop doctor: {report.kind}: {report.reason}", file=sys.stderr)
    return report.exit_code


def _add_keygen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="write a new pairing key file (give the same file to both sites)",
        description="Write a random 32-byte pairing key, readable by the owner only. Both sites "
        "need the same file (copy it over a channel you trust); the room never sees it.",
    )
    p.add_argument("path", help="where to write the key (never overwritten)")
    p.set_defaults(run=_run_keygen)


def _run_keygen(args: argparse.Namespace) -> int:
    from .pairing import generate_key_file

    try:
        secret = generate_key_file(args.path)
    except FileExistsError:
        print(f"jitsi-teleop keygen: {args.path} exists; not overwriting it", file=sys.stderr)
        return 1
    print(f"wrote {args.path} (key id {secret.key_id})")
    return 0


def _add_server(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "server",
        help="run a private Jitsi-like Prosody on loopback (for trying it out on one machine)",
        description="A throwaway Prosody configured like a Jitsi deployment's (anonymous login, "
        "MUC, WebSocket, 10 kB/s limit), listening on 127.0.0.1 only, until Ctrl-C.",
    )
    p.add_argument("--domain", default="meet.local", help="XMPP domain")
    p.add_argument("--http-port", type=int, default=5280, help="HTTP/WebSocket port")
    p.add_argument("--c2s-port", type=int, default=5222, help="XMPP client port")
    p.set_defaults(run=_run_server)


def _run_server(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .local_prosody import ProsodyServer, free_port, prosody_available

    if not prosody_available():
        print("jitsi-teleop server: prosody is missing (apt install prosody)", file=sys.stderr)
        return 1
    srv = ProsodyServer(
        domain=args.domain,
        http_port=args.http_port,
        c2s_port=args.c2s_port,
        component_port=free_port(),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        srv.start()
    except RuntimeError as e:
        print(f"jitsi-teleop server: {e}", file=sys.stderr)
        srv.cleanup()
        return 1
    print(
        f"prosody for {args.domain}: {srv.websocket_url}, BOSH {srv.bosh_url} "
        f"and xmpp 127.0.0.1:{args.c2s_port}"
    )
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            if srv.proc is None or srv.proc.poll() is not None:
                print(f"jitsi-teleop server: prosody exited\n{srv.tail()}", file=sys.stderr)
                return 1
    finally:
        srv.cleanup()
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="two simulated Dexters teleoperated through a local room, with a report",
        description="Start a private Prosody on loopback ports, a leader and a follower Dexter "
        "simulator and a session per site; a scripted operator hand moves the leader, the "
        "follower meets a table and its contact force is rendered on the leader. Live status "
        "while it runs; plots, CSV and summary.json in the report folder at the end. Exit "
        "status 0 on success; otherwise a one-line reason.",
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds (default 20, min 6)")
    p.add_argument("--report", default="demo-report", help="report folder (default demo-report)")
    p.add_argument("--delay", type=float, default=0.0, help="one-way delay on the P2P path, ms")
    p.add_argument("--jitter", type=float, default=0.0, help="± jitter on the P2P path, ms")
    p.add_argument("--loss", type=float, default=0.0, help="loss on the P2P path, percent")
    p.add_argument(
        "--room",
        metavar="URL",
        help="run through this Jitsi meeting's deployment instead of a local server "
        "(a random suffix is added to the room name)",
    )
    p.add_argument("--insecure", action="store_true", help="with --room: skip TLS verification")
    p.add_argument("--seed", type=int, default=1, help="seed of the relay's loss and jitter")
    p.add_argument("--no-status", action="store_true", help="no live status while running")
    p.add_argument(
        "--ros",
        action="store_true",
        help="run each site as the ROS 2 nodes teleop.launch.py starts (simulator, driver, "
        "transport, teleop; two ROS domains) instead of the in-process core; same script and "
        "report; --delay/--jitter/--loss act on the transports' fast path. Not with --room",
    )
    p.add_argument(
        "--network",
        metavar="NAT",
        help="run the two sites behind simulated NATs in network namespaces (root): "
        "cone, full-cone, port-restricted or symmetric for both, A/B per site (e.g. "
        "cone/symmetric), or blocked (no direct UDP: TURN only); --delay/--jitter/--loss "
        "then act on the simulated internet's router",
    )
    p.add_argument(
        "--lan",
        action="store_true",
        help="no server: the sites find each other over multicast DNS on loopback and pair "
        "over XEP-0174 link-local streams (room lan:demo-...). Not with --room or --ros",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import DemoOptions, run_demo

    opts = DemoOptions(
        duration_s=args.duration,
        report_dir=Path(args.report),
        delay_ms=args.delay,
        jitter_ms=args.jitter,
        loss_pct=args.loss,
        room_url=args.room,
        seed=args.seed,
        status=not args.no_status,
        insecure=args.insecure,
        ros=args.ros,
        network=args.network,
        lan=args.lan,
    )
    return run_demo(opts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jitsi-teleop", description="Teleoperate a robot arm through a Jitsi Meet room."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_doctor(sub)
    _add_demo(sub)
    _add_keygen(sub)
    _add_server(sub)
    _add_log(sub)
    bench = sub.add_parser(
        "bench",
        help="fast-path benchmark: data channel, datagrams, raw UDP and zenoh, two processes",
        add_help=False,
    )
    bench.set_defaults(run=None, bench=True)
    return parser


def _add_log(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "log",
        help="print a site's event log (the SQLite file the transport node keeps)",
        description="The last N events of a site's event log: pairing, path switches with "
        "detection times, holds, e-stops, refusals, notes, console commands and who sent them.",
    )
    p.add_argument("file", help="the event log (transport parameter event_log)")
    p.add_argument("-n", type=int, default=20, help="how many of the newest events (default 20)")
    p.add_argument("--kind", help="only events of this kind (estop, note, path, ...)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=_run_log)


def _run_log(args: argparse.Namespace) -> int:
    from .console.eventlog import KINDS, EventLogError, open_existing

    if args.kind and args.kind not in KINDS:
        print(
            f"jitsi-teleop log: unknown kind {args.kind!r} ({', '.join(sorted(KINDS))})",
            file=sys.stderr,
        )
        return 2
    if args.n < 1:
        print("jitsi-teleop log: -n must be at least 1", file=sys.stderr)
        return 2
    try:
        log = open_existing(args.file)
        events = log.last(args.n, args.kind)
    except EventLogError as e:
        print(f"jitsi-teleop log: {e}", file=sys.stderr)
        return 1
    for e in events:
        if args.json:
            print(
                json.dumps(
                    {
                        "id": e.id,
                        "t": e.t,
                        "kind": e.kind,
                        "actor": e.actor,
                        "text": e.text,
                        "detail": e.detail,
                    }
                )
            )
        else:
            print(e.line())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser (it also re-runs itself as child processes)
        from jitsi_teleop.benchmark import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.CRITICAL,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
