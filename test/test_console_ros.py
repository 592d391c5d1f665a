"""The console with the real nodes, on the Jitsi secure-domain layout: at each site a simulated
Dexter, the driver, the teleop node and the transport, each in its own process, the two sites
in two ROS domains; the leader's transport logs in with an account (it creates the room), the
follower's joins as an anonymous guest. A separate slixmpp client logged in with its own
account (a phone's chat app, an ordinary occupant: no moderator) stops the follower from the
meeting's group chat, asks its status, and leaves a note by private message that comes back
from the follower's SQLite event log, through ``jitsi-teleop log`` and on ROS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import secrets
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from slixmpp import ClientXMPP
from std_msgs.msg import Bool, String

from dexter_driver import kinematics
from jitsi_teleop.demo.ros_sites import ControlPort
from jitsi_teleop.local_prosody import ProsodyServer, free_port, prosody_available
from jitsi_teleop.site_plan import SiteArgs, site_processes
from jitsi_teleop.site_runner import SiteProcess, start_site
from ros_sites import Site, make_key_file, site_domains

pytestmark = [
    pytest.mark.prosody,
    pytest.mark.ros,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not prosody_available(), reason="prosody not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
GUEST = "guest.meet.test"


def control(port: int, msg: dict) -> dict:
    ctl = ControlPort(port, timeout_s=10.0)
    try:
        return ctl.request(msg)
    finally:
        ctl.close()


class Phone:
    """A chat app in its own thread and event loop (the test body is synchronous)."""

    def __init__(self, srv: ProsodyServer, user: str, password: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.srv, self.user, self.password = srv, user, password
        self.got: list[tuple[str, str, str]] = []  # (type, from, body)
        self.xmpp: ClientXMPP | None = None

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self, room_jid: str) -> None:
        x = ClientXMPP(f"{self.user}@{self.srv.domain}", self.password)
        x.ssl_context = ssl.create_default_context()
        x.ssl_context.check_hostname = False
        x.ssl_context.verify_mode = ssl.CERT_NONE
        x.register_plugin("xep_0045")
        x.add_event_handler(
            "message", lambda m: self.got.append((m["type"], str(m["from"]), m["body"]))
        )
        started = self.loop.create_future()
        x.add_event_handler("session_start", lambda _e: started.set_result(True))
        x.connect("127.0.0.1", self.srv.c2s_port)
        await asyncio.wait_for(started, 15)
        self.xmpp = x
        self.room_jid = room_jid
        await x.plugin["xep_0045"].join_muc_wait(room_jid, "phone", maxstanzas=0)

    def connect(self, room_jid: str) -> None:
        self.run(self._connect(room_jid))

    async def _send(self, to: str, body: str, mtype: str) -> None:
        self.xmpp.send_message(mto=to, mbody=body, mtype=mtype)

    def say(self, body: str) -> None:
        self.run(self._send(self.room_jid, body, "groupchat"))

    def tell(self, nick: str, body: str) -> None:
        self.run(self._send(f"{self.room_jid}/{nick}", body, "chat"))

    def replies(self, start: str) -> list[tuple[str, str, str]]:
        return [g for g in list(self.got) if g[2].startswith(start)]

    async def _shutdown(self) -> None:
        x, self.xmpp = self.xmpp, None
        if x is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(x.disconnect(wait=1.0), 3)
            x.abort()
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me:
                task.cancel()
        await asyncio.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._shutdown(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        gc.collect()  # slixmpp's finalizers need the loop still open
        self.loop.close()


@pytest.fixture
def secure_sites(tmp_path):
    srv = ProsodyServer(
        authentication="internal_hashed",
        guest_domain=GUEST,
        restrict_room_creation="local",
        tls=True,  # the phone uses STARTTLS like a real chat app
    )
    srv.start()
    passwords = {u: secrets.token_hex(8) for u in ("operator", "phone")}
    for user, pw in passwords.items():
        srv.register(user, pw)
    pwfile = tmp_path / "operator.pw"
    pwfile.write_text(passwords["operator"] + "\n")
    pwfile.chmod(0o600)
    key = make_key_file(tmp_path)
    room = "sec" + secrets.token_hex(4)
    domains = site_domains()
    ports = {r: (free_port(), free_port()) for r in ("leader", "follower")}
    logs = {r: tmp_path / f"{r}-events.sqlite" for r in ports}
    # what teleop.launch.py passes (jid, password_file, event_log, console_permissions), plus
    # the guest domain for the follower, which a meeting URL's config.js would give
    site_args = {
        "leader": {
            "jid": f"operator@{srv.domain}",
            "password_file": str(pwfile),
            "event_log": str(logs["leader"]),
        },
        "follower": {
            "event_log": str(logs["follower"]),
            "console_permissions": f"note=moderators,phone@{srv.domain}; log=phone@{srv.domain}",
        },
    }
    overrides = {"leader": {}, "follower": {"domain": GUEST, "muc_domain": srv.muc_domain}}
    procs: list[SiteProcess] = []
    sites: list[Site] = []
    phone = Phone(srv, "phone", passwords["phone"])
    try:
        for role, domain in zip(("leader", "follower"), domains):
            robot, ctl = ports[role]
            args = SiteArgs(
                share=str(ROOT),
                role=role,
                sim="true",
                robot_port=str(robot),
                sim_control_port=str(ctl),
                domain=srv.domain,
                room_name=room,
                websocket_url=srv.websocket_url,
                secret_file=str(key),
                loopback_only="true",
                stun_turn="false",
                rviz="false",
                **site_args[role],
            )
            specs = [
                dataclasses.replace(s, parameters=(*s.parameters, overrides[role]))
                if s.name == "jitsi_teleop_transport"
                else s
                for s in site_processes(args)
            ]
            started, _skipped = start_site(role, specs, domain, tmp_path)
            procs += started
        sites = [Site(domains[0], "leader"), Site(domains[1], "follower")]
        yield srv, sites, procs, {r: c for r, (_, c) in ports.items()}, logs, phone, room
    finally:
        phone.close()
        for p in reversed(procs):
            p.stop()
        for s in sites:
            s.close()
        srv.cleanup()


def teleop_state(arrays: list[DiagnosticArray], role: str = "follower") -> str:
    for arr in reversed(list(arrays)):
        for st in arr.status:
            if f": teleop {role}" in st.name:
                return {kv.key: kv.value for kv in st.values}.get("state", "")
    return ""


def test_estop_from_an_unprivileged_phone_stops_the_follower(secure_sites):
    srv, (leader, follower), procs, ctl, logs, phone, room = secure_sites
    leader_js = leader.record(JointState, "/joint_states", 10)
    follower_js = follower.record(JointState, "/joint_states", 10)
    diags = follower.diagnostics()
    leader_diags = leader.diagnostics()
    leader_estops = leader.record(
        Bool, "/teleop/estop", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    )
    notes: list[str] = []
    follower.subscribe(
        String,
        "/console/notes",
        lambda m: notes.append(m.data),
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )

    def logs_text() -> str:
        return "\n".join(f"--- {p.name}\n{p.log(1500)}" for p in procs)

    def until(pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not pred():
            for p in procs:
                if not p.alive:
                    raise AssertionError(f"{p.name} exited:\n{p.log()}")
            if time.monotonic() > end:
                raise AssertionError(f"{what} did not happen within {timeout} s\n{logs_text()}")
            time.sleep(0.05)

    def q(rec) -> np.ndarray | None:
        if not rec.items:
            return None
        return np.asarray(deserialize_message(rec.items[-1][1], JointState).position[:5])

    # the guest follower joins once the account holder made the room; then it tracks
    until(lambda: teleop_state(diags) == "tracking", 120, "the follower tracking the leader")
    phone.connect(f"{room}@{srv.muc_domain}")

    # the transport learns about its driver from /diagnostics (about once a second; later on
    # a loaded machine): ask again, within the console's per-sender rate, until it knows
    def robot_connected() -> bool:
        if any("robot: connected" in t for _, _, t in phone.replies("[follower]")):
            return True
        if time.monotonic() - asked[0] > 2.0:
            asked[0] = time.monotonic()
            phone.say("follower: status")
        return False

    asked = [0.0]
    until(robot_connected, 60, "a status reply saying the robot is connected")
    kind, sender, text = next(r for r in phone.replies("[follower]") if "connected" in r[2])
    assert kind == "groupchat" and "paired with" in text
    follower_nick = sender.rsplit("/", 1)[1]

    phone.say("follower: estop")
    until(lambda: teleop_state(diags) == "estop", 20, "the follower e-stopped")
    until(
        lambda: any("e-stop: the follower is stopped" in t for _, _, t in phone.got),
        20,
        "the e-stop reply",
    )
    # the operator moves the leader; the stopped follower stays where it is
    time.sleep(0.5)
    held = q(follower_js)
    start = kinematics.tool_position(q(leader_js))
    goal = start + np.array([0.05, 0.0, -0.03])
    assert control(ctl["leader"], {"op": "hand", "target": goal.tolist()})["ok"]
    until(
        lambda: np.linalg.norm(kinematics.tool_position(q(leader_js)) - goal) < 0.01,
        30,
        "the leader at its new pose",
    )
    time.sleep(1.0)
    moved = np.linalg.norm(
        kinematics.tool_position(q(follower_js)) - kinematics.tool_position(held)
    )
    assert moved < 0.003, f"the e-stopped follower moved {moved * 1000:.1f} mm"
    assert teleop_state(diags) == "estop"

    # a note by private message in the meeting, allowed by JID; back through log and ROS
    phone.tell(follower_nick, "note stopped to check the cable at J3")
    until(lambda: notes, 20, "the note on /console/notes")
    assert notes == [f"phone (phone@{srv.domain}): stopped to check the cable at J3"]

    # (a reply waits while the room carries frames, and is dropped after 15 s: if a loaded
    # machine put the link on the slow path, ask again once it is back)
    def log_reply() -> bool:
        if any(k == "chat" and "stopped to check the cable" in t for k, _, t in phone.got):
            return True
        if time.monotonic() - asked[0] > 16.0:
            asked[0] = time.monotonic()
            phone.tell(follower_nick, "log 20")
        return False

    asked[0] = 0.0
    until(log_reply, 90, "the log reply")
    out = subprocess.run(
        [sys.executable, "-m", "jitsi_teleop.cli", "log", str(logs["follower"]), "-n", "50"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in (
        "start ",
        "pairing ",
        f"estop [phone (phone@{srv.domain})] console estop",
        "estop e-stopped",  # the teleop node's state change, seen in its diagnostics
        f"note [phone (phone@{srv.domain})] stopped to check the cable at J3",
        f"command [phone (phone@{srv.domain})] status",
        # the follower's own warning when teleoperation started (this machine has no audio)
        "chime teleoperation starts: chime unavailable",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"
    # the leader's console: its e-stop latches the leader's teleop node (which sends it on to
    # the follower) once, not in a loop (the node hears its own e-stop on teleop/estop)
    phone.say("leader: estop")
    until(lambda: teleop_state(leader_diags, "leader") == "estop", 30, "the leader e-stopped")
    time.sleep(2.0)
    trues = [d for _, d in leader_estops.items if deserialize_message(d, Bool).data]
    assert 1 <= len(trues) <= 2, f"{len(trues)} e-stop messages at the leader site"
    assert "reliable messages wait" not in procs_log(procs, "leader:jitsi_teleop_transport")
    for p in procs:
        assert p.alive, p.log()


def procs_log(procs, name: str) -> str:
    return "".join(p.log() for p in procs if p.name == name)


def test_two_transport_nodes_pair_one_to_one_on_a_server_without_muc(tmp_path):
    """The real transport nodes, each logged in with its account (password from a file), on
    a Prosody with no MUC: they find each other, pair and signal by one-to-one messages, and
    joint states cross (the slow path alone is in test_direct.py)."""
    from rclpy.serialization import serialize_message

    from ros_sites import link_status, start_transport, wait_for

    srv = ProsodyServer(authentication="internal_hashed", muc=False)
    srv.start()
    procs = []
    sites: list[Site] = []
    try:
        pw = {}
        for user in ("lab-a", "lab-b"):
            pw[user] = tmp_path / f"{user}.pw"
            pw[user].write_text(secrets.token_hex(8))
            srv.register(user, pw[user].read_text())
        key = make_key_file(tmp_path)
        domains = site_domains()
        me = {"leader": ("lab-a", "lab-b"), "follower": ("lab-b", "lab-a")}
        for role, dom in zip(("leader", "follower"), domains):
            user, peer = me[role]
            procs.append(
                start_transport(
                    role,
                    dom,
                    srv,
                    "lab-pair",
                    key,
                    log_dir=tmp_path,
                    params=[
                        f"jid:={user}@{srv.domain}",
                        f"password_file:={pw[user]}",
                        f"peer_jid:={peer}@{srv.domain}",
                        f"event_log:={tmp_path / (role + '.sqlite')}",
                    ],
                )
            )
        sites = [Site(domains[0], "leader"), Site(domains[1], "follower")]
        diag = sites[1].diagnostics()
        wait_for(lambda: (link_status(diag) or {}).get("paired") == "true", 60, "paired", procs)
        rec = sites[1].record(JointState, "/leader/joint_states", 100)
        pub = sites[0].publisher(JointState, "/joint_states", 10)
        wait_for(lambda: pub.get_subscription_count() > 0, 10, "subscribed", procs)
        msg = JointState()
        msg.name = ["j1"]
        for i in range(100):
            msg.position = [0.01 * i]
            pub.publish(serialize_message(msg))
            time.sleep(0.02)
        wait_for(lambda: len(rec.items) >= 5, 20, "joint states at the follower", procs)
        assert (link_status(diag) or {}).get("peer", "").startswith(f"lab-a@{srv.domain}/")
    finally:
        for p in procs:
            p.stop()
        for s in sites:
            s.close()
        srv.cleanup()
