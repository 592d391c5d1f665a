"""ArmMapping: leader <-> follower joint order, scale and offset; torques by the transpose."""

from __future__ import annotations

import numpy as np
import pytest

from jitsi_teleop.teleop.mapping import ArmMapping


def test_identity_round_trip() -> None:
    m = ArmMapping.identity()
    q = np.array([0.1, -0.2, 0.3, -0.4, 0.5])
    np.testing.assert_allclose(m.leader_to_follower(q), q)
    np.testing.assert_allclose(m.follower_to_leader(q), q)
    np.testing.assert_allclose(m.torque_to_leader(q), q)


def test_permutation_scale_offset_round_trip() -> None:
    m = ArmMapping(
        order=(1, 0, 2, 4, 3), scale=(1.0, -1.0, 0.5, 2.0, 1.0), offset=(0, 0.1, 0, 0, -0.2)
    )
    q = np.array([0.1, -0.2, 0.3, -0.4, 0.5])
    f = m.leader_to_follower(q)
    np.testing.assert_allclose(f, [-0.2, -0.1 + 0.1, 0.15, 1.0, -0.4 - 0.2])
    np.testing.assert_allclose(m.follower_to_leader(f), q)


def test_torque_mapping_preserves_power() -> None:
    """tau_leader . qd_leader == tau_follower . qd_follower: the mapping adds no energy."""
    rng = np.random.default_rng(3)
    m = ArmMapping(order=(4, 2, 0, 1, 3), scale=(1.5, -0.7, 1.0, 2.0, -1.0), offset=(0.1,) * 5)
    for _ in range(20):
        qd_leader = rng.normal(size=5)
        tau_follower = rng.normal(size=5)
        qd_follower = m.velocity_to_follower(qd_leader)
        tau_leader = m.torque_to_leader(tau_follower)
        assert tau_leader @ qd_leader == pytest.approx(tau_follower @ qd_follower)


def test_from_names_with_rename() -> None:
    m = ArmMapping.from_names(
        ["a", "b", "c"], ["y", "a", "b"], rename={"y": "c"}, scale=[1, 2, 3], offset=[0, 0, 1]
    )
    assert m.order == (2, 0, 1)
    np.testing.assert_allclose(m.leader_to_follower([1.0, 2.0, 3.0]), [3.0, 2.0, 7.0])
    with pytest.raises(ValueError, match="no leader joint"):
        ArmMapping.from_names(["a", "b"], ["a", "z"])


def test_nan_passes_through_for_the_safety_filter_to_see() -> None:
    out = ArmMapping.identity().leader_to_follower([0.0, np.nan, 0.0, 0.0, 0.0])
    assert np.isnan(out[1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"order": (0, 0, 1, 2, 3)},
        {"scale": (1.0, 0.0, 1.0, 1.0, 1.0)},
        {"offset": (0.0, float("nan"), 0.0, 0.0, 0.0)},
        {"scale": (1.0, 1.0)},
    ],
)
def test_invalid_mappings_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ArmMapping(**kwargs)


def test_wrong_length_refused() -> None:
    with pytest.raises(ValueError, match="expected 5"):
        ArmMapping.identity().leader_to_follower([0.0, 1.0])
