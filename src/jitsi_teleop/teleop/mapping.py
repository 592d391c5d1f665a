"""Joint mapping between the leader and the follower arm: order, scale and offset per joint.

The two Dexters need not be mounted or calibrated alike: a follower joint ``i`` takes leader joint
``order[i]``, multiplied by ``scale[i]``, plus ``offset[i]`` (rad). Torques go back through the
transpose of the same linear map, so the mapping neither creates nor destroys power
(tau_leader · qdot_leader = tau_follower · qdot_follower), which the passivity bookkeeping relies
on. Pure: numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ArmMapping"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ArmMapping:
    """Follower joint i = scale[i] * leader joint order[i] + offset[i]."""

    order: tuple[int, ...] = (0, 1, 2, 3, 4)
    scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    offset: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        n = len(self.order)
        if len(self.scale) != n or len(self.offset) != n:
            raise ValueError("order, scale and offset need the same length")
        if sorted(self.order) != list(range(n)):
            raise ValueError(f"order must be a permutation of 0..{n - 1}, got {self.order}")
        if not all(np.isfinite(self.scale)) or not all(np.isfinite(self.offset)):
            raise ValueError("scale and offset must be finite")
        if any(s == 0.0 for s in self.scale):
            raise ValueError("a zero scale cannot be inverted (the follower could not report back)")

    @classmethod
    def identity(cls, n: int = 5) -> ArmMapping:
        return cls(tuple(range(n)), (1.0,) * n, (0.0,) * n)

    @classmethod
    def from_names(
        cls,
        leader_names: Sequence[str],
        follower_names: Sequence[str],
        scale: Sequence[float] | None = None,
        offset: Sequence[float] | None = None,
        rename: dict[str, str] | None = None,
    ) -> ArmMapping:
        """Build the order from joint names; ``rename`` maps follower name -> leader name."""
        rename = rename or {}
        leader_index = {name: i for i, name in enumerate(leader_names)}
        if len(leader_names) != len(follower_names):
            raise ValueError("leader and follower need the same number of joints")
        try:
            order = tuple(leader_index[rename.get(f, f)] for f in follower_names)
        except KeyError as exc:
            raise ValueError(f"follower joint {exc.args[0]!r} has no leader joint") from None
        n = len(follower_names)
        return cls(
            order,
            tuple(float(s) for s in scale) if scale is not None else (1.0,) * n,
            tuple(float(o) for o in offset) if offset is not None else (0.0,) * n,
        )

    @property
    def size(self) -> int:
        return len(self.order)

    def leader_to_follower(self, q_leader: ArrayLike) -> FloatArray:
        """Leader joint positions -> follower joint targets (NaN passes through, on purpose:
        rejecting it is the safety filter's job, and it must see it)."""
        q = self._vector(q_leader)
        return np.asarray(self.scale) * q[list(self.order)] + np.asarray(self.offset)

    def follower_to_leader(self, q_follower: ArrayLike) -> FloatArray:
        """Inverse of :meth:`leader_to_follower` (used to compare poses on the leader side)."""
        q = self._vector(q_follower)
        out = np.empty(self.size)
        out[list(self.order)] = (q - np.asarray(self.offset)) / np.asarray(self.scale)
        return out

    def velocity_to_follower(self, qd_leader: ArrayLike) -> FloatArray:
        qd = self._vector(qd_leader)
        return np.asarray(self.scale) * qd[list(self.order)]

    def torque_to_leader(self, tau_follower: ArrayLike) -> FloatArray:
        """Follower joint torques -> leader joint torques by the transpose (power preserving)."""
        tau = self._vector(tau_follower)
        out = np.empty(self.size)
        out[list(self.order)] = np.asarray(self.scale) * tau
        return out

    def _vector(self, values: ArrayLike) -> FloatArray:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size != self.size:
            raise ValueError(f"expected {self.size} joint values, got {v.size}")
        return v
