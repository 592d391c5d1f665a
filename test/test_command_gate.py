"""Driver command gate: nothing non-finite or out of limits reaches the robot; silence holds."""

from __future__ import annotations

import math

import pytest

from dexter_driver.command import (
    CommandError,
    CommandGate,
    ForceGate,
    GateConfig,
    GateState,
    order_values,
)

NAMES = ("j1", "j2", "j3")
CFG = GateConfig(NAMES, (-1.0, -2.0, -3.0), (1.0, 2.0, 3.0), timeout_s=0.2)


def test_order_by_name_and_by_position() -> None:
    assert order_values(NAMES, ["j3", "j1", "j2"], [3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)
    assert order_values(NAMES, [], [0.1, 0.2, 0.3]) == (0.1, 0.2, 0.3)


@pytest.mark.parametrize(
    ("names", "values", "needle"),
    [
        (["j1", "j2", "jx"], [0, 0, 0], "unknown joint names ['jx']"),
        (["j1", "j2"], [0, 0], "lacks joints ['j3']"),
        (["j1", "j2", "j3"], [0, 0], "3 names but 2 values"),
        ([], [0, 0], "expected 3 values, got 2"),
        ([], [0, math.nan, 0], "non-finite value for joints ['j2']"),
        (["j1", "j2", "j3"], [math.inf, 0, -math.inf], "['j1', 'j3']"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(names, values, needle) -> None:
    gate = CommandGate(CFG)
    with pytest.raises(CommandError) as err:
        gate.command(names, values, now=0.0)
    assert needle in str(err.value)
    assert gate.counters.rejected == 1
    assert gate.state is GateState.IDLE  # a bad command never starts tracking


def test_out_of_limit_targets_are_clamped_and_counted() -> None:
    gate = CommandGate(CFG)
    d = gate.command([], [5.0, -5.0, 0.5], now=0.0)
    assert d.target == (1.0, -2.0, 0.5)
    assert d.clamped and gate.counters.clamped == 1


def test_silence_holds_the_measured_position_once() -> None:
    gate = CommandGate(CFG)
    gate.command([], [0.9, 0.0, 0.0], now=0.0)
    assert gate.tick(0.1, measured=(0.3, 0.0, 0.0)) is None  # still fresh
    hold = gate.tick(0.25, measured=(0.3, 0.01, 0.0))
    assert hold is not None and hold.state is GateState.HOLDING
    assert hold.target == (0.3, 0.01, 0.0)
    assert gate.tick(0.5, measured=(0.3, 0.01, 0.0)) is None  # held once, not re-sent
    assert gate.counters.holds == 1
    # a fresh command resumes tracking
    assert gate.command([], [0.2, 0.0, 0.0], now=0.6).state is GateState.TRACKING


def test_hold_without_measurement_keeps_last_target_and_clamps_measurement() -> None:
    gate = CommandGate(CFG)
    gate.command([], [0.5, 0.5, 0.5], now=0.0)
    assert gate.tick(1.0, measured=None).target == (0.5, 0.5, 0.5)
    gate.command([], [0.5, 0.5, 0.5], now=2.0)
    # a measurement outside the limits (e.g. an arm pushed by hand) is never sent as a target
    assert gate.tick(3.0, measured=(9.0, 0.0, 0.0)).target == (1.0, 0.0, 0.0)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        GateConfig(NAMES, (0.0,), (1.0,))
    with pytest.raises(ValueError):
        GateConfig(("a",), (1.0,), (0.0,))
    with pytest.raises(ValueError):
        GateConfig(("a",), (0.0,), (1.0,), timeout_s=0)


def test_force_gate_saturates_and_goes_to_zero_when_stale() -> None:
    gate = ForceGate(NAMES, (1.0, 1.0, 0.5), timeout_s=0.2)
    assert gate.command(["j2", "j1", "j3"], [-3.0, 0.5, 0.7], now=0.0) == (0.5, -1.0, 0.5)
    assert gate.saturated == 1
    with pytest.raises(CommandError):
        gate.command([], [math.nan, 0, 0], now=0.1)
    assert gate.rejected == 1
    assert gate.tick(0.15) is None
    assert gate.tick(0.3) == (0.0, 0.0, 0.0)
    assert gate.tick(0.4) is None
