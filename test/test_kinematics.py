"""Kinematics against the protocol doc (§3), its DH table, finite differences, the URDF and rviz.

The references here (closed form, DH chain, URDF composition) are written independently of
``dexter_driver.kinematics`` so that a sign slip in one place cannot hide in both.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from dexter_driver import kinematics as kin
from dexter_driver.kinematics import HD, HDI, LinkLengths

ROOT = Path(__file__).resolve().parents[1]
URDF = ROOT / "urdf" / "dexter_hdi.urdf"
RVIZ = ROOT / "rviz" / "teleop.rviz"

#: Doc §3 limits in arcsec (Defaults.make_ins), J1..J5.
LIMITS_ARCSEC = (666000, 378000, 540000, 432000, 666000)
LIMITS_RAD = np.array([math.radians(a / 3600.0) for a in LIMITS_ARCSEC])


def random_q(rng: np.random.Generator, n: int) -> np.ndarray:
    """n configurations (n, 5) uniformly within the HDI limits."""
    return rng.uniform(-LIMITS_RAD, LIMITS_RAD, size=(n, 5))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261123)


# ---------------------------------------------------------------- independent references


def doc_closed_form(q: np.ndarray, lk: LinkLengths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Doc §3 FK written out component by component: (tip, d, link-4 axis)."""
    q1, q2, q3, q4, q5 = q
    s2, s3, s4 = q2, q2 + q3, q2 + q3 + q4
    r = lk.l2 * math.sin(s2) + lk.l3 * math.sin(s3) + lk.l4 * math.sin(s4)
    height = lk.l1 + lk.l2 * math.cos(s2) + lk.l3 * math.cos(s3) + lk.l4 * math.cos(s4)
    # d = cos q5 (f cos s4 - z sin s4) - sin q5 n, f = (sin q1, cos q1, 0), n = (-cos q1, sin q1, 0)
    dx = math.cos(q5) * math.sin(q1) * math.cos(s4) + math.sin(q5) * math.cos(q1)
    dy = math.cos(q5) * math.cos(q1) * math.cos(s4) - math.sin(q5) * math.sin(q1)
    dz = -math.cos(q5) * math.sin(s4)
    d = np.array([dx, dy, dz])
    tip = np.array([r * math.sin(q1), r * math.cos(q1), height]) + lk.l5 * d
    u4 = np.array([math.sin(s4) * math.sin(q1), math.sin(s4) * math.cos(q1), math.cos(s4)])
    return tip, d, u4


def dh(a: float, alpha: float, d: float, theta: float) -> np.ndarray:
    """Standard DH: Rz(theta) Tz(d) Tx(a) Rx(alpha)."""
    ct, st, ca, sa = math.cos(theta), math.sin(theta), math.cos(alpha), math.sin(alpha)
    return np.array(
        [
            [ct, -st * ca, st * sa, a * ct],
            [st, ct * ca, -ct * sa, a * st],
            [0.0, sa, ca, d],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def dh_chain(q: np.ndarray, lk: LinkLengths) -> np.ndarray:
    """The doc's DH table composed: pose of frame 5 (origin = tip, x5 = pointing direction)."""
    h = math.pi / 2
    rows = [
        (0.0, h, lk.l1, -q[0] - h),
        (lk.l2, 0.0, 0.0, q[1] + h),
        (lk.l3, 0.0, 0.0, q[2]),
        (0.0, h, 0.0, q[3] + h),
        (lk.l5, 0.0, lk.l4, -q[4]),
    ]
    pose = np.eye(4)
    for row in rows:
        pose = pose @ dh(*row)
    return pose


def fd_jacobian(q: np.ndarray, lk: LinkLengths, eps: float = 1e-6) -> np.ndarray:
    """Central differences of forward(): linear rows from the tip, angular from dR Rᵀ."""
    rot = kin.forward(q, lk)[:3, :3]
    jac = np.zeros((6, 5))
    for i in range(5):
        dq = np.zeros(5)
        dq[i] = eps
        tp, tm = kin.forward(q + dq, lk), kin.forward(q - dq, lk)
        jac[:3, i] = (tp[:3, 3] - tm[:3, 3]) / (2 * eps)
        omega = (tp[:3, :3] - tm[:3, :3]) / (2 * eps) @ rot.T
        jac[3:, i] = [omega[2, 1], omega[0, 2], omega[1, 0]]
    return jac


# ---------------------------------------------------------------- forward kinematics


def test_fk_at_zero_is_the_doc_tip() -> None:
    pose = kin.forward(np.zeros(5))
    np.testing.assert_allclose(pose[:3, 3], [0.0, 0.08244, 0.941292], atol=1e-12)
    np.testing.assert_allclose(pose[:3, :3], np.eye(3), atol=1e-12)  # tool frame = base at home
    np.testing.assert_allclose(kin.tool_position([0, 0, 0, 0, 0]), [0.0, 0.08244, 0.941292])
    np.testing.assert_allclose(kin.tool_direction(np.zeros(5)), [0.0, 1.0, 0.0], atol=1e-12)


def test_fk_at_zero_hd() -> None:
    expected = [0.0, HD.l5, HD.l1 + HD.l2 + HD.l3 + HD.l4]
    np.testing.assert_allclose(kin.tool_position(np.zeros(5), HD), expected, atol=1e-12)


def test_sign_conventions() -> None:
    """J1, J5 clockwise from above move the front tip toward +X; J2 tilts the arm toward +Y."""
    small = 0.1
    assert kin.tool_position([small, 0, 0, 0, 0])[0] > 0
    assert kin.tool_direction([0, 0, 0, 0, small])[0] > 0
    assert kin.tool_position([0, small, 0, 0, 0])[1] > HDI.l5
    assert kin.tool_position([0, 0, 0, small, 0])[1] > HDI.l5
    # J4 = 90 deg points the tool straight down.
    np.testing.assert_allclose(
        kin.tool_direction([0, 0, 0, math.pi / 2, 0]), [0, 0, -1], atol=1e-12
    )


@pytest.mark.parametrize("links", [HDI, HD], ids=["HDI", "HD"])
def test_fk_matches_doc_closed_form(rng: np.random.Generator, links: LinkLengths) -> None:
    for q in random_q(rng, 300):
        pose = kin.forward(q, links)
        tip, d, u4 = doc_closed_form(q, links)
        np.testing.assert_allclose(pose[:3, 3], tip, atol=1e-12)
        np.testing.assert_allclose(pose[:3, 1], d, atol=1e-12)
        np.testing.assert_allclose(pose[:3, 2], u4, atol=1e-12)
        np.testing.assert_allclose(pose[:3, 0], np.cross(d, u4), atol=1e-12)
        np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-12)
        assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
        np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])
        np.testing.assert_allclose(kin.tool_position(q, links), tip, atol=1e-12)


@pytest.mark.parametrize("links", [HDI, HD], ids=["HDI", "HD"])
def test_fk_matches_dh_table(rng: np.random.Generator, links: LinkLengths) -> None:
    # DH frame 5: x5 = pointing dir, z5 = link-4 axis, so tool (x, y, z) = (-y5, x5, z5).
    dh_to_tool = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for q in random_q(rng, 200):
        pose = kin.forward(q, links)
        frame5 = dh_chain(q, links)
        np.testing.assert_allclose(pose[:3, 3], frame5[:3, 3], atol=1e-12)
        np.testing.assert_allclose(pose[:3, :3], frame5[:3, :3] @ dh_to_tool, atol=1e-12)


def test_extra_joints_are_ignored_and_short_q_rejected() -> None:
    q = [0.1, 0.2, 0.3, 0.4, 0.5]
    np.testing.assert_array_equal(kin.forward([*q, 1.0, 0.7]), kin.forward(q))
    with pytest.raises(ValueError):
        kin.forward([0.0, 0.0, 0.0])


def test_pose_quaternion_matches_matrix(rng: np.random.Generator) -> None:
    for q in random_q(rng, 50):
        pos, (x, y, z, w) = kin.tool_pose_xyz_quat(q)
        assert math.isclose(x * x + y * y + z * z + w * w, 1.0, rel_tol=1e-12)
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        pose = kin.forward(q)
        np.testing.assert_allclose(rot, pose[:3, :3], atol=1e-12)
        np.testing.assert_allclose(pos, pose[:3, 3])


# ---------------------------------------------------------------- Jacobian and wrenches


@pytest.mark.parametrize("links", [HDI, HD], ids=["HDI", "HD"])
def test_jacobian_equals_finite_differences(rng: np.random.Generator, links: LinkLengths) -> None:
    configs = [np.zeros(5), LIMITS_RAD, -LIMITS_RAD, *random_q(rng, 100)]
    for q in configs:
        jac = kin.jacobian(q, links)
        assert jac.shape == (6, 5)
        np.testing.assert_allclose(jac, fd_jacobian(q, links), atol=1e-8)


def test_jacobian_rank() -> None:
    assert np.linalg.matrix_rank(kin.jacobian([0.3, 0.4, 0.5, 0.6, 0.7])) == 5
    assert np.linalg.matrix_rank(kin.jacobian(np.zeros(5))) == 3  # straight up: singular


def test_joint_torques_by_virtual_work(rng: np.random.Generator) -> None:
    """τ_i = f · ∂tip/∂q_i for a pure tip force, with the derivative taken numerically."""
    eps = 1e-6
    for q in random_q(rng, 30):
        force = rng.normal(size=3) * 10.0
        tau = kin.joint_torques_from_wrench(q, [*force, 0.0, 0.0, 0.0])
        for i in range(5):
            dq = np.zeros(5)
            dq[i] = eps
            dtip = (kin.tool_position(q + dq) - kin.tool_position(q - dq)) / (2 * eps)
            assert tau[i] == pytest.approx(force @ dtip, abs=1e-6)


def test_gravity_like_force_does_not_load_j1() -> None:
    """A vertical tip force is parallel to the J1 axis, so J1 feels nothing."""
    tau = kin.joint_torques_from_wrench([0.4, 0.5, 0.6, 0.2, 1.0], [0, 0, -9.81, 0, 0, 0])
    assert tau[0] == pytest.approx(0.0, abs=1e-12)
    assert abs(tau[1]) > 0.1


def test_wrench_round_trip_in_identifiable_subspace(rng: np.random.Generator) -> None:
    for q in random_q(rng, 50):
        jac = kin.jacobian(q)
        if np.linalg.svd(jac, compute_uv=False)[-1] < 1e-2:
            continue  # too close to a singularity for an undamped comparison
        wrench = jac @ rng.normal(size=5)  # in range(J): fully observable from 5 joints
        tau = kin.joint_torques_from_wrench(q, wrench)
        estimate = kin.wrench_from_joint_torques(q, tau, damping=1e-9)
        np.testing.assert_allclose(estimate, wrench, atol=1e-7)
        # Any τ is explained exactly, and the unobservable direction comes back as zero.
        tau_any = rng.normal(size=5)
        np.testing.assert_allclose(
            jac.T @ kin.wrench_from_joint_torques(q, tau_any, damping=1e-9), tau_any, atol=1e-7
        )
        null = np.linalg.svd(jac.T)[2][-1]  # Jᵀ null = 0
        np.testing.assert_allclose(jac.T @ null, 0.0, atol=1e-12)
        np.testing.assert_allclose(
            kin.wrench_from_joint_torques(q, kin.joint_torques_from_wrench(q, null)),
            0.0,
            atol=1e-9,
        )


def test_wrench_estimate_is_bounded_at_singularity() -> None:
    damping = 0.01
    tau = np.array([1.0, -0.5, 0.3, 0.2, -1.0])
    estimate = kin.wrench_from_joint_torques(np.zeros(5), tau, damping=damping)
    assert np.all(np.isfinite(estimate))
    assert np.linalg.norm(estimate) <= np.linalg.norm(tau) / (2 * damping) + 1e-9


def test_tip_force_recovered_even_at_zero(rng: np.random.Generator) -> None:
    for q in [np.zeros(5), *random_q(rng, 30)]:
        force = rng.normal(size=3) * 5.0
        tau = kin.joint_torques_from_wrench(q, [*force, 0.0, 0.0, 0.0])
        np.testing.assert_allclose(
            kin.tip_force_from_joint_torques(q, tau, damping=1e-9), force, atol=1e-6
        )


def test_wrench_to_tool_frame(rng: np.random.Generator) -> None:
    wrench = np.array([1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(kin.wrench_to_tool_frame(np.zeros(5), wrench), wrench, atol=1e-12)
    # J4 = +90 deg: the tool points down (-Z), so a downward push is +y in the tool frame.
    down = kin.wrench_to_tool_frame([0, 0, 0, math.pi / 2, 0], [0, 0, -1.0, 0, 0, 0])
    np.testing.assert_allclose(down, [0, 1.0, 0, 0, 0, 0], atol=1e-12)
    for q in random_q(rng, 20):
        rot = kin.forward(q)[:3, :3]
        w = rng.normal(size=6)
        tool = kin.wrench_to_tool_frame(q, w)
        np.testing.assert_allclose(rot @ tool[:3], w[:3], atol=1e-12)
        np.testing.assert_allclose(rot @ tool[3:], w[3:], atol=1e-12)
        tau = kin.joint_torques_from_wrench(q, w)
        np.testing.assert_allclose(
            kin.wrench_from_joint_torques(q, tau, in_tool_frame=True),
            kin.wrench_to_tool_frame(q, kin.wrench_from_joint_torques(q, tau)),
        )


# ---------------------------------------------------------------- URDF


def _rpy(rpy: np.ndarray) -> np.ndarray:
    """URDF fixed-axis roll, pitch, yaw: Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about a (normalised) axis."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def _vec(elem: ET.Element | None, attr: str, default: str = "0 0 0") -> np.ndarray:
    text = default if elem is None else elem.get(attr, default)
    return np.array([float(v) for v in text.split()])


@pytest.fixture(scope="module")
def urdf() -> ET.Element:
    return ET.parse(URDF).getroot()


def urdf_pose(root: ET.Element, target: str, positions: dict[str, float]) -> np.ndarray:
    """Compose joint origins and axes from the root link down to ``target``."""
    joints = {j.find("child").get("link"): j for j in root.findall("joint")}
    chain = []
    link = target
    while link in joints:
        chain.append(joints[link])
        link = joints[link].find("parent").get("link")
    assert link == "base_link"
    pose = np.eye(4)
    for joint in reversed(chain):
        origin = joint.find("origin")
        step = np.eye(4)
        step[:3, :3] = _rpy(_vec(origin, "rpy"))
        step[:3, 3] = _vec(origin, "xyz")
        if joint.get("type") == "revolute":
            motion = np.eye(4)
            motion[:3, :3] = _axis_angle(
                _vec(joint.find("axis"), "xyz", "1 0 0"), positions[joint.get("name")]
            )
            step = step @ motion
        else:
            assert joint.get("type") == "fixed"
        pose = pose @ step
    return pose


def urdf_configs(rng: np.random.Generator) -> list[np.ndarray]:
    """J1..J7 configurations: zero, all-lower, all-upper, each joint at each limit, random."""
    lower = np.array([*(-LIMITS_RAD), math.radians(-150), 0.0])
    upper = np.array([*LIMITS_RAD, math.radians(150), 1.5])
    configs = [np.zeros(7), lower, upper]
    for i in range(7):
        for bound in (lower, upper):
            q = np.zeros(7)
            q[i] = bound[i]
            configs.append(q)
    configs.extend(rng.uniform(lower, upper, size=(30, 7)))
    return configs


def test_urdf_tool0_matches_forward(urdf: ET.Element, rng: np.random.Generator) -> None:
    configs = urdf_configs(rng)
    assert len(configs) >= 20
    for q in configs:
        positions = {f"j{i + 1}": float(v) for i, v in enumerate(q)}
        pose = urdf_pose(urdf, "tool0", positions)
        expected = kin.forward(q[:5])
        np.testing.assert_allclose(pose[:3, 3], expected[:3, 3], atol=1e-9)
        np.testing.assert_allclose(pose[:3, 1], expected[:3, 1], atol=1e-9)  # pointing direction
        np.testing.assert_allclose(pose, expected, atol=1e-9)  # and the whole frame


def test_urdf_tool_roll_and_gripper_do_not_move_the_tip(
    urdf: ET.Element, rng: np.random.Generator
) -> None:
    """j6 rolls the gripper about the pointing axis through the tip; j7 only opens a finger."""
    for q in urdf_configs(rng):
        positions = {f"j{i + 1}": float(v) for i, v in enumerate(q)}
        tool = kin.forward(q[:5])
        gripper = urdf_pose(urdf, "link6", positions)
        np.testing.assert_allclose(gripper[:3, 1], tool[:3, 1], atol=1e-9)  # roll axis = d
        offset = tool[:3, 3] - gripper[:3, 3]
        np.testing.assert_allclose(np.cross(offset, tool[:3, 1]), 0.0, atol=1e-9)  # tip on axis
        # The roll angle shows up as the gripper's x axis turning about d.
        cos_roll = float(gripper[:3, 0] @ tool[:3, 0])
        assert cos_roll == pytest.approx(math.cos(q[5]), abs=1e-9)
    joints = {j.get("name"): j for j in urdf.findall("joint")}
    assert joints["tool0_joint"].find("parent").get("link") == "link5"


def test_urdf_wrist_and_pivots_match_doc(urdf: ET.Element, rng: np.random.Generator) -> None:
    """Intermediate frames sit on the pivots: link5 origin is the wrist point #POM reports."""
    for q in random_q(rng, 20):
        positions = {f"j{i + 1}": float(v) for i, v in enumerate(q)} | {"j6": 0.0, "j7": 0.0}
        wrist = urdf_pose(urdf, "link5", positions)[:3, 3]
        tip, d, _ = doc_closed_form(q, HDI)
        np.testing.assert_allclose(wrist, tip - HDI.l5 * d, atol=1e-9)


def test_urdf_joints_and_limits(urdf: ET.Element) -> None:
    joints = {j.get("name"): j for j in urdf.findall("joint")}
    movable = sorted(n for n, j in joints.items() if j.get("type") != "fixed")
    assert movable == list(kin.JOINT_NAMES)
    for name, (lo_deg, hi_deg) in kin.HDI_LIMITS_DEG.items():
        limit = joints[name].find("limit")
        assert joints[name].get("type") == "revolute"
        assert float(limit.get("lower")) == pytest.approx(math.radians(lo_deg), abs=1e-5)
        assert float(limit.get("upper")) == pytest.approx(math.radians(hi_deg), abs=1e-5)
        assert float(limit.get("effort")) > 0 and float(limit.get("velocity")) > 0
    for i, arcsec in enumerate(LIMITS_ARCSEC):
        assert kin.HDI_LIMITS_DEG[f"j{i + 1}"] == (-arcsec / 3600.0, arcsec / 3600.0)
    gripper = joints["j7"].find("limit")
    assert float(gripper.get("lower")) == 0.0
    assert 1.0 <= float(gripper.get("upper")) <= 1.6


def test_urdf_links_are_a_tree_with_visuals_and_inertials(urdf: ET.Element) -> None:
    links = {lk.get("name"): lk for lk in urdf.findall("link")}
    children = [j.find("child").get("link") for j in urdf.findall("joint")]
    assert len(children) == len(set(children)) == len(links) - 1
    assert set(links) - set(children) == {"base_link"}
    assert "tool0" in links
    materials = {m.get("name") for m in urdf.findall("material")}
    assert len(materials) >= 2
    for name, link in links.items():
        if name == "tool0":
            continue
        assert link.findall("visual"), name
        for visual in link.findall("visual"):
            assert visual.find("material").get("name") in materials
        inertial = link.find("inertial")
        assert float(inertial.find("mass").get("value")) > 0
        inertia = inertial.find("inertia")
        ixx, iyy, izz = (float(inertia.get(k)) for k in ("ixx", "iyy", "izz"))
        assert min(ixx, iyy, izz) > 0
        assert ixx + iyy >= izz and iyy + izz >= ixx and izz + ixx >= iyy  # physical
    assert "package://" not in URDF.read_text()


# ---------------------------------------------------------------- rviz


def test_rviz_config_shows_both_arms_and_the_wrench() -> None:
    config = yaml.safe_load(RVIZ.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "world"
    displays = manager["Displays"]
    by_class: dict[str, list[dict]] = {}
    for display in displays:
        by_class.setdefault(display["Class"], []).append(display)
    assert by_class["rviz_default_plugins/Grid"][0]["Enabled"] is True
    assert by_class["rviz_default_plugins/TF"][0]["Enabled"] is False
    robots = {
        r["Description Topic"]["Value"]: r for r in by_class["rviz_default_plugins/RobotModel"]
    }
    assert set(robots) == {"/robot_description", "/remote/robot_description"}
    assert robots["/robot_description"]["TF Prefix"] == ""
    # rviz2 joins prefix + "/" + link, matching robot_state_publisher's frame_prefix "remote/".
    assert robots["/remote/robot_description"]["TF Prefix"] == "remote"
    for robot in robots.values():
        assert robot["Description Source"] == "Topic"
        assert robot["Description Topic"]["Durability Policy"] == "Transient Local"
    (wrench,) = by_class["rviz_default_plugins/Wrench"]
    assert wrench["Topic"]["Value"] == "/wrench"
    assert wrench["Enabled"] is True
