"""The console's pure layers: grammar, addressing, permissions, floods, the SQLite event log,
events from status changes, ``jitsi-teleop log``, and account settings (password file/env).

The site the console acts on is a recording :class:`SiteActions` here (the rclpy adapter that
publishes the real e-stop is exercised in test_console_ros.py with the real nodes)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from jitsi_teleop.console.commands import (
    MAX_BODY_BYTES,
    PermissionError_,
    Permissions,
    Sender,
    fit,
    parse,
)
from jitsi_teleop.console.console import Console, ConsoleConfig
from jitsi_teleop.console.eventlog import EventLog, EventLogError, open_existing
from jitsi_teleop.console.site import EventWatcher, PeerView, SiteView, status_text, who_text
from jitsi_teleop.room.account import (
    Account,
    AccountError,
    load_account,
    no_mechanism_reason,
    security_settings,
)

NAMES = ("follower", "dexter")
GUEST = Sender(nick="phone", jid="", moderator=False, channel="groupchat")
MOD = Sender(nick="boss", jid="boss@example.org", moderator=True, channel="groupchat")


@dataclass
class Recorder:
    """A site that records what the console asked of it."""

    estops: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    chimes: list[str] = field(default_factory=list)

    def status_text(self) -> str:
        return "follower; paired with abc; path p2p"

    def who_text(self) -> str:
        return "me: follower"

    def estop(self, actor: str) -> str:
        self.estops.append(actor)
        return "stopped"

    def note(self, actor: str, text: str) -> None:
        self.notes.append((actor, text))

    def chime(self, actor: str) -> str:
        self.chimes.append(actor)
        return "chime unavailable: this site has no audio output"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(perms: str = "", clock: Clock | None = None) -> tuple[Console, Recorder, EventLog]:
    site = Recorder()
    log = EventLog()
    cfg = ConsoleConfig(names=NAMES, site="follower", permissions=Permissions.parse(perms))
    return Console(cfg, log, site, clock or Clock()), site, log


# ---------------------------------------------------------------- grammar ---------------
@pytest.mark.parametrize(
    "line",
    [
        "!status",
        "follower: status",
        "follower, status",
        "@follower status",
        "Dexter: STATUS",
        "  !status  ",
        "@dexter: status",
    ],
)
def test_addressed_lines_in_group_chat(line):
    p = parse(line, NAMES, "groupchat")
    assert p is not None and p.request is not None and p.request.name == "status"


@pytest.mark.parametrize(
    "line",
    ["status", "hello everyone", "the follower is slow", "followers: status", "", "leader: estop"],
)
def test_chatter_is_not_for_us(line):
    assert parse(line, NAMES, "groupchat") is None


def test_private_lines_need_no_address():
    assert parse("status", NAMES, "direct").request.name == "status"
    assert parse("follower: log 5", NAMES, "private").request.arg == "5"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("!frobnicate", "unknown command 'frobnicate'"),
        ("!resume", "cleared only at the robot's site"),
        ("!exec rm -rf /", "no shell command"),
        ("!EXESYS ls", "no shell command"),
        ("!note", "note needs text"),
        ("!log many", "log takes a number"),
        ("!estop now please", "estop takes no argument"),
        ("!note " + "x" * 501, "note too long"),
        ("!note a\x07b", "control characters"),
        ("@follower", "say a command"),
    ],
)
def test_bad_lines_get_a_clear_error(line, error):
    p = parse(line, NAMES, "groupchat")
    assert p is not None and p.request is None and error in p.error


def test_fit_cuts_at_a_character_boundary():
    s = fit("é" * 600, 101)
    assert len(s.encode()) <= 101 and s.endswith("…")
    assert fit("short", 100) == "short"


# ---------------------------------------------------------------- permissions -----------
def test_default_permissions():
    p = Permissions()
    for cmd in ("help", "status", "who", "estop"):
        assert p.allows(cmd, GUEST)
    for cmd in ("note", "log", "chime"):
        assert not p.allows(cmd, GUEST)
        assert p.allows(cmd, MOD)


def test_permission_settings_parse_and_reject_garbage():
    p = Permissions.parse("note=Alice@Example.org, moderators; estop=moderators; chime=nobody")
    assert p.allows("note", Sender("a", "alice@example.org"))
    assert not p.allows("note", Sender("b", "bob@example.org"))
    assert not p.allows("estop", GUEST) and p.allows("estop", MOD)
    assert not p.allows("chime", MOD)
    for bad in ("shell=anyone", "note", "note=alice", "note=alice@x/res"):
        with pytest.raises(PermissionError_):
            Permissions.parse(bad)


# ---------------------------------------------------------------- the console -----------
def test_status_help_who_answer_anyone_and_are_logged():
    c, _site, log = make()
    r = c.handle("follower: status", GUEST)
    assert r is not None and r.text == "[follower] follower; paired with abc; path p2p"
    assert "estop" in c.handle("!help", GUEST).text
    assert "note" not in c.handle("!help", GUEST).text  # help lists what you may use
    assert c.handle("!who", GUEST).text.endswith("me: follower")
    cmds = log.last(10, "command")
    assert [e.text for e in cmds] == ["status", "help", "help", "who"]
    assert cmds[0].actor == "phone"


def test_estop_from_an_unprivileged_occupant_reaches_the_site_and_is_logged():
    c, site, log = make()
    r = c.handle("!estop", GUEST)
    assert site.estops == ["phone"] and r.text == "[follower] stopped"
    assert log.last(1, "estop")[0].actor == "phone"


def test_note_and_log_round_trip_through_sqlite(tmp_path):
    site = Recorder()
    path = tmp_path / "events.sqlite"
    log = EventLog(path)
    c = Console(ConsoleConfig(names=NAMES, site="follower"), log, site, Clock())
    assert c.handle("follower: note gripper sticky, check J6", MOD).text.startswith(
        "[follower] noted (#"
    )
    assert site.notes == [("boss (boss@example.org)", "gripper sticky, check J6")]
    assert "gripper sticky, check J6" in c.handle("!log 3", MOD).text
    log.close()
    # another process reads the same file
    again = open_existing(path)
    notes = again.last(5, "note")
    assert [(e.actor, e.text) for e in notes] == [
        ("boss (boss@example.org)", "gripper sticky, check J6")
    ]


def test_unprivileged_note_log_chime_are_refused_and_logged():
    c, site, log = make()
    for line in ("!note hi", "!log", "!chime"):
        r = c.handle(line, GUEST)
        assert "not allowed for you" in r.text
    assert site.notes == [] and site.chimes == []
    assert len(log.last(10, "refusal")) == 3


def test_chime_reports_unavailable():
    c, _site, _ = make("chime=anyone")
    assert "unavailable" in c.handle("!chime", GUEST).text


def test_bad_bodies_get_an_answer_and_nothing_else_happens():
    c, site, log = make()
    direct = Sender("", "x@example.org", channel="direct")
    assert "not UTF-8" in c.handle(b"\xff\xfe!estop", direct).text
    assert "too long" in c.handle("!estop " + "x" * MAX_BODY_BYTES, GUEST).text
    assert "send plain text" in c.handle(None, direct).text  # XHTML-IM without a body
    assert c.handle(None, GUEST) is None  # markup-only group chat: not for us
    assert c.handle("x" * 5000, GUEST) is None  # long chatter, not addressed to us
    assert "unknown command" in c.handle("!exterminate", GUEST).text
    assert site.estops == [] and log.last(10, "estop") == []


def test_a_flood_is_limited_but_an_estop_always_gets_through():
    clock = Clock()
    c, site, _ = make(clock=clock)
    replies = [c.handle("!status", GUEST) for _ in range(30)]
    answered = [r for r in replies if r is not None]
    assert len(answered) <= 6  # the burst, plus one "too many commands"
    assert sum("too many" in r.text for r in answered) == 1
    assert c.counters.limited >= 24
    c.handle("!estop", GUEST)  # still executed while the sender is limited
    assert site.estops == ["phone"]
    # stops folded: a burst of stops is one stop, not a flood of publishes and log rows
    for _ in range(20):
        c.handle("!estop", GUEST)
    assert site.estops == ["phone"] and c.counters.estops_folded == 20
    clock.t += 1.0
    c.handle("!estop", GUEST)
    assert len(site.estops) == 2
    # after a pause the sender is heard again
    clock.t += 10
    assert "path p2p" in c.handle("!status", GUEST).text


def test_a_bad_line_costs_one_token_like_a_good_one():
    c, _, _ = make()
    replies = [c.handle("!frobnicate", GUEST) for _ in range(5)]
    assert all("unknown command" in r.text for r in replies)


def test_many_senders_cannot_exceed_the_console_wide_rate():
    c, _, _ = make()
    answered = [c.handle("!status", Sender(f"n{i}")) for i in range(100)]
    assert sum(r is not None and "path" in r.text for r in answered) <= 12


def test_estop_permission_can_be_narrowed():
    c, site, _log = make("estop=moderators")
    assert "not allowed" in c.handle("!estop", GUEST).text
    assert site.estops == []
    c.handle("!estop", MOD)
    assert site.estops == ["boss (boss@example.org)"]


def test_replies_fit_the_byte_budget():
    _c, _, log = make()
    for i in range(200):
        log.add("note", "n" * 400, "x", t=1000.0 + i)
    log.add("note", "the newest one", "x", t=2000.0)
    c2 = Console(ConsoleConfig(names=NAMES, site="follower"), log, Recorder(), Clock())
    r = c2.handle("!log 50", MOD)
    assert len(r.text.encode()) <= 700
    # the newest events are kept (the oldest are dropped, and the reply says so)
    assert r.text.startswith("[follower] log (newest ") and "of 50):" in r.text
    assert "note [x] the newest one\n" in r.text and r.text.endswith("log 50")  # this command


# ---------------------------------------------------------------- event log -------------
def test_event_log_refuses_unknown_kinds_and_cuts_long_text():
    log = EventLog()
    with pytest.raises(ValueError):
        log.add("exesys", "ls")
    log.add("note", "y" * 5000)
    assert len(log.last(1)[0].text) == 1000


def test_open_existing_refuses_what_is_not_an_event_log(tmp_path):
    with pytest.raises(EventLogError, match="no such file"):
        open_existing(tmp_path / "missing.sqlite")
    (tmp_path / "text.sqlite").write_text("hello")
    with pytest.raises(EventLogError, match="not an SQLite file"):
        open_existing(tmp_path / "text.sqlite")
    db = sqlite3.connect(tmp_path / "other.sqlite")
    db.execute("CREATE TABLE x (a)")
    db.commit()
    db.close()
    with pytest.raises(EventLogError, match="without an events table"):
        open_existing(tmp_path / "other.sqlite")


def test_jitsi_teleop_log_prints_the_last_entries(tmp_path):
    path = tmp_path / "site.sqlite"
    log = EventLog(path)
    log.add("pairing", "paired with 1a2b3c4d")
    log.add("estop", "console estop: stopped", "phone")
    log.add("note", "J6 sticky", "boss")
    log.close()
    run = [sys.executable, "-m", "jitsi_teleop.cli", "log"]
    out = subprocess.run([*run, str(path), "-n", "2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and "estop [phone]" in lines[0] and "note [boss] J6 sticky" in lines[1]
    js = subprocess.run(
        [*run, str(path), "--kind", "note", "--json"], capture_output=True, text=True, timeout=60
    )
    assert [json.loads(x)["text"] for x in js.stdout.splitlines()] == ["J6 sticky"]
    bad = subprocess.run([*run, str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no such file" in bad.stderr


# ---------------------------------------------------------------- status and events -----
def test_status_and_who_text():
    v = SiteView(
        role="follower",
        robot="dexter",
        room_connected=True,
        paired=True,
        peer="ab12cd34",
        path="p2p",
        rtt_ms=0.8,
        age_ms=3.2,
        robot_ok=True,
        teleop_state="estop",
        teleop_message="e-stop topic",
        refusals=("topic /x: type mismatch",),
        peers=(PeerView("ab12cd34", "leader", "dexter"),),
    )
    s = status_text(v)
    for part in (
        "paired with ab12cd34",
        "path p2p, rtt 0.8 ms",
        "3.2 ms old",
        "robot: connected",
        "E-STOPPED (e-stop topic)",
        "last refusals: topic /x",
    ):
        assert part in s
    assert "ab12cd34: leader robot dexter" in who_text(v)
    assert "not paired" in status_text(SiteView(role="leader"))


def test_the_follower_chimes_when_it_starts_moving_not_on_every_update():
    w = EventWatcher(EventLog())
    idle = SiteView(role="follower", teleop_state="idle")
    tracking = SiteView(role="follower", teleop_state="tracking")
    holding = SiteView(role="follower", teleop_state="holding")
    assert [w.update(v) for v in (idle, tracking, tracking, holding, tracking)] == [
        False,
        True,
        False,
        False,
        True,
    ]
    leader = EventWatcher(EventLog())
    assert not leader.update(SiteView(role="leader", teleop_state="tracking"))


def test_watcher_logs_edges_with_detection_times():
    log = EventLog()
    w = EventWatcher(log)
    base = SiteView(role="follower", room_connected=True)
    w.update(base)
    paired = SiteView(
        role="follower",
        room_connected=True,
        paired=True,
        peer="p1",
        path="p2p",
        teleop_state="tracking",
    )
    w.update(paired)
    w.update(paired)  # no change, no row
    failed = SiteView(
        role="follower",
        room_connected=True,
        paired=True,
        peer="p1",
        path="muc",
        failovers=1,
        last_detection_s=0.412,
        teleop_state="holding",
        teleop_message="lease expired",
        refusals=("r1",),
    )
    w.update(failed)
    w.update(failed)
    kinds = [(e.kind, e.text) for e in log.last(20)]
    assert kinds == [
        ("pairing", "paired with p1"),
        ("path", "path none -> p2p"),
        ("path", "path p2p -> muc (detected in 0.412 s)"),
        ("hold", "holding: lease expired"),
        ("refusal", "r1"),
    ]
    assert log.last(1, "path")[0].detail == {"from": "p2p", "to": "muc", "detection_s": 0.412}


# ---------------------------------------------------------------- account settings ------
def test_account_password_from_file_or_environment(tmp_path):
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    a = load_account("alice@example.org", str(f), env={})
    assert a == Account("alice@example.org", "s3cret") and "s3cret" not in repr(a)
    env = {"JITSI_TELEOP_JID": "bob@example.org", "JITSI_TELEOP_XMPP_PASSWORD": "pw"}
    assert load_account(env=env) == Account("bob@example.org", "pw")
    assert load_account(env={}) is None


@pytest.mark.parametrize(
    ("jid", "pwfile", "env", "error"),
    [
        ("alice@example.org", "", {}, "no password for alice@example.org"),
        ("alice@example.org", "/nonexistent/pw", {}, "password file /nonexistent/pw"),
        ("", "/some/file", {}, "no account JID"),
        ("example.org", "", {"JITSI_TELEOP_XMPP_PASSWORD": "x"}, "must be user@domain"),
        ("a@example.org/res", "", {"JITSI_TELEOP_XMPP_PASSWORD": "x"}, "must be user@domain"),
    ],
)
def test_account_setting_errors(jid, pwfile, env, error):
    with pytest.raises(AccountError, match=error):
        load_account(jid, pwfile, env=env)


def test_sasl_policy_never_allows_plain_in_the_clear():
    clear = security_settings(["encrypted", "unencrypted_plain", "unencrypted_scram"], False)
    assert clear == {"encrypted": False, "unencrypted_plain": False, "unencrypted_scram": True}
    assert security_settings(["encrypted", "encrypted_plain"], True)["encrypted_plain"] is True
    assert "in the clear" in no_mechanism_reason({"PLAIN"}, False, "a@b")
    assert "offers no SCRAM or PLAIN" in no_mechanism_reason({"DIGEST-MD5"}, True, "a@b")
