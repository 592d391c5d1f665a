"""Pairing handshake: success paths, re-pairing, and every attack we could think of."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from jitsi_teleop import wire
from jitsi_teleop.pairing import (
    AuthenticationFailed,
    Confirm,
    FingerprintMismatch,
    HandshakeError,
    Hello,
    IdentityMismatch,
    KeyMismatch,
    MalformedMessage,
    MsgType,
    Pairing,
    ReplayedMessage,
    Role,
    RoleConflict,
    Secret,
    SessionKeys,
    UnexpectedMessage,
    WrongVersion,
    _encode_hello,
    _key_id,
    _mac,
    decode_message,
    generate_key_file,
    load_secret,
    normalize_fingerprint,
    parse_key_file,
    secret_from_passphrase,
)
from jitsi_teleop.protect import SessionCipher, Unauthenticated, WrongSession

SECRET = Secret(bytes(range(32)))
WRONG = Secret(bytes(range(100, 132)))
FP_L = "sha-256 " + ":".join(["AB"] * 32)
FP_F = "sha-256 " + ":".join(["0c"] * 32)
FP_EVIL = "sha-256 " + ":".join(["ee"] * 32)
LEADER, FOLLOWER, INTRUDER = "1eade400", "f0110e00", "badbad00"


def make(
    role: Role,
    nick: str,
    secret: Secret = SECRET,
    room: str = "Lab-Room",
    fps: tuple[str, ...] = (),
    **kw: object,
) -> Pairing:
    if not fps:
        fps = (FP_L,) if role is Role.LEADER else (FP_F,)
    return Pairing(secret, role, room, nick, fps, **kw)  # type: ignore[arg-type]


def leader() -> Pairing:
    return make(Role.LEADER, LEADER)


def follower() -> Pairing:
    return make(Role.FOLLOWER, FOLLOWER)


def run(init: Pairing, resp: Pairing) -> tuple[SessionKeys, SessionKeys]:
    m1 = init.initiate(resp.local_id)
    r1 = resp.handle(m1, init.local_id)
    assert r1.reply is not None and r1.session is None
    r2 = init.handle(r1.reply, resp.local_id)
    assert r2.reply is not None and r2.session is not None
    r3 = resp.handle(r2.reply, init.local_id)
    assert r3.reply is None and r3.session is not None
    return r2.session, r3.session


def messages(init: Pairing, resp: Pairing) -> tuple[bytes, bytes, bytes]:
    """The three messages of one handshake, without letting it complete at the responder."""
    m1 = init.initiate(resp.local_id)
    m2 = resp.handle(m1, init.local_id).reply
    assert m2 is not None
    m3 = init.handle(m2, resp.local_id).reply
    assert m3 is not None
    return m1, m2, m3


def assert_no_keys(*ps: Pairing) -> None:
    for p in ps:
        assert p.session is None


# ---------------------------------------------------------------------------------------------
# Success


@pytest.mark.parametrize("leader_initiates", [True, False])
def test_handshake_derives_matching_directional_keys(leader_initiates: bool) -> None:
    lp, fp = leader(), follower()
    if leader_initiates:
        ls, fs = run(lp, fp)
    else:
        fs, ls = run(fp, lp)
    assert ls.session_id == fs.session_id and len(ls.session_id) == 16
    assert ls.send_key == fs.recv_key and ls.recv_key == fs.send_key
    assert ls.send_key != ls.recv_key
    assert ls.role is Role.LEADER and fs.role is Role.FOLLOWER
    assert ls.peer_id == FOLLOWER and fs.peer_id == LEADER
    assert ls.peer_fingerprints == (normalize_fingerprint(FP_F),)
    assert fs.peer_fingerprints == (normalize_fingerprint(FP_L),)
    assert lp.session is ls and fp.session is fs
    assert lp.counters.completed == fp.counters.completed == 1
    a, b = SessionCipher.from_session(ls), SessionCipher.from_session(fs)
    fr = wire.Frame(1, 1, 1, b"joint state")
    assert b.open(a.seal(fr)) == fr and a.open(b.seal(fr)) == fr


def test_directional_keys_are_named_by_role_not_initiator() -> None:
    rnd = random.Random(9)
    det = lambda n: bytes(rnd.getrandbits(8) for _ in range(n))  # noqa: E731
    ls1, _ = run(make(Role.LEADER, LEADER, random_bytes=det), follower())
    _, ls2 = run(follower(), make(Role.LEADER, LEADER, random_bytes=det))
    assert ls1.initiator and not ls2.initiator
    assert ls1.send_key != ls2.send_key  # fresh each time (ephemeral DH)


def test_each_handshake_gives_fresh_keys() -> None:
    s1, _ = run(leader(), follower())
    s2, _ = run(leader(), follower())
    assert s1.send_key != s2.send_key and s1.session_id != s2.session_id


def test_deterministic_randomness_gives_identical_transcripts() -> None:
    def det(seed: int) -> Callable[[int], bytes]:
        rnd = random.Random(seed)
        return lambda n: bytes(rnd.getrandbits(8) for _ in range(n))

    a = run(
        make(Role.LEADER, LEADER, random_bytes=det(1)),
        make(Role.FOLLOWER, FOLLOWER, random_bytes=det(2)),
    )
    b = run(
        make(Role.LEADER, LEADER, random_bytes=det(1)),
        make(Role.FOLLOWER, FOLLOWER, random_bytes=det(2)),
    )
    assert a[0].send_key == b[0].send_key and a[0].session_id == b[0].session_id


def test_room_name_is_case_insensitive_and_bound() -> None:
    run(make(Role.LEADER, LEADER, room="LAB-room"), make(Role.FOLLOWER, FOLLOWER, room="lab-ROOM"))
    lp, fp = make(Role.LEADER, LEADER, room="lab-a"), make(Role.FOLLOWER, FOLLOWER, room="lab-b")
    with pytest.raises(IdentityMismatch):
        fp.handle(lp.initiate(FOLLOWER), LEADER)
    # rewriting the room field of a captured INIT does not help: the MAC key is room-bound
    m1 = make(Role.LEADER, LEADER, room="lab-a").initiate(FOLLOWER)
    with pytest.raises(AuthenticationFailed):
        make(Role.FOLLOWER, FOLLOWER, room="lab-b").handle(m1.replace(b"lab-a", b"lab-b"), LEADER)


def test_message_sizes_are_small() -> None:
    m1, m2, m3 = messages(leader(), follower())
    assert len(m1) < 300 and len(m2) < 350 and len(m3) == 5 + 32 + 32 + 32


# ---------------------------------------------------------------------------------------------
# DTLS fingerprint binding


def test_fingerprint_check_accepts_bound_fingerprints_any_case() -> None:
    ls, fs = run(leader(), follower())
    ls.check_peer_fingerprints([FP_F.upper().replace("SHA", "sha")])
    fs.check_peer_fingerprints([FP_L.lower()])


@pytest.mark.parametrize("sdp_fps", [[FP_EVIL], [], [FP_F, FP_EVIL], ["sha-256 zz"], ["junk"]])
def test_fingerprint_substituted_in_signalling_is_refused(sdp_fps: list[str]) -> None:
    lp, fp = leader(), follower()
    run(lp, fp)
    with pytest.raises(FingerprintMismatch):
        lp.check_peer_fingerprints(sdp_fps)
    assert lp.counters.fingerprint == 1


def test_fingerprint_check_without_session_refuses() -> None:
    lp = leader()
    with pytest.raises(FingerprintMismatch):
        lp.check_peer_fingerprints([FP_F])


@pytest.mark.parametrize("which", [0, 1])
def test_fingerprint_tampered_in_handshake_is_refused(which: int) -> None:
    """The server rewrites the fingerprint inside INIT or RESPONSE: the MAC catches it."""
    lp, fp = leader(), follower()
    m1 = lp.initiate(FOLLOWER)
    if which == 0:
        bad = m1.replace(
            normalize_fingerprint(FP_L).encode(), normalize_fingerprint(FP_EVIL).encode()
        )
        assert bad != m1
        with pytest.raises(AuthenticationFailed):
            fp.handle(bad, LEADER)
        assert_no_keys(lp, fp)
        return
    m2 = fp.handle(m1, LEADER).reply
    assert m2 is not None
    bad = m2.replace(normalize_fingerprint(FP_F).encode(), normalize_fingerprint(FP_EVIL).encode())
    assert bad != m2
    with pytest.raises(AuthenticationFailed):
        lp.handle(bad, FOLLOWER)
    assert_no_keys(lp, fp)


def test_fingerprints_must_be_well_formed() -> None:
    for bad in ["sha-256", "md5 aa:bb", "sha-256 aa:bb", "sha-256 " + "g" * 95]:
        with pytest.raises(ValueError):
            normalize_fingerprint(bad)
    with pytest.raises(ValueError):
        make(Role.LEADER, LEADER, fps=("nonsense",))


# ---------------------------------------------------------------------------------------------
# Wrong secret, wrong role, impersonation


def test_wrong_secret_key_mismatch_at_responder() -> None:
    attacker = make(Role.LEADER, LEADER, secret=WRONG)
    fp = follower()
    with pytest.raises(KeyMismatch, match="different secrets"):
        fp.handle(attacker.initiate(FOLLOWER), LEADER)
    assert fp.counters.key_mismatch == 1
    assert_no_keys(fp)


def forge_key_id(p: Pairing) -> Pairing:
    """An attacker copies the real key id (it is public, e.g. in presence)."""
    p._key_id = _key_id(SECRET.key)
    return p


def test_wrong_secret_with_copied_key_id_fails_authentication_at_responder() -> None:
    attacker = forge_key_id(make(Role.LEADER, LEADER, secret=WRONG))
    fp = follower()
    with pytest.raises(AuthenticationFailed):
        fp.handle(attacker.initiate(FOLLOWER), LEADER)
    assert fp.counters.unauthenticated == 1 and fp.counters.responded == 0
    assert_no_keys(fp)


def test_wrong_secret_responder_fails_at_initiator() -> None:
    """A responder without the secret (its INIT MAC check bypassed) still cannot answer."""
    lp = leader()
    attacker = forge_key_id(make(Role.FOLLOWER, FOLLOWER, secret=WRONG))
    m1 = lp.initiate(FOLLOWER)
    msg = decode_message(m1)
    assert isinstance(msg, Hello)
    m2 = attacker._respond(msg, LEADER)
    with pytest.raises(AuthenticationFailed):
        lp.handle(m2, FOLLOWER)
    assert lp.counters.unauthenticated == 1
    assert_no_keys(lp)


def test_forged_confirm_refused() -> None:
    """Right nonces (visible to the operator), MAC without the keys: refused, no session."""
    lp, fp = leader(), follower()
    _, _, m3 = messages(lp, fp)
    for mac in (b"\x00" * 32, os.urandom(32)):
        with pytest.raises(AuthenticationFailed):
            fp.handle(m3[:-32] + mac, LEADER)
    assert fp.session is None
    assert fp.handle(m3, LEADER).session is not None  # the genuine one still works


def test_two_leaders_refused_with_role_conflict() -> None:
    a, b = leader(), make(Role.LEADER, FOLLOWER)
    with pytest.raises(RoleConflict, match="leader"):
        b.handle(a.initiate(FOLLOWER), LEADER)
    assert b.counters.role_conflict == 1
    assert_no_keys(a, b)


def test_two_followers_refused_at_initiator_too() -> None:
    a, b = follower(), make(Role.FOLLOWER, LEADER)
    m1 = a.initiate(LEADER)
    with pytest.raises(RoleConflict):
        b.handle(m1, FOLLOWER)
    msg = decode_message(m1)
    assert isinstance(msg, Hello)
    m2 = b._respond(msg, FOLLOWER)  # even if the other end answered anyway
    with pytest.raises(RoleConflict):
        a.handle(m2, LEADER)
    assert_no_keys(a, b)


def test_intruder_without_secret_claiming_leader_role() -> None:
    fp = follower()
    intruder = make(Role.LEADER, INTRUDER, secret=WRONG)
    with pytest.raises(KeyMismatch):
        fp.handle(intruder.initiate(FOLLOWER), INTRUDER)
    forged = forge_key_id(make(Role.LEADER, INTRUDER, secret=WRONG))
    with pytest.raises(AuthenticationFailed):
        fp.handle(forged.initiate(FOLLOWER), INTRUDER)
    # claiming to *be* the leader's nick inside the message does not help: the server sets from
    forged2 = forge_key_id(make(Role.LEADER, LEADER, secret=WRONG))
    with pytest.raises(AuthenticationFailed):
        fp.handle(forged2.initiate(FOLLOWER), INTRUDER)
    assert_no_keys(fp)
    assert fp.counters.responded == 0


def test_intruder_relaying_the_leaders_init_from_its_own_nick() -> None:
    lp, fp = leader(), follower()
    m1 = lp.initiate(FOLLOWER)
    with pytest.raises(IdentityMismatch, match="came from"):
        fp.handle(m1, INTRUDER)
    assert fp.counters.identity == 1 and fp.counters.responded == 0


def test_intruder_answering_our_init() -> None:
    lp, fp = leader(), follower()
    m1 = lp.initiate(FOLLOWER)
    m2 = fp.handle(m1, LEADER).reply
    assert m2 is not None
    with pytest.raises(IdentityMismatch):
        lp.handle(m2, INTRUDER)  # the real answer, relayed by someone else
    intruder = forge_key_id(make(Role.FOLLOWER, INTRUDER, secret=WRONG))
    msg = decode_message(m1)
    assert isinstance(msg, Hello)
    with pytest.raises(IdentityMismatch):
        lp.handle(intruder._respond(msg, LEADER), INTRUDER)
    assert lp.session is None
    # the genuine answer still completes afterwards
    assert lp.handle(m2, FOLLOWER).session is not None


def test_intruder_confirm_refused() -> None:
    lp, fp = leader(), follower()
    _, _, m3 = messages(lp, fp)
    with pytest.raises(UnexpectedMessage):
        fp.handle(m3, INTRUDER)
    assert fp.session is None
    assert fp.handle(m3, LEADER).session is not None


def test_init_addressed_to_someone_else_refused() -> None:
    lp = leader()
    other = make(Role.FOLLOWER, "0e0e0e0e")
    with pytest.raises(IdentityMismatch, match="addressed"):
        other.handle(lp.initiate(FOLLOWER), LEADER)


def test_low_order_ephemeral_key_refused() -> None:
    fp = follower()
    lp = leader()
    body = _encode_hello(
        MsgType.INIT,
        Role.LEADER,
        lp.room,
        LEADER,
        FOLLOWER,
        lp._key_id,
        os.urandom(32),
        b"\x00" * 32,
        (),
        None,
    )
    with pytest.raises(AuthenticationFailed, match="ephemeral"):
        fp.handle(body + _mac(lp._init_key, body), LEADER)
    assert fp.session is None


# ---------------------------------------------------------------------------------------------
# Replays and stale messages


def test_replayed_init_refused() -> None:
    lp, fp = leader(), follower()
    m1 = lp.initiate(FOLLOWER)
    fp.handle(m1, LEADER)
    with pytest.raises(ReplayedMessage):
        fp.handle(m1, LEADER)
    assert fp.counters.replayed == 1


def test_replayed_response_and_confirm_after_completion() -> None:
    lp, fp = leader(), follower()
    m1, m2, m3 = messages(lp, fp)
    fp.handle(m3, LEADER)
    with pytest.raises(ReplayedMessage):
        lp.handle(m2, FOLLOWER)
    with pytest.raises(ReplayedMessage):
        fp.handle(m3, LEADER)
    with pytest.raises(ReplayedMessage):
        fp.handle(m1, LEADER)
    assert lp.counters.replayed == 1 and fp.counters.replayed == 2


def test_stale_response_to_superseded_init() -> None:
    lp, fp = leader(), follower()
    old_m1 = lp.initiate(FOLLOWER)
    old_m2 = fp.handle(old_m1, LEADER).reply
    lp.initiate(FOLLOWER)  # we started over
    with pytest.raises(UnexpectedMessage):
        lp.handle(old_m2 or b"", FOLLOWER)
    assert lp.session is None and lp.counters.unexpected == 1


def test_unsolicited_response_and_confirm() -> None:
    lp, fp = leader(), follower()
    _, m2, m3 = messages(leader(), follower())
    with pytest.raises(UnexpectedMessage):
        lp.handle(m2, FOLLOWER)
    with pytest.raises(UnexpectedMessage):
        fp.handle(m3, LEADER)
    assert_no_keys(lp, fp)


def test_old_handshake_replayed_to_a_restarted_responder_yields_nothing() -> None:
    """The operator recorded a whole handshake and replays it after the follower restarted."""
    lp, fp = leader(), follower()
    m1, m2, m3 = messages(lp, fp)
    fp.handle(m3, LEADER)
    restarted = follower()
    reply = restarted.handle(m1, LEADER).reply  # answered: it cannot tell yet
    assert reply is not None and reply != m2
    with pytest.raises(UnexpectedMessage):
        restarted.handle(m3, LEADER)  # old CONFIRM does not match the new nonce
    assert restarted.session is None


# ---------------------------------------------------------------------------------------------
# Re-pairing


def test_repair_after_follower_restart_replaces_session() -> None:
    lp, fp = leader(), follower()
    ls1, fs1 = run(lp, fp)
    fp2 = follower()  # restarted process: no memory
    ls2, fs2 = run(lp, fp2)
    assert lp.session is ls2 and ls2.session_id != ls1.session_id
    old_sender = SessionCipher.from_session(fs1)
    new_leader = SessionCipher.from_session(ls2)
    with pytest.raises((WrongSession, Unauthenticated)):
        new_leader.open(old_sender.seal(wire.Frame(1, 1, 1, b"old")))
    assert SessionCipher.from_session(fs2).open(new_leader.seal(wire.Frame(1, 2, 2, b"n")))


def test_repair_after_leader_restart_initiated_by_follower() -> None:
    lp, fp = leader(), follower()
    run(lp, fp)
    lp2 = leader()
    fs2, ls2 = run(fp, lp2)
    assert fp.session is fs2 and ls2.send_key == fs2.recv_key


def test_rekey_keeps_old_session_until_new_one_completes() -> None:
    lp, fp = leader(), follower()
    _, fs1 = run(lp, fp)
    m1 = lp.initiate(FOLLOWER)
    m2 = fp.handle(m1, LEADER).reply
    assert fp.session is fs1  # a mere INIT (perhaps replayed by the server) replaces nothing
    assert m2 is not None
    m3 = lp.handle(m2, FOLLOWER).reply
    assert m3 is not None
    fs2 = fp.handle(m3, LEADER).session
    assert fs2 is not None and fp.session is fs2 and fs2.session_id != fs1.session_id
    assert fp.counters.completed == 2


def test_crossed_initiations_converge_on_one_session() -> None:
    lp, fp = leader(), follower()
    l1 = lp.initiate(FOLLOWER)
    f1 = fp.initiate(LEADER)
    assert lp.handle(f1, FOLLOWER).reply is None  # leader ignores: its own handshake wins
    assert lp.counters.crossed == 1
    m2 = fp.handle(l1, LEADER).reply  # follower drops its own and answers
    assert m2 is not None
    m3 = lp.handle(m2, FOLLOWER).reply
    assert m3 is not None
    fs = fp.handle(m3, LEADER).session
    assert fs is not None and lp.session is not None
    assert fs.session_id == lp.session.session_id


def test_crossed_initiations_counted_at_both_ends_and_resolved_either_order() -> None:
    # the follower's INIT may reach the leader before or after the leader's reaches it
    for follower_first in (True, False):
        lp, fp = leader(), follower()
        l1, f1 = lp.initiate(FOLLOWER), fp.initiate(LEADER)
        if follower_first:
            assert lp.handle(f1, FOLLOWER).reply is None
            m2 = fp.handle(l1, LEADER).reply
        else:
            m2 = fp.handle(l1, LEADER).reply
            assert lp.handle(f1, FOLLOWER).reply is None
        assert m2 is not None
        m3 = lp.handle(m2, FOLLOWER).reply
        assert m3 is not None and fp.handle(m3, LEADER).session is not None
        assert lp.counters.crossed == 1 and fp.counters.crossed == 1
        assert lp.session is not None and fp.session is not None
        assert lp.session.session_id == fp.session.session_id


def test_handshakes_with_several_claimants_run_at_once() -> None:
    """The leader offers a handshake to three occupants claiming the follower role; the two
    impostors never answer (or answer with the wrong key) and do not hold up the real one."""
    lp = leader()
    impostors = [make(Role.FOLLOWER, f"imp{i}", WRONG) for i in range(2)]
    fp = follower()
    inits = {p.local_id: lp.initiate(p.local_id) for p in (*impostors, fp)}
    with pytest.raises(KeyMismatch):
        impostors[0].handle(inits["imp0"], LEADER)  # an impostor cannot even answer
    m2 = fp.handle(inits[FOLLOWER], LEADER).reply
    assert m2 is not None
    m3 = lp.handle(m2, FOLLOWER).reply
    assert m3 is not None and lp.session is not None and lp.session.peer_id == FOLLOWER
    assert not lp.in_progress("imp0") and not lp.in_progress("imp1")  # moot now


def test_initiations_are_bounded() -> None:
    lp = make(Role.LEADER, LEADER, max_initiated=3)
    fp = follower()
    m1 = lp.initiate(FOLLOWER)
    for i in range(3):
        lp.initiate(f"imp{i}")
    # the oldest handshake (with the real follower) was dropped to stay within the bound
    m2 = fp.handle(m1, LEADER).reply
    with pytest.raises(UnexpectedMessage):
        lp.handle(m2 or b"", FOLLOWER)
    assert [lp.in_progress(f"imp{i}") for i in range(3)] == [True, True, True]


def test_new_local_id_drops_handshakes_in_flight() -> None:
    lp, fp = leader(), follower()
    m1 = lp.initiate(FOLLOWER)
    lp.set_local_id("1eade401")  # rejoined under another nick
    m2 = fp.handle(m1, LEADER).reply
    with pytest.raises((UnexpectedMessage, IdentityMismatch)):
        lp.handle(m2 or b"", FOLLOWER)
    ls, fs = run(lp, fp)  # a new handshake binds the new nick
    assert fs.peer_id == "1eade401" and ls.local_id == "1eade401"


def test_new_fingerprints_used_by_later_handshakes() -> None:
    lp, fp = leader(), follower()
    run(lp, fp)
    fp.set_local_fingerprints([FP_EVIL])  # e.g. new RTCPeerConnection, new certificate
    ls, _ = run(lp, fp)
    ls.check_peer_fingerprints([FP_EVIL])


# ---------------------------------------------------------------------------------------------
# Malformed messages


def test_every_truncation_of_every_message_is_malformed() -> None:
    lp, fp = leader(), follower()
    for msg in messages(lp, fp):
        for n in range(len(msg)):
            with pytest.raises(MalformedMessage):
                decode_message(msg[:n])
        with pytest.raises(MalformedMessage):
            decode_message(msg + b"\x00")


def test_every_byte_flip_of_every_message_yields_an_error_never_keys() -> None:
    template = messages(leader(), follower())
    for idx in range(3):
        for pos in range(len(template[idx])):
            lp, fp = leader(), follower()
            m1 = lp.initiate(FOLLOWER)
            if idx == 0:
                target, msg, frm = fp, m1, LEADER
            else:
                m2 = fp.handle(m1, LEADER).reply
                assert m2 is not None
                if idx == 1:
                    target, msg, frm = lp, m2, FOLLOWER
                else:
                    m3 = lp.handle(m2, FOLLOWER).reply
                    assert m3 is not None
                    target, msg, frm = fp, m3, LEADER
            bad = bytearray(msg)
            bad[pos] ^= 0x01
            with pytest.raises(HandshakeError):
                target.handle(bytes(bad), frm)
            assert target.session is None


def test_wrong_version_and_magic() -> None:
    m1 = leader().initiate(FOLLOWER)
    with pytest.raises(WrongVersion):
        follower().handle(m1[:3] + b"\x02" + m1[4:], LEADER)
    with pytest.raises(MalformedMessage, match="not a jitsi-teleop"):
        decode_message(b"XYZ" + m1[3:])
    with pytest.raises(MalformedMessage, match="type"):
        decode_message(m1[:4] + b"\x09" + m1[5:])
    with pytest.raises(MalformedMessage, match="too large"):
        decode_message(b"JTP" + b"\x01\x01" + b"\x00" * 9000)


def test_malformed_counted_by_reason() -> None:
    fp = follower()
    for bad in [b"", b"JTP", b"JTP\x02\x01", b"garbage" * 10]:
        with pytest.raises(MalformedMessage):
            fp.handle(bad, LEADER)
    assert fp.counters.malformed == 3 and fp.counters.wrong_version == 1


def test_decode_message_types() -> None:
    m1, m2, m3 = messages(leader(), follower())
    a, b, c = decode_message(m1), decode_message(m2), decode_message(m3)
    assert isinstance(a, Hello) and a.type is MsgType.INIT and a.echo is None
    assert isinstance(b, Hello) and b.type is MsgType.RESPONSE and b.echo == a.nonce
    assert isinstance(c, Confirm) and (c.init_nonce, c.resp_nonce) == (a.nonce, b.nonce)
    assert a.role is Role.LEADER and b.role is Role.FOLLOWER
    assert (a.sender, a.receiver, b.sender, b.receiver) == (LEADER, FOLLOWER, FOLLOWER, LEADER)


def test_constructor_and_initiate_validation() -> None:
    with pytest.raises(ValueError):
        make(Role.LEADER, "")
    with pytest.raises(ValueError):
        make(Role.LEADER, LEADER, room="  ")
    with pytest.raises(ValueError):
        leader().initiate(LEADER)


# ---------------------------------------------------------------------------------------------
# Secrets


def test_passphrase_secret_is_room_salted_and_stable() -> None:
    a = secret_from_passphrase("correct horse battery", "Lab-Room")
    b = secret_from_passphrase("correct horse battery", "lab-room")
    c = secret_from_passphrase("correct horse battery", "other-room")
    assert a.key == b.key and a.key != c.key and a.source == "passphrase"
    with pytest.raises(ValueError):
        secret_from_passphrase("short", "room")


def test_passphrase_mismatch_is_key_mismatch() -> None:
    s1 = secret_from_passphrase("correct horse battery", "lab", n=1 << 10)
    s2 = secret_from_passphrase("correct horse battery!", "lab", n=1 << 10)
    with pytest.raises(KeyMismatch):
        make(Role.FOLLOWER, FOLLOWER, secret=s2, room="lab").handle(
            make(Role.LEADER, LEADER, secret=s1, room="lab").initiate(FOLLOWER), LEADER
        )


def test_key_id_is_short_stable_and_not_the_key() -> None:
    assert len(SECRET.key_id) == 12 and SECRET.key_id == Secret(bytes(range(32))).key_id
    assert SECRET.key_id != WRONG.key_id
    assert SECRET.key_id not in SECRET.key.hex()
    assert SECRET.key.hex() not in repr(SECRET) and SECRET.key_id in repr(SECRET)
    assert leader().key_id == SECRET.key_id


def test_secret_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        Secret(b"x" * 31)


def test_key_file_roundtrip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "teleop.key"
    s = generate_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(key_file=path) == s
    with pytest.raises(FileExistsError):
        generate_key_file(path)
    assert generate_key_file(tmp_path / "other.key").key != s.key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "jitsi-teleop-key-v1",
        "wrong-header AAAA",
        "jitsi-teleop-key-v1 !!!!",
        "jitsi-teleop-key-v1 AAAA",
        "jitsi-teleop-key-v1 " + "A" * 43 + "= extra",
    ],
)
def test_bad_key_files_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_key_file(text)


def test_load_secret_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_secret()
    with pytest.raises(ValueError):
        load_secret(key_file=tmp_path / "k", passphrase="correct horse battery")
    with pytest.raises(ValueError):
        load_secret(passphrase="correct horse battery")
    s = load_secret(passphrase="correct horse battery", room="lab")
    assert s == secret_from_passphrase("correct horse battery", "LAB")
