"""Dexter forward kinematics, geometric Jacobian and wrench mapping (pure: numpy only, no I/O).

Conventions follow docs/dexter-protocol.md §3 and §5, i.e. the robot's own (firmware and DDE):

* Base frame: Z up, +Y = "front" (where the tool points at home), +X to the right, origin on the
  J1 axis at the base plate (J2 pivot at height L1).
* ``q`` = J1..J5 in radians with the robot's signs: J1 and J5 positive clockwise seen from above,
  J2..J4 positive tilting forward (toward +Y at J1 = 0). All zeros = arm straight up, link 5
  horizontal along +Y; HDI tip at zero = (0, 0.08244, 0.941292).
* Tool frame (the DDE ``#POM`` orientation, identity at zero):
  ``y`` = tool pointing direction ``d`` (wrist -> tip), ``z`` = link-4 axis (J4 pivot -> J5 pivot,
  i.e. minus the J5 rotation axis), ``x = y × z``. Its origin is the tool tip (``#POM`` reports the
  wrist point instead; the orientation is the same). The URDF frame ``tool0`` is this frame.

J6 (tool roll) and J7 (gripper) do not move the tip and are not part of these functions.

Joint axes in the base frame (what the Jacobian is built from): J1 = -z through the origin;
J2, J3, J4 = n = (-cos q1, sin q1, 0) through the shoulder, elbow and wrist-pitch pivots;
J5 = -(link-4 axis) through the wrist point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from transforms3d.quaternions import mat2quat

from dexter_driver.protocol import HDI_JOINT_LIMITS_DEG

__all__ = [
    "HD",
    "HDI",
    "HDI_LIMITS_DEG",
    "JOINT_NAMES",
    "LinkLengths",
    "forward",
    "jacobian",
    "joint_axes",
    "joint_torques_from_wrench",
    "tip_and_jacobian",
    "tip_force_from_joint_torques",
    "tool_direction",
    "tool_pose_xyz_quat",
    "tool_position",
    "wrench_from_joint_torques",
    "wrench_to_tool_frame",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class LinkLengths:
    """Pivot-to-pivot link lengths in metres; ``l5`` is J5 axis to tool tip."""

    l1: float
    l2: float
    l3: float
    l4: float
    l5: float


#: Dexter HDI, from the robot's Defaults.make_ins (the wiki's L4/L5 differ; the robot wins).
HDI = LinkLengths(0.2352, 0.339092, 0.3075, 0.0595, 0.08244)
#: A ready pose: tool pointing straight down, tip at (0, 0.467, 0.499) m, well away from the
#: singular home pose (all zero, arm straight up) where teleoperation starts badly.
READY: tuple[float, ...] = (0.0, 0.3, 1.2, 0.07, 0.0)
#: Dexter HD, from the firmware's L[] table.
HD = LinkLengths(0.228600, 0.320676, 0.330201, 0.050801, 0.082551)

#: Joint names as used in the URDF and in ``sensor_msgs/JointState``.
JOINT_NAMES: tuple[str, ...] = ("j1", "j2", "j3", "j4", "j5", "j6", "j7")

#: HDI joint limits in degrees by joint name: J1..J5 as the protocol module defines them
#: (Defaults.make_ins), J6 the XL-320 tool roll. J7, the gripper, spans 0..296 servo degrees,
#: which is not a geometric angle: the URDF models it as 0..1.5 rad.
HDI_LIMITS_DEG: dict[str, tuple[float, float]] = {
    **{f"j{i + 1}": lim for i, lim in enumerate(HDI_JOINT_LIMITS_DEG)},
    "j6": (-150.0, 150.0),
}

_Z = np.array([0.0, 0.0, 1.0])


def _as_q(q: ArrayLike) -> FloatArray:
    """J1..J5 as a float array; extra entries (J6, J7 from a joint state) are ignored on purpose."""
    qa = np.asarray(q, dtype=np.float64).reshape(-1)
    if qa.size < 5:
        raise ValueError(f"need 5 joint angles (J1..J5), got {qa.size}")
    return qa[:5]


Vec3 = tuple[float, float, float]


def _frame_points(q: ArrayLike, links: LinkLengths) -> dict[str, Vec3]:
    """The doc's FK intermediates as plain tuples: pivots, unit vectors, tool axes, base frame.

    Scalar math, not numpy: on 3-vectors numpy's per-call overhead is most of the cost, and the
    simulator evaluates this (and the Jacobian) every 1 ms substep.
    """
    q1, q2, q3, q4, q5 = (float(v) for v in _as_q(q))
    s2, s3, s4 = q2, q2 + q3, q2 + q3 + q4
    sin, cos = math.sin, math.cos
    fx, fy = sin(q1), cos(q1)  # horizontal "forward" f = (fx, fy, 0) of the arm's plane
    nx, ny = -fy, fx  # J2..J4 axis n = (-cos q1, sin q1, 0) (positive tilts toward f)
    # link directions in the arm's plane: u = f sin(s) + z cos(s)
    h2, v2 = sin(s2), cos(s2)
    h3, v3 = sin(s3), cos(s3)
    h4, v4 = sin(s4), cos(s4)
    l1, l2, l3, l4, l5 = links.l1, links.l2, links.l3, links.l4, links.l5
    ex, ey, ez = fx * l2 * h2, fy * l2 * h2, l1 + l2 * v2  # elbow
    px, py, pz = ex + fx * l3 * h3, ey + fy * l3 * h3, ez + l3 * v3  # wrist pitch
    wx, wy, wz = px + fx * l4 * h4, py + fy * l4 * h4, pz + l4 * v4  # wrist
    c5, s5 = cos(q5), sin(q5)
    # d = cos q5 (f cos s4 - z sin s4) - sin q5 n
    dx, dy, dz = c5 * fx * v4 - s5 * nx, c5 * fy * v4 - s5 * ny, -c5 * h4
    return {
        "n": (nx, ny, 0.0),
        "u4": (fx * h4, fy * h4, v4),
        "d": (dx, dy, dz),
        "shoulder": (0.0, 0.0, l1),
        "elbow": (ex, ey, ez),
        "wrist_pitch": (px, py, pz),
        "wrist": (wx, wy, wz),
        "tip": (wx + l5 * dx, wy + l5 * dy, wz + l5 * dz),
    }


def _frames(q: ArrayLike, links: LinkLengths) -> dict[str, FloatArray]:
    """:func:`_frame_points` as arrays."""
    return {k: np.array(v) for k, v in _frame_points(q, links).items()}


def _cross(a: Vec3, b: Vec3) -> Vec3:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def forward(q: ArrayLike, links: LinkLengths = HDI) -> FloatArray:
    """4x4 pose of the tool tip in the base frame (tool frame: y = pointing dir, z = link-4 axis).

    Position and ``d`` are the doc's closed form (firmware ``J_angles_to_pos_ori_mat`` and DDE
    ``Kin.forward_kinematics``), so a pose computed here matches what the robot reports.
    """
    fr = _frames(q, links)
    y = fr["d"]
    z = fr["u4"]
    x = np.cross(y, z)  # unit: d is perpendicular to the link-4 axis by construction
    pose = np.eye(4)
    pose[:3, 0] = x
    pose[:3, 1] = y
    pose[:3, 2] = z
    pose[:3, 3] = fr["tip"]
    return pose


def tool_position(q: ArrayLike, links: LinkLengths = HDI) -> FloatArray:
    """Tool tip position (3,) in metres, base frame."""
    return np.array(_frame_points(q, links)["tip"])


def tool_direction(q: ArrayLike, links: LinkLengths = HDI) -> FloatArray:
    """Unit tool pointing direction ``d`` (3,), base frame (= column 1 of :func:`forward`)."""
    return np.array(_frame_points(q, links)["d"])


def tool_pose_xyz_quat(q: ArrayLike, links: LinkLengths = HDI) -> tuple[FloatArray, FloatArray]:
    """Tool pose as (position (3,), quaternion (x, y, z, w)) in ROS order, for Pose messages."""
    pose = forward(q, links)
    w, x, y, z = mat2quat(pose[:3, :3])
    return pose[:3, 3].copy(), np.array([x, y, z, w])


def joint_axes(q: ArrayLike, links: LinkLengths = HDI) -> tuple[FloatArray, FloatArray]:
    """Unit axes (5, 3) and a point on each axis (5, 3), base frame, for J1..J5.

    The axis signs make a positive joint rate a positive rotation about the axis (right hand).
    """
    fr = _frames(q, links)
    n = fr["n"]
    axes = np.stack([-_Z, n, n, n, -fr["u4"]])
    points = np.stack([np.zeros(3), fr["shoulder"], fr["elbow"], fr["wrist_pitch"], fr["wrist"]])
    return axes, points


def jacobian(q: ArrayLike, links: LinkLengths = HDI) -> FloatArray:
    """Geometric Jacobian (6, 5) at the tool tip in the base frame; rows vx vy vz wx wy wz.

    Analytic from the joint screw axes: column i = [a_i × (tip − p_i); a_i]. Generic rank is 5;
    at q = 0 (arm straight up) J1 and J5 are collinear and J2..J4 pivots are aligned: rank 3.
    """
    return tip_and_jacobian(q, links)[1]


def tip_and_jacobian(q: ArrayLike, links: LinkLengths = HDI) -> tuple[FloatArray, FloatArray]:
    """Tool tip position (3,) and :func:`jacobian` from one forward-kinematics pass (what a
    physics step needs)."""
    fr = _frame_points(q, links)
    tip, n, u4 = fr["tip"], fr["n"], fr["u4"]
    axes = ((0.0, 0.0, -1.0), n, n, n, (-u4[0], -u4[1], -u4[2]))
    points = ((0.0, 0.0, 0.0), fr["shoulder"], fr["elbow"], fr["wrist_pitch"], fr["wrist"])
    cols = [
        (*_cross(a, (tip[0] - p[0], tip[1] - p[1], tip[2] - p[2])), *a)
        for a, p in zip(axes, points)
    ]
    return np.array(tip), np.array(cols).T


def joint_torques_from_wrench(
    q: ArrayLike, wrench: ArrayLike, links: LinkLengths = HDI
) -> FloatArray:
    """Joint torques (5,) = Jᵀ w that balance a wrench applied at the tip.

    ``wrench`` = (fx, fy, fz, tx, ty, tz) in the base frame, force in N at the tool tip and torque
    in N·m; the result is in N·m per joint, with the robot's joint signs.
    """
    w = np.asarray(wrench, dtype=np.float64).reshape(6)
    return jacobian(q, links).T @ w


def wrench_from_joint_torques(
    q: ArrayLike,
    tau: ArrayLike,
    links: LinkLengths = HDI,
    damping: float = 0.01,
    in_tool_frame: bool = False,
) -> FloatArray:
    """Estimate the tip wrench (6,) from per-joint torques (or effort proxies) J1..J5.

    Solves Jᵀ w = τ by damped least squares, w = J (JᵀJ + λ²I)⁻¹ τ, so the estimate stays
    bounded (|w| ≤ |τ| / 2λ) at singularities such as q = 0 instead of blowing up.

    What 5 joints can and cannot tell: Jᵀ is 5x6, so at best 5 of the 6 wrench components are
    observable. The result is the minimum-norm wrench that explains τ; any component in the null
    space of Jᵀ (a wrench the structure holds without loading any joint, e.g. a torque about the
    axis the missing 6th joint would have) is invisible and comes back as zero. At singularities
    more directions are lost (at q = 0 a force along x and a torque about z are indistinguishable).
    Note the norm mixes N and N·m, so the split between force and torque is a modelling choice;
    when the contact is known to be a pure push at the tip, use
    :func:`tip_force_from_joint_torques`, which is overdetermined and far better conditioned.
    Base frame by default; ``in_tool_frame`` rotates force and torque into the tool frame.
    """
    t = np.asarray(tau, dtype=np.float64).reshape(-1)[:5]
    jac = jacobian(q, links)
    w = jac @ np.linalg.solve(jac.T @ jac + damping**2 * np.eye(5), t)
    return wrench_to_tool_frame(q, w, links) if in_tool_frame else w


def tip_force_from_joint_torques(
    q: ArrayLike, tau: ArrayLike, links: LinkLengths = HDI, damping: float = 1e-3
) -> FloatArray:
    """Estimate a pure tip force (3,) in N, base frame, from joint torques J1..J5.

    Assumes no torque acts at the tip (a point contact): then Jvᵀ f = τ has 3 unknowns and
    5 equations, and is solved in the (lightly damped) least-squares sense. Jv has rank 3 even at
    q = 0, so this is the estimate to feed back to a haptic leader.
    """
    t = np.asarray(tau, dtype=np.float64).reshape(-1)[:5]
    jv = jacobian(q, links)[:3, :]
    return np.linalg.solve(jv @ jv.T + damping**2 * np.eye(3), jv @ t)


def wrench_to_tool_frame(q: ArrayLike, wrench: ArrayLike, links: LinkLengths = HDI) -> FloatArray:
    """Express a base-frame wrench at the tip in the tool frame (same point, rotated by Rᵀ)."""
    w = np.asarray(wrench, dtype=np.float64).reshape(6)
    rot = forward(q, links)[:3, :3]
    return np.concatenate([rot.T @ w[:3], rot.T @ w[3:]])
