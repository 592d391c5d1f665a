"""DexterClient <-> dexter-sim over real loopback TCP, plus fake servers for the bad cases.

Most physics tests freeze the simulator's clock (rate=0) and advance it with ``sim.step`` so the
outcome does not depend on how busy the machine is; waits are bounded, never asserted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest

from dexter_driver import kinematics
from dexter_driver import protocol as p
from dexter_driver.client import (
    ClientConfig,
    DexterClient,
    DexterCommandError,
    DexterConnectionError,
    DexterTimeout,
    ReplyMismatch,
)
from dexter_driver.sim import SIM_FORCE_NM_PER_UNIT, DexterSim, SimConfig


def free_tcp_port() -> int:
    """Another free loopback port (the ``tcp_port`` fixture gives one per test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAST = ClientConfig(timeout_s=0.5, connect_timeout_s=3.0, reconnect_min_s=0.05)
BENT = (0.3, 0.5, 0.9, 0.4, 0.2)  # away from the straight-up singularity


@contextlib.asynccontextmanager
async def running(
    port: int, sim_cfg: SimConfig | None = None, client_cfg: ClientConfig = FAST
) -> AsyncIterator[tuple[DexterSim, DexterClient]]:
    cfg = sim_cfg or SimConfig(rate=0.0)
    sim = DexterSim(dataclasses.replace(cfg, port=port))
    await sim.start()
    client = DexterClient("127.0.0.1", port, client_cfg)
    try:
        await client.start()
        yield sim, client
    finally:
        await client.stop()
        await sim.stop()


async def eventually(cond: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``cond`` until true; fail (not a timing assert: a bound on a hang) after ``within``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not await cond():
        if loop.time() > end:
            pytest.fail("condition not reached")
        await asyncio.sleep(0.02)


async def move_to(sim: DexterSim, client: DexterClient, q: tuple[float, ...]) -> None:
    """`a` to q on a frozen-clock sim and let it arrive."""
    await client.move_all_joints(q)
    sim.step(4.0)


def req(job: int, instr: int, text: str) -> bytes:
    return f"{job} {instr} 0 1 {text}".encode().ljust(256, b"\0")


async def raw_request(reader: asyncio.StreamReader, writer, data: bytes) -> p.DexterStatus:  # type: ignore[no-untyped-def]
    writer.write(data)
    await writer.drain()
    return p.decode_status(await asyncio.wait_for(reader.readexactly(240), 5.0))


async def no_reply(reader: asyncio.StreamReader, wait: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(reader.readexactly(240), wait)
    except asyncio.TimeoutError:
        return True
    return False


# -- motion ------------------------------------------------------------------------------------


async def test_a_move_reaches_target(tcp_port: int) -> None:
    async with running(tcp_port, SimConfig(rate=1.0)) as (_sim, client):
        await client.set_parameter("AngularSpeed", p.rad_to_arcsec(math.radians(45)))
        target = (0.2, -0.15, 0.25, -0.1, 0.3)
        st = await client.move_all_joints(target)
        assert st.oplet == "a" and st.error.ok
        await client.wait_until_idle()

        async def arrived() -> bool:
            q = (await client.status()).measured_angles
            return bool(np.allclose(q, target, atol=2e-5))

        await eventually(arrived)
        st = await client.status()
        assert [j.sent for j in st.joints] == [p.rad_to_arcsec(v) for v in target]
        assert st.position_at == pytest.approx(target, abs=1e-5)


async def test_p_target_is_absolute_and_sent_as_offset(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        base = (0.1, 0.2, 0.3, 0.0, -0.1)
        await move_to(sim, client, base)
        target = (0.25, 0.1, 0.45, 0.1, -0.3)
        await client.set_position_target(target)
        assert sim.physics.p_offset == pytest.approx(np.subtract(target, base), abs=1e-5)
        sim.step(1.0)
        assert (await client.status()).measured_angles == pytest.approx(target, abs=2e-5)
        # a later `a` cancels the offset: the arm ends where `a` says
        await move_to(sim, client, base)
        assert not sim.physics.p_offset.any()
        assert (await client.status()).measured_angles == pytest.approx(base, abs=2e-5)


async def test_p_without_a_base_holds_then_tracks(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        target = (0.05, -0.05, 0.1, 0.0, 0.0)
        await client.set_position_target(target)  # base established at the measured pose
        sim.step(0.5)
        assert (await client.status()).measured_angles == pytest.approx(target, abs=2e-5)


async def test_p_speed_is_capped(tcp_port: int) -> None:
    async with running(tcp_port, SimConfig(rate=0.0, p_max_speed=1.0)) as (sim, client):
        await client.set_position_target((0.0, 0.0, 0.0, 0.0, 0.0))
        await client.set_position_target((1.0, 0.0, 0.0, 0.0, 0.0))
        sim.step(0.2)
        q1 = (await client.status()).measured_angles[0]
        assert 0.1 < q1 < 0.25  # ~1 rad/s x 0.2 s, not the whole step


async def test_boundaries_clamp_without_error(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        low, high = p.Instruction.boundaries(1, -0.2, 0.2)
        await client.request(low)
        await client.request(high)
        st = await client.request(p.Instruction.move_all_joints((0.5, 0, 0, 0, 0)))
        sim.step(3.0)
        st = await client.status()
        assert st.measured_angles[0] == pytest.approx(0.2, abs=2e-5)
        assert not st.error.boundary and st.error.ok


async def test_queue_full_withholds_the_reply(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        for i in range(16):
            st = await client.move_all_joints((0.01 * (i % 2 + 1), 0, 0, 0, 0))
            assert st.oplet == "a"
        assert len(sim.physics.queue) == 16
        seventeenth = asyncio.ensure_future(client.move_all_joints((0.0, 0, 0, 0, 0)))
        await asyncio.sleep(0.3)
        assert not seventeenth.done()  # no reply while the FIFO is full
        assert client.connected
        sim.step(0.5)  # the first move finishes, a slot frees
        st = await asyncio.wait_for(seventeenth, 5.0)
        assert st.oplet == "a" and st.error.ok
        assert client.stats.timeouts == 0


async def test_f_and_w_wait_for_the_queue(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await client.move_all_joints((0.2, 0, 0, 0, 0))
        finish = asyncio.ensure_future(client.wait_until_idle())
        await asyncio.sleep(0.2)
        assert not finish.done()
        sim.step(3.0)
        st = await asyncio.wait_for(finish, 5.0)
        assert st.oplet == "F" and not sim.physics.queue
        await client.move_all_joints((0.0, 0, 0, 0, 0))
        write = asyncio.ensure_future(client.request(p.Instruction.write_register(27, 0)))
        await asyncio.sleep(0.2)
        assert not write.done()  # `w` waits for the FIFO to flush first
        sim.step(3.0)
        assert (await asyncio.wait_for(write, 5.0)).oplet == "w"
        assert sim.registers[27] == 0


async def test_cancelled_request_drops_the_stream_and_reconnects(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await client.move_all_joints((0.3, 0, 0, 0, 0))
        finish = asyncio.ensure_future(client.wait_until_idle())
        await asyncio.sleep(0.1)
        finish.cancel()
        with pytest.raises(asyncio.CancelledError):
            await finish
        assert not client.connected  # its late reply would desynchronise the stream
        sim.step(3.0)  # like the robot, the simulator only serves a new socket after `F` ends

        async def back() -> bool:
            return client.connected

        await eventually(back)
        assert (await client.status()).error.ok
        assert client.stats.reconnects == 1


# -- modes and forces --------------------------------------------------------------------------


async def follow_push(tcp_port: int, forces: list[float]) -> float:
    """J2 displacement in follow mode under 1 N·m external torque and the given JnForce."""
    async with running(tcp_port) as (sim, client):
        await move_to(sim, client, BENT)
        await client.set_follow_me()
        assert not sim.physics.delta().any()
        await client.set_joint_forces(forces)
        sim.set_external_torque([0.0, 1.0, 0.0, 0.0, 0.0])
        sim.step(0.5)
        st = await client.status()
        assert st.force_deltas[1] == pytest.approx(st.measured_angles[1] - BENT[1], abs=1e-5)
        return st.measured_angles[1] - BENT[1]


async def test_follow_me_moves_under_external_torque(tcp_port: int) -> None:
    moved = await follow_push(tcp_port, [0, 0, 0, 0, 0])
    assert moved > 0.1


async def test_injected_force_is_felt_as_resistance(tcp_port: int) -> None:
    free = await follow_push(tcp_port, [0, 0, 0, 0, 0])
    resisted = await follow_push(free_tcp_port(), [0, -500, 0, 0, 0])  # -0.5 N·m against +1 N·m
    assert 0.0 < resisted < 0.75 * free
    assert resisted == pytest.approx(free * (1 - 500 * SIM_FORCE_NM_PER_UNIT), rel=0.1)


async def test_joint_forces_send_only_changes(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        sent = client.stats.requests
        await client.set_joint_forces([1, 2, 3, 4, 5])
        assert client.stats.requests == sent + 5
        await client.set_joint_forces([1, 2, 3, 4, -5.4])
        assert client.stats.requests == sent + 6
        await client.set_joint_forces([1, 2, 3, 4, -5])
        assert client.stats.requests == sent + 6  # -5.4 was sent as -5
        await client.set_joint_forces([1, 2, 3, 4, -5], resend=True)
        assert client.stats.requests == sent + 11
        assert sim.params["J5Force"] == ("-5",) and sim.params["J2Force"] == ("2",)
        assert sim.physics.force_units.tolist() == [1, 2, 3, 4, -5]


async def test_injected_force_alone_pushes_the_arm(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await move_to(sim, client, BENT)
        await client.set_follow_me()
        await client.set_joint_forces([0, 0, 0, -800, 0])
        sim.step(0.3)
        assert (await client.status()).measured_angles[3] < BENT[3] - 0.05


async def test_follow_me_external_wrench_moves_the_tip_along_it(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await move_to(sim, client, BENT)
        await client.set_follow_me()
        before = np.array(sim.tool_position())
        sim.set_external_wrench(0.0, 0.0, 15.0)
        sim.step(0.3)
        q = (await client.status()).measured_angles
        after = kinematics.tool_position(q)
        move = after - before
        assert move[2] > 0.01  # pushed up, moved up
        assert move[2] > abs(move[0]) and move[2] > abs(move[1])


async def test_wall_stops_the_tool_tip(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await move_to(sim, client, BENT)
        await client.set_follow_me()
        z0 = sim.tool_position()[2]
        sim.set_wall((0.0, 0.0, -1.0), -(z0 + 0.02), stiffness=20000.0, damping=200.0)
        sim.set_external_wrench(0.0, 0.0, 15.0)  # pushes up into a ceiling 2 cm above
        sim.step(1.5)
        z = kinematics.tool_position((await client.status()).measured_angles)[2]
        assert z0 + 0.015 < z < z0 + 0.025
        sim.clear_wall()
        sim.step(0.3)
        assert kinematics.tool_position((await client.status()).measured_angles)[2] > z0 + 0.03


async def test_operator_hand_holds_and_moves_a_follow_me_arm(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await move_to(sim, client, BENT)
        await client.set_follow_me()
        start = np.array(sim.tool_position())
        sim.set_hand()  # the operator grips the tool where it is
        sim.set_external_torque([0.3, 0.0, 0.0, 0.0, 0.0])  # a disturbance the hand resists
        sim.step(1.0)
        q = (await client.status()).measured_angles
        assert np.linalg.norm(kinematics.tool_position(q) - start) < 0.01
        sim.set_external_torque([0.0] * 5)
        goal = start + np.array([0.05, 0.0, -0.04])
        sim.set_hand(goal)  # the operator moves the tool
        sim.step(2.0)
        q = (await client.status()).measured_angles
        assert np.linalg.norm(kinematics.tool_position(q) - goal) < 0.005
        assert abs(q[4] - BENT[4]) < 0.05  # the grip keeps the wrist where it was
        reply = sim.control('{"op": "hand", "target": [0, 0, "x"]}')
        assert reply["ok"] is False and "hand target" in str(reply["error"])
        sim.clear_external()
        assert sim.physics.hand is None


async def test_a_starved_simulator_skips_time_instead_of_falling_further_behind(
    tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A simulator process that got no CPU for a while (a loaded machine) integrates at most
    ``max_catch_up_s`` of physics for the next request and drops the rest: catching up on all
    of it made every reply later still, until the driver's request timeout dropped it."""
    cfg = SimConfig(rate=1.0, start_q=kinematics.READY)
    async with running(tcp_port, cfg) as (sim, client):
        await client.set_follow_me()
        sim.set_hand()  # an arm that is never at rest: every substep is integrated
        sim.advance()
        before, t_before = sim.dropped_steps, sim.physics.t
        sim._t0 -= 0.5  # as if the process had been starved for half a second
        with caplog.at_level(logging.WARNING, logger="dexter_driver.sim"):
            status = await client.status()  # answered; its advance integrates a bounded slice
        dropped = sim.dropped_steps - before
        assert dropped >= round((0.5 - cfg.max_catch_up_s) / cfg.dt) - 1
        assert sim.physics.t >= t_before + 0.5 - 0.01  # the clock is caught up, physics skipped
        assert "simulator starved of CPU" in caplog.text
        q = status.measured_angles
        assert np.linalg.norm(kinematics.tool_position(q) - sim.tool_position()) < 0.005


async def test_position_mode_into_a_wall_loads_the_servo(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await move_to(sim, client, BENT)
        z0 = sim.tool_position()[2]
        down = np.array(BENT)
        down[1] -= 0.1 * np.sign(kinematics.jacobian(BENT)[2, 1])  # J2 move that lowers the tip
        assert kinematics.tool_position(down)[2] < z0 - 0.03
        sim.set_wall((0.0, 0.0, 1.0), z0 - 0.01)  # a table 1 cm under the tip
        await client.set_position_target(tuple(down))
        sim.step(1.0)
        st = await client.status()
        assert kinematics.tool_position(st.measured_angles)[2] > z0 - 0.012
        # the servo strains toward the unreachable target: set-point minus measured, same sign
        assert st.deltas[1] * (down[1] - BENT[1]) > 0
        assert abs(st.deltas[1]) > 0.02
        assert st.position_at[1] == pytest.approx(down[1], abs=1e-5)


async def test_keep_mode_deflection_shows_in_delta(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await move_to(sim, client, BENT)
        await client.set_follow_me()
        await client.set_keep_position()
        st = await client.status()
        assert st.deltas == pytest.approx((0.0,) * 5, abs=1e-5)
        sim.set_external_torque([0.0, 0.0, 6.0, 0.0, 0.0])
        sim.step(0.5)
        st = await client.status()
        k3 = sim.config.stiffness[2]
        assert st.deltas[2] == pytest.approx(-6.0 / k3, rel=0.05)  # servo pulls back: sp - q < 0
        assert st.pid_deltas[2] == pytest.approx(-6.0 / k3, rel=0.05)
        assert st.measured_angles[2] == pytest.approx(BENT[2] + 6.0 / k3, rel=0.01)
        assert st.deltas[0] == pytest.approx(0.0, abs=1e-5)
        sim.clear_external()
        sim.step(0.5)
        st = await client.status()
        assert st.deltas[2] == pytest.approx(0.0, abs=1e-5)
        assert st.measured_angles == pytest.approx(BENT, abs=2e-5)


async def test_mode_switch_by_command_register(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        await client.request(p.Instruction.write_register(p.COMMAND_REG, p.COMMAND_REG_FOLLOW_ME))
        assert sim.physics.follow
        await client.request(
            p.Instruction.write_register(p.COMMAND_REG, p.COMMAND_REG_KEEP_POSITION)
        )
        assert not sim.physics.follow


async def test_control_port_json_lines(tcp_port: int) -> None:
    ctrl = free_tcp_port()
    async with running(tcp_port, SimConfig(rate=0.0, control_port=ctrl)) as (sim, client):
        await move_to(sim, client, BENT)
        await client.set_follow_me()
        reader, writer = await asyncio.open_connection("127.0.0.1", ctrl)
        try:
            writer.write(b'{"op": "torque", "values": [1, 0, 0, 0, 0]}\n{"op": "bogus"}\n')
            ok = json.loads(await asyncio.wait_for(reader.readline(), 5.0))
            bad = json.loads(await asyncio.wait_for(reader.readline(), 5.0))
        finally:
            writer.close()
        assert ok["ok"] and ok["mode"] == "follow"
        assert not bad["ok"] and "bogus" in bad["error"]
        sim.step(0.3)
        assert (await client.status()).measured_angles[0] > BENT[0] + 0.05


# -- protocol faithfulness ---------------------------------------------------------------------


async def test_unknown_oplet_is_error_1(tcp_port: int) -> None:
    async with running(tcp_port) as (_sim, client):
        st = await client.request("Q", 1, 2)
        assert st.oplet == "Q" and st.error.base == p.ERR_BAD_OPLET
        st = await client.request("S", "NoSuchParameter", 1)
        assert st.error.base == p.ERR_BAD_OPLET
        with pytest.raises(DexterCommandError, match="error 1"):
            await client.set_parameter("RunFile", "noSuchFile.make_ins")
        assert (await client.status()).error.ok
        assert client.connected and client.stats.command_errors == 1


async def test_missing_semicolon_reports_error_2_next_time(tcp_port: int) -> None:
    async with DexterSim(SimConfig(port=tcp_port, rate=0.0)):
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        try:
            writer.write(req(1, 1, "g"))
            await writer.drain()
            assert await no_reply(reader)
            st = await raw_request(reader, writer, req(1, 2, "g;"))
            assert (st.instruction_id, st.error.base) == (2, p.ERR_NO_TERMINATOR)
            st = await raw_request(reader, writer, req(1, 3, "g;"))
            assert st.error.ok
            # one recv() is one message: a second request in the same chunk is never seen
            st = await raw_request(reader, writer, b"1 4 0 1 g;1 5 0 1 g;")
            assert st.instruction_id == 4
            assert await no_reply(reader)
            # firmware tolerance: commas, odd header values, compact args
            st = await raw_request(reader, writer, b"7,8 1 1 1 g ;")
            assert (st.job, st.instruction_id, st.oplet, st.error.base) == (7, 8, "g", 0)
            st = await raw_request(reader, writer, b"1 1 1 1 a 3600,0,0 0 0;")
            assert st.oplet == "a" and st.error.ok
        finally:
            writer.close()


async def test_sim_survives_garbage_requests() -> None:
    """Whatever arrives, the robot answers with one valid status or (no `;`) nothing."""
    sim = DexterSim(SimConfig(rate=0.0))
    rng = random.Random(7)
    alphabet = b"0123456789 ,;-+.aPSgwFzRQJForceBoundryHighLowRunFile\0\xff"
    for _ in range(400):
        n = rng.randint(0, 256)
        chunk = bytes(rng.choice(alphabet) for _ in range(n))
        reply = await asyncio.wait_for(sim.handle_message(chunk), 5.0)
        if reply is not None:
            assert len(reply) == p.REPLY_SIZE
            st = p.decode_status(reply)
            assert st.error.base in (0, 1, 2)
    for text in (b"1 1 1 1 S;", b"1 1 1 1 S RunFile;", b"1 1 1 1 a 1 2;", b"1 1 1 1 w 42;"):
        st = p.decode_status(await sim.handle_message(text))  # type: ignore[arg-type]
        assert st.error.base == p.ERR_BAD_OPLET


async def test_idle_connection_dropped_and_heartbeat_prevents_it(tcp_port: int) -> None:
    async with DexterSim(SimConfig(port=tcp_port, rate=0.0, idle_timeout_s=0.3)):
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        try:
            await raw_request(reader, writer, req(1, 1, "g;"))
            assert await asyncio.wait_for(reader.read(1), 5.0) == b""  # dropped
        finally:
            writer.close()
        client = DexterClient("127.0.0.1", tcp_port, ClientConfig(heartbeat_s=0.1))
        await client.start()
        try:
            await asyncio.sleep(0.8)
            assert client.connected and client.stats.reconnects == 0
            assert client.stats.replies >= 3
        finally:
            await client.stop()


async def test_second_client_waits_for_the_first(tcp_port: int) -> None:
    async with DexterSim(SimConfig(port=tcp_port, rate=0.0)) as sim:
        r1, w1 = await asyncio.open_connection("127.0.0.1", tcp_port)
        await raw_request(r1, w1, req(1, 1, "g;"))
        r2, w2 = await asyncio.open_connection("127.0.0.1", tcp_port)
        try:
            w2.write(req(2, 1, "g;"))
            await w2.drain()
            assert await no_reply(r2)
            await raw_request(r1, w1, req(1, 2, "g;"))  # the first is still served
            w1.close()
            st = p.decode_status(await asyncio.wait_for(r2.readexactly(240), 5.0))
            assert (st.job, st.instruction_id) == (2, 1)
            assert sim.connections == 2
        finally:
            w2.close()


async def test_status_polling_feeds_listeners(tcp_port: int) -> None:
    cfg = ClientConfig(poll_hz=50.0, timeout_s=0.5)
    async with running(tcp_port, client_cfg=cfg) as (_sim, client):
        seen: list[p.DexterStatus] = []
        client.add_status_listener(seen.append)

        async def enough() -> bool:
            return len(seen) >= 5

        await eventually(enough)
        assert client.latest is seen[-1]
        assert [s.instruction_id for s in seen] == sorted(s.instruction_id for s in seen)
        assert client.stats.last_rtt_s is not None


async def test_second_dexter_client_connects_when_the_first_leaves(tcp_port: int) -> None:
    async with running(tcp_port) as (_sim, first):
        cfg = ClientConfig(timeout_s=0.2, reconnect_min_s=0.05, reconnect_max_s=0.2)
        second = DexterClient("127.0.0.1", tcp_port, cfg)
        await second.start(wait=False)
        try:

            async def handshake_timed_out() -> bool:
                return isinstance(second.last_error, DexterTimeout)

            await eventually(handshake_timed_out)
            assert not second.connected  # queued behind the first, like on the robot
            assert (await first.status()).error.ok
            await first.stop()

            async def second_up() -> bool:
                return second.connected

            await eventually(second_up)
            assert (await second.status()).error.ok
        finally:
            await second.stop()


async def test_other_oplets_sleep_relative_move_index_and_servos(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        st = await client.request(p.Instruction.sleep(0.05))
        assert st.oplet == "z" and st.error.ok
        assert st.clock_s > 1.6e9  # the robot clock, not an echo of the request's start
        await client.request("S", 36, 200000)  # AngularSpeed by its index
        assert sim.physics.speed == pytest.approx(p.arcsec_to_rad(200000))
        await client.move_all_joints((0.1, 0, 0, 0, 0), j6_rad=math.radians(29.0), j7_rad=0.5)
        await client.request("R", 3600, 0, 0, 0, 0)  # relative: +1 degree on J1
        sim.step(3.0)
        st = await client.status()
        assert st.measured_angles[0] == pytest.approx(0.1 + math.radians(1.0), abs=2e-5)
        assert st.j6.position_units == 612
        assert st.j6.position == pytest.approx(math.radians(29.0))
        assert st.j7.position == pytest.approx(0.5, abs=0.01)
        await client.request("a", *[p.rad_to_arcsec(v) for v in (0.2, 0, 0, 0, 0)], "N", "NaN")
        sim.step(3.0)
        st = await client.status()
        assert st.j6.position_units == 612  # N / NaN leave the servos alone


# -- bad input ---------------------------------------------------------------------------------


class FakeDexter:
    """A raw TCP peer: answers the handshake like a robot, then does what ``behaviour`` says."""

    def __init__(self, port: int, behaviour: str, good_replies: int = 1) -> None:
        self.port, self.behaviour, self.good = port, behaviour, good_replies
        self.server: asyncio.AbstractServer | None = None
        self.connections = 0

    async def __aenter__(self) -> FakeDexter:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while chunk := await reader.read(256):
                n += 1
                rq = p.parse_request(chunk)
                good = _reply(rq.job, rq.instruction_id, rq.oplet)
                if n <= self.good:
                    writer.write(good)
                elif self.behaviour == "truncate":
                    writer.write(good[:100])
                    await writer.drain()
                    break
                elif self.behaviour == "short":
                    writer.write(good[:100])  # and keeps the socket open
                elif self.behaviour == "garbage":
                    writer.write(os.urandom(240))
                elif self.behaviour == "mismatch":
                    writer.write(_reply(rq.job, rq.instruction_id + 7, rq.oplet))
                elif self.behaviour == "close":
                    break
                # "silent": never answers
                await writer.drain()
        except (ConnectionError, p.ProtocolError):
            pass
        finally:
            writer.close()


def _reply(job: int, instr: int, oplet: str) -> bytes:
    w = [0] * 60
    w[0], w[1], w[2], w[4] = job, instr, 1_700_000_000, ord(oplet)
    return struct.pack("<60i", *w)


async def test_peer_that_never_answers_fails_start_clearly(tcp_port: int) -> None:
    cfg = ClientConfig(timeout_s=0.2, connect_timeout_s=1.0, reconnect_min_s=0.05)
    async with FakeDexter(tcp_port, "silent", good_replies=0) as fake:
        client = DexterClient("127.0.0.1", tcp_port, cfg)
        with pytest.raises(DexterConnectionError, match="no reply") as info:
            await client.start()
        assert "within" in str(info.value)
        assert fake.connections >= 2  # it kept retrying with backoff
        assert not client.connected


async def test_peer_goes_silent_mid_session_times_out_and_reconnects(tcp_port: int) -> None:
    cfg = ClientConfig(timeout_s=0.2, reconnect_min_s=0.05)
    async with FakeDexter(tcp_port, "silent", good_replies=1) as fake:
        client = DexterClient("127.0.0.1", tcp_port, cfg)
        await client.start()
        try:
            with pytest.raises(DexterTimeout, match="no reply"):
                await client.status()
            assert client.stats.timeouts == 1

            async def reconnected() -> bool:
                return fake.connections >= 2

            await eventually(reconnected)
        finally:
            await client.stop()


@pytest.mark.parametrize(
    ("behaviour", "error", "match"),
    [
        ("truncate", DexterConnectionError, "100 of 240"),
        ("close", DexterConnectionError, "0 of 240"),
        ("short", DexterTimeout, "no reply"),
        ("garbage", p.ProtocolError, None),
        ("mismatch", ReplyMismatch, "expected"),
    ],
)
async def test_bad_replies_raise_and_reconnect(
    tcp_port: int, behaviour: str, error: type[Exception], match: str | None
) -> None:
    cfg = ClientConfig(timeout_s=0.3, reconnect_min_s=0.05)
    async with FakeDexter(tcp_port, behaviour) as fake:
        client = DexterClient("127.0.0.1", tcp_port, cfg)
        await client.start()
        try:
            with pytest.raises(error, match=match):
                await client.status()
            if behaviour in ("garbage", "mismatch"):
                assert client.stats.protocol_errors == 1

            async def reconnected() -> bool:
                return client.connected and fake.connections >= 2

            await eventually(reconnected)
            assert client.stats.reconnects >= 1
        finally:
            await client.stop()


async def test_garbage_peer_fails_start_with_protocol_error(tcp_port: int) -> None:
    cfg = ClientConfig(timeout_s=0.3, connect_timeout_s=0.6, reconnect_min_s=0.05)
    async with FakeDexter(tcp_port, "garbage", good_replies=0):
        client = DexterClient("127.0.0.1", tcp_port, cfg)
        with pytest.raises(DexterConnectionError, match=r"Malformed|Mismatch"):
            await client.start()


async def test_dead_socket_reconnects(tcp_port: int) -> None:
    async with running(tcp_port) as (sim, client):
        for w in list(sim._writers):  # the robot side drops the connection
            w.close()
        with pytest.raises(DexterConnectionError):
            for _ in range(3):
                await client.status()
                await asyncio.sleep(0.05)

        async def back() -> bool:
            return client.connected

        await eventually(back)
        assert (await client.status()).error.ok
        assert client.stats.reconnects == 1


async def test_robot_restart_reconnects(tcp_port: int) -> None:
    sim = DexterSim(SimConfig(port=tcp_port, rate=0.0))
    await sim.start()
    client = DexterClient("127.0.0.1", tcp_port, FAST)
    await client.start()
    try:
        await sim.stop()
        with pytest.raises(DexterConnectionError):
            await client.status()
            await client.status()
        assert not client.connected
        await asyncio.sleep(0.2)  # a few failed attempts with backoff
        sim = DexterSim(SimConfig(port=tcp_port, rate=0.0))
        await sim.start()

        async def back() -> bool:
            return client.connected

        await eventually(back)
        assert client.stats.connect_failures >= 1
    finally:
        await client.stop()
        await sim.stop()


async def test_link_listeners_hear_the_loss_and_the_return_after_a_fresh_state(
    tcp_port: int,
) -> None:
    """A controller holds on ``False`` and re-syncs on ``True``: by then the robot's state has
    been re-read (the handshake `g`), and a restarted robot reports where it booted."""
    sim = DexterSim(SimConfig(port=tcp_port, rate=0.0, start_q=BENT))
    await sim.start()
    client = DexterClient("127.0.0.1", tcp_port, FAST)
    events: list[tuple[bool, tuple[float, ...] | None]] = []

    def on_link(up: bool) -> None:
        latest = client.latest.measured_angles if client.latest else None
        events.append((up, latest))

    client.add_link_listener(on_link)
    await client.start()
    try:
        assert events and events[0][0] is True
        await sim.stop()
        with pytest.raises(DexterConnectionError):
            await client.status()
            await client.status()
        assert [up for up, _ in events] == [True, False]
        sim = DexterSim(SimConfig(port=tcp_port, rate=0.0))  # boots at zero this time
        await sim.start()

        async def back() -> bool:
            return len(events) == 3

        await eventually(back)
        up, seen = events[2]
        assert up and seen is not None
        np.testing.assert_allclose(seen, (0.0,) * 5, atol=1e-9)  # the new pose, read already
        client.remove_link_listener(on_link)
    finally:
        await client.stop()
        await sim.stop()
    assert len(events) == 3  # a listener removed hears nothing more


async def test_request_when_not_connected_is_immediate_error() -> None:
    client = DexterClient("127.0.0.1", free_tcp_port(), FAST)
    with pytest.raises(DexterConnectionError, match="not connected"):
        await client.status()


async def test_nan_and_out_of_limit_targets(tcp_port: int, caplog) -> None:  # type: ignore[no-untyped-def]
    async with running(tcp_port) as (sim, client):
        sent = client.stats.requests
        for bad in ((math.nan, 0, 0, 0, 0), (0, 0, 0, 0, math.inf), (0, 0, 0, 0)):
            with pytest.raises(ValueError):
                await client.move_all_joints(bad)
            with pytest.raises(ValueError):
                await client.set_position_target(bad)
        with pytest.raises(ValueError):
            await client.set_joint_forces([0, math.nan, 0, 0, 0])
        assert client.stats.requests == sent  # nothing reached the wire
        with caplog.at_level(logging.WARNING, logger="dexter_driver.client"):
            await client.move_all_joints((10.0, -10.0, 0.0, 0.0, 0.0))
        assert "clamped" in caplog.text
        assert client.stats.clamped == 1
        lim = p.HDI_JOINT_LIMITS_RAD
        assert sim.physics.a_goal[0] == pytest.approx(lim[0][1], abs=1e-5)
        assert sim.physics.a_goal[1] == pytest.approx(lim[1][0], abs=1e-5)


async def test_sim_port_in_use(tcp_port: int) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", tcp_port))
        blocker.listen()
        with pytest.raises(OSError):
            await DexterSim(SimConfig(port=tcp_port)).start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dexter_driver.sim",
            "--port",
            str(tcp_port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30.0)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0] and str(tcp_port) in lines[0]
