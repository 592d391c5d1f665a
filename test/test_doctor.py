"""``jitsi-teleop doctor`` as a subprocess against the test Prosody: exit codes and output."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from conftest import free_tcp_port
from prosody_server import eventually, room_config, run_doctor

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(90)]


def explicit(prosody, room: str) -> list[str]:
    return [
        "--websocket",
        prosody.websocket_url,
        "--domain",
        prosody.domain,
        "--muc",
        prosody.muc_domain,
        "--room",
        room,
        "--timeout",
        "15",
    ]


async def test_doctor_success_lists_endpoints_json(prosody, rooms, room_name):
    leader = rooms(
        room_config(prosody, room_name, teleop_role="leader", robot="dexter-a", key_id="ab12")
    )
    human = rooms(room_config(prosody, room_name, teleop_role=None))
    await leader.join()
    await human.join()
    code, out, err = await run_doctor(*explicit(prosody, room_name), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["exit_code"] == 0
    assert [(e["nick"], e["role"], e["robot"]) for e in report["endpoints"]] == [
        (leader.nick, "leader", "dexter-a")
    ]
    assert report["other_occupants"] == 1
    urls = [u for s in report["ice_servers"] for u in s["urls"]]
    assert "turn:127.0.0.1:3478?transport=udp" in urls
    assert report["rtt_server_ms"] > 0 and report["rtt_room_ms"] > 0
    # the doctor is not mistaken for a peer, and it has left again
    await eventually(lambda: len(leader.occupants) == 2, what="doctor left")
    assert [p.nick for p in human.peers] == [leader.nick]


async def test_doctor_over_tcp_human_output(prosody, room_name):
    code, out, err = await run_doctor(
        "--tcp", f"127.0.0.1:{prosody.c2s_port}", "--domain", prosody.domain, "--room", room_name
    )
    assert code == 0, err
    assert out.startswith("doctor: OK")
    assert "rtt server" in out and "turn:127.0.0.1:3478" in out


async def test_doctor_from_meeting_url(prosody, room_name):
    config_js = f"""
var config = {{
    hosts: {{
        domain: '{prosody.domain}',
        muc: 'conference.' + subdomain + '{prosody.domain}',
    }},
    // websocket: 'wss://elsewhere/xmpp-websocket',
    websocket: '{prosody.websocket_url}',
}};"""
    app = web.Application()

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(text=config_js)

    app.router.add_get("/config.js", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        code, out, err = await run_doctor(f"http://127.0.0.1:{port}/{room_name.upper()}", "--json")
    finally:
        await runner.cleanup()
    assert code == 0, err
    report = json.loads(out)
    assert report["room_jid"] == f"{room_name}@conference.{prosody.domain}"
    # config.js names no focus, so focus.<domain> is tried; this server has none connected
    assert report["focus"] == f"focus.{prosody.domain}" and report["focus_ready"] is None


async def test_doctor_wrong_password(prosody, rooms, room_name):
    owner = rooms(room_config(prosody, room_name, teleop_role="leader"))
    await owner.join()
    await owner.set_password("right")
    code, _out, err = await run_doctor(*explicit(prosody, room_name), "--password", "wrong")
    assert code == 6
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "password" in lines[0]
    code, _out, err = await run_doctor(*explicit(prosody, room_name), "--password", "right")
    assert code == 0, err


async def test_doctor_unreachable_and_usage(room_name):
    port = free_tcp_port()
    code, out, err = await run_doctor(
        "--websocket",
        f"ws://127.0.0.1:{port}/xmpp-websocket",
        "--domain",
        "meet.test",
        "--room",
        room_name,
    )
    assert code == 3 and "unreachable" in err and len(err.strip().splitlines()) == 1
    code, out, err = await run_doctor(
        "--tcp", f"127.0.0.1:{port}", "--domain", "meet.test", "--room", room_name, "--json"
    )
    assert code == 3 and json.loads(out)["kind"] == "unreachable"
    code, out, err = await run_doctor("--domain", "meet.test")
    assert code == 2 and "meeting URL" in err
    code, out, err = await run_doctor(f"http://127.0.0.1:{port}/room")
    assert code == 8  # config.js could not be fetched


async def test_doctor_shows_copied_role_claims_and_who_may_kick(prosody, rooms, room_name):
    """A room under attack: a second occupant copies the leader's presence. The doctor says
    that two occupants claim the role (at most one can prove it) and who may kick."""
    leader = rooms(room_config(prosody, room_name, teleop_role="leader", key_id="ab12"))
    copycat = rooms(room_config(prosody, room_name, teleop_role="leader", key_id="ab12"))
    await leader.join()  # first in: owns the room on this server
    await copycat.join()
    code, out, err = await run_doctor(*explicit(prosody, room_name), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["role_claims"] == {"leader": 2}
    assert any(m.startswith(leader.nick) for m in report["moderators"])
    assert not any(m.startswith(copycat.nick) for m in report["moderators"])
    assert set(report["refusals"]) >= {"invalid_presences", "key_conflicts", "iq_dropped"}
    assert report["refusals"]["key_conflicts"] >= 1  # the copied role/key was noticed
    code, out, err = await run_doctor(*explicit(prosody, room_name))
    assert code == 0, err
    assert "2 occupants claim the leader role" in out and "may kick" in out
