"""The aiortc data-channel link on loopback: connect, both channels, newest-wins sending,
strict descriptions, loopback-only candidates, DTLS fingerprint enforcement."""

from __future__ import annotations

import asyncio

import pytest

from jitsi_teleop.links.base import FrameTooLarge, LinkClosed, LinkError
from jitsi_teleop.links.p2p import (
    DescriptionError,
    P2PConfig,
    P2PDescription,
    P2PLink,
    loopback_only,
    no_loopback,
)

pytestmark = pytest.mark.timeout(60)
CFG = P2PConfig(candidate_filter=loopback_only, connect_timeout=10, latest_datagrams=False)


async def connected_pair(cfg: P2PConfig = CFG):
    a, b = P2PLink("b", cfg, controlling=True), P2PLink("a", cfg, controlling=False)
    da, db = await a.describe(), await b.describe()
    await asyncio.gather(a.connect(db), b.connect(da))
    return a, b


async def until(pred, what: str, n: int = 500) -> None:
    for _ in range(n):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


async def test_description_has_loopback_candidates_only():
    link = P2PLink("peer", CFG, controlling=True)
    try:
        d = await link.describe()
        hosts = [c.split(" ")[4] for c in d.candidates]
        assert hosts and all(loopback_only(h) for h in hosts)
        assert set(d.fingerprints) == set(link.local_fingerprints)
        assert P2PDescription.from_dict(d.to_dict()) == d
    finally:
        await link.close()


async def test_streams_flow_on_both_channels_and_the_latest_channel_never_queues():
    a, b = await connected_pair()
    got: list[tuple[int, bytes]] = []
    b.set_receive_callback(lambda nick, sid, p: got.append((sid, p)))
    try:
        assert a.ready and b.ready and a.state == "open"
        # a burst in one loop iteration: the first goes out, later ones wait in one slot per
        # stream and the newest replaces older ones (nothing piles up in SCTP)
        for i in range(100):
            a.send(5, b"L%d" % i, latest=True)
            a.send(6, b"R%d" % i, latest=False)
        assert a.stats.pending_latest <= 1 and a.stats.thinned >= 90
        await until(lambda: (5, b"L99") in got, "newest latest frame")
        await until(lambda: len([p for s, p in got if s == 6]) == 100, "reliable frames")
        assert [p for s, p in got if s == 6] == [b"R%d" % i for i in range(100)]
        assert [p for s, p in got if s == 5] == [b"L0", b"L99"]
        with pytest.raises(FrameTooLarge):
            a.send(1, bytes(70_000), latest=False)
        with pytest.raises(ValueError):
            a.send(70_000, b"x", latest=True)
    finally:
        await a.close()
    await until(lambda: b.state == "failed", "peer notices the close")
    with pytest.raises(LinkClosed):
        a.send(1, b"x", latest=True)
    await b.close()


async def test_bad_descriptions_are_refused():
    link = P2PLink("peer", CFG, controlling=True)
    good = (await link.describe()).to_dict()
    for bad in (
        None,
        {**good, "v": 3},
        {**good, "extra": 1},
        {**good, "candidates": []},
        {**good, "candidates": ["not-an-ip 1"]},
        {**good, "candidates": ["127.0.0.1 70000"]},
        {**good, "ufrag": "x y"},
        {**good, "sctp_port": True},
        {**good, "fingerprints": []},
    ):
        with pytest.raises(DescriptionError):
            P2PDescription.from_dict(bad)
    await link.close()


async def test_never_talks_to_addresses_the_filter_excludes():
    a = P2PLink("b", CFG, controlling=True)
    other = P2PLink("a", P2PConfig(candidate_filter=loopback_only), controlling=False)
    d = await other.describe()
    remote = P2PDescription(d.ufrag, d.pwd, ("192.0.2.1 9", "10.1.2.3 9"), d.fingerprints)
    await a.describe()
    with pytest.raises(LinkError, match="filter"):
        await a.connect(remote)
    assert a.state == "failed"
    assert no_loopback("192.0.2.1") and not no_loopback("127.0.0.1")
    await other.close()


async def test_dtls_refuses_a_peer_whose_certificate_does_not_match():
    cfg = P2PConfig(candidate_filter=loopback_only, connect_timeout=5)
    a, b = P2PLink("b", cfg, controlling=True), P2PLink("a", cfg, controlling=False)
    da, db = await a.describe(), await b.describe()
    forged = P2PDescription(db.ufrag, db.pwd, db.candidates, ("sha-256 " + ":".join(["AB"] * 32),))
    results = await asyncio.gather(
        a.connect(forged),
        b.connect(da),
        return_exceptions=True,
    )
    assert isinstance(results[0], LinkError)
    assert not a.ready
    await a.close()
    await b.close()


async def test_latest_frames_can_travel_as_datagrams_over_their_own_ice_connection():
    cfg = P2PConfig(candidate_filter=loopback_only, latest_datagrams=True)
    a, b = await connected_pair(cfg)
    got: list[tuple[int, bytes]] = []
    b.set_receive_callback(lambda nick, sid, p: got.append((sid, p)))
    try:
        assert a.latest_transport == "datagram" and b.latest_transport == "datagram"
        for i in range(50):
            a.send(5, b"L%d" % i, latest=True)
            a.send(6, b"R%d" % i, latest=False)
            await asyncio.sleep(0.002)
        await until(lambda: (5, b"L49") in got, "datagram frames")
        await until(lambda: len([p for s, p in got if s == 6]) == 50, "reliable frames")
        assert a.stats.thinned == 0  # datagrams never wait behind a congestion window
    finally:
        await a.close()
        await b.close()
    # one end without datagrams: latest frames use the unordered channel
    plain = P2PConfig(candidate_filter=loopback_only, latest_datagrams=False)
    c, d = P2PLink("d", cfg, controlling=True), P2PLink("c", plain, controlling=False)
    dc, dd = await c.describe(), await d.describe()
    assert dc.datagram is not None and dd.datagram is None
    assert P2PDescription.from_dict(dc.to_dict()) == dc
    await asyncio.gather(c.connect(dd), d.connect(dc))
    assert c.latest_transport == "channel"
    await c.close()
    await d.close()
