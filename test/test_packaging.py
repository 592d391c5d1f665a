"""The ROS package builds with colcon (ament_python) and installs what `ros2 run` looks for."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("dexter_driver", "dexter-sim", "dexter_sim", "jitsi-teleop", "teleop", "transport")


def test_package_xml_is_format_3_ament_python_with_run_dependencies() -> None:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "jitsi_teleop"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    # every import of the node and launch code has a declared key
    for key in (
        "rclpy",
        "rosidl_parser",
        "sensor_msgs",
        "geometry_msgs",
        "diagnostic_msgs",
        "launch",
        "launch_ros",
        "robot_state_publisher",
        "python3-numpy",
        "python3-yaml",
    ):
        assert key in deps, key
    # rosdep fails the whole `rosdep install` on a key it cannot resolve: only keys that exist
    # in ros/rosdistro's rosdep/python.yaml (checked 2026-11; slixmpp has none, so it is
    # installed with pip as the README says)
    rosdep_python_keys = {
        "python3-numpy",
        "python3-transforms3d",
        "python3-yaml",
        "python3-matplotlib",
        "python3-cryptography",
        "python3-aiohttp",
        "python3-aiortc",
        "python3-pytest",
    }
    keys = {e.text for e in root.iter() if e.tag.endswith("depend") and e.text}
    assert {k for k in keys if k.startswith("python3-")} <= rosdep_python_keys
    setup_py = (ROOT / "setup.py").read_text()
    assert f'version="{root.findtext("version")}"' in setup_py, "package.xml and setup.py agree"


def _colcon() -> str | None:
    exe = Path(sys.executable).with_name("colcon")
    return str(exe) if exe.exists() else shutil.which("colcon")


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """colcon build of the working tree (tracked and new files) in a fresh workspace."""
    tmp_path = tmp_path_factory.mktemp("ws")
    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon not installed (pip install colcon-core colcon-ros)")
    src = tmp_path / "src" / "jitsi_teleop"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    result = subprocess.run(
        [colcon, "build", "--base-paths", "src"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path / "install"


@pytest.mark.slow
def test_colcon_build_installs_scripts_and_share_files(colcon_install: Path) -> None:
    prefix = colcon_install / "jitsi_teleop"
    for script in SCRIPTS:  # where `ros2 run jitsi_teleop <script>` looks
        assert (prefix / "lib" / "jitsi_teleop" / script).exists(), script
    share = prefix / "share" / "jitsi_teleop"
    assert (share / "package.xml").exists()
    assert (prefix / "share/ament_index/resource_index/packages/jitsi_teleop").exists()
    for pattern in ("launch/*.launch.py", "config/*.yaml", "urdf/*.urdf", "rviz/*.rviz"):
        expected = sorted(p.name for p in ROOT.glob(pattern))
        assert expected, pattern
        assert sorted(p.name for p in share.glob(pattern)) == expected, pattern
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / "dexter_driver" / "ros_node.py").exists()
    assert (site / "jitsi_teleop" / "__init__.py").exists()


def _launch_files() -> list[Path]:
    return sorted((ROOT / "launch").glob("*.launch.py"))


@pytest.mark.parametrize("path", _launch_files(), ids=lambda p: p.name)
def test_launch_file_compiles_and_declares_documented_arguments(path: Path) -> None:
    """Without ROS `launch` we can still catch syntax errors and undocumented arguments."""
    import ast

    tree = ast.parse(path.read_text(), str(path))
    assert any(
        isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
        for n in tree.body
    )
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument":
            kw = {k.arg for k in call.keywords}
            assert {"default_value", "description"} <= kw, ast.unparse(call)


@pytest.mark.slow
@pytest.mark.parametrize("path", _launch_files(), ids=lambda p: p.name)
def test_launch_description_generates_in_a_ros_install(
    path: Path, colcon_install: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the repo's own launch/ folder can look like a namespace package called `launch`)
    launch = pytest.importorskip("launch", reason="ROS 2 launch is not on PyPI")
    if not hasattr(launch, "LaunchDescription"):
        pytest.skip("ROS 2 launch is not installed (not on PyPI; needs a ROS 2 install)")
    pytest.importorskip("launch_ros", reason="ROS 2 launch_ros is not on PyPI")
    import importlib.util
    import os

    prefix = str(colcon_install / "jitsi_teleop")
    monkeypatch.setenv(
        "AMENT_PREFIX_PATH", prefix + os.pathsep + os.environ.get("AMENT_PREFIX_PATH", "")
    )
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert description.entities


@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_sources_compile_on_other_supported_pythons(version: str) -> None:
    """Humble runs Python 3.10 and Kilted 3.12: no syntax newer or older than they accept."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(map(str, Path.home().glob(f".pyenv/versions/{version}.*/bin/python3")))
    exe = next((c for c in candidates if c and _runs(c)), None)
    if exe is None:
        pytest.skip(f"no python{version} interpreter on this machine")
    sources = sorted(str(p) for d in ("src", "launch", "bench") for p in (ROOT / d).rglob("*.py"))
    code = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    compile(open(path, encoding='utf-8').read(), path, 'exec')\n"
    )
    result = subprocess.run([exe, "-c", code, *sources], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def _runs(exe: str) -> bool:
    return subprocess.run([exe, "-c", "pass"], capture_output=True).returncode == 0


def test_teleop_launch_declares_every_site_argument_and_the_readme_lists_them() -> None:
    """teleop.launch.py reads each SiteArgs field as a launch configuration at launch time, so a
    field without a declared argument breaks a real ``ros2 launch`` (launch is not here)."""
    import ast
    import dataclasses

    from jitsi_teleop.site_plan import SiteArgs

    tree = ast.parse((ROOT / "launch" / "teleop.launch.py").read_text())
    declared = {
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", "") in ("arg", "DeclareLaunchArgument")
        and call.args
        and isinstance(call.args[0], ast.Constant)
    }
    fields = {f.name for f in dataclasses.fields(SiteArgs)} - {"share", "extra"}
    assert fields == declared, (fields - declared, declared - fields)
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| argument | default | meaning |") :].split("\n\n", 1)[0]
    assert not [name for name in fields if f"`{name}`" not in table]
