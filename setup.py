"""Build script shared by colcon (ament_python) and pip.

colcon needs ``data_files`` for the ament index, package.xml, launch, config, urdf and rviz, and
``setup.cfg`` for the script directory; pip reads the same file through pyproject.toml's
setuptools backend. The ROS client libraries are deliberately *not* install requirements: a ROS
installation provides rclpy, and the PyPI wheels are a test/dev extra (requirements-ros-wheels.txt).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "jitsi_teleop"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 teleoperation of a Dexter arm through a Jitsi Meet room",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    include_package_data=True,
    install_requires=[
        "numpy>=1.21",
        "transforms3d>=0.4",
        "pyyaml>=5.4",
        "cryptography>=3.4",
        "aiohttp>=3.8",
        "slixmpp>=1.8",
        "aiortc>=1.9",
        "zeroconf>=0.131",  # serverless mode: DNS-SD/mDNS for XEP-0174 link-local (linklocal/)
        "matplotlib>=3.5",  # the demo's report plots (Agg backend, no display)
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-asyncio>=0.23",
            "pytest-timeout>=2.1",
            "rosbags>=0.9",
            "ruff>=0.5",
            "colcon-core",
            "colcon-ros",
            "colcon-python-setup-py",
            "catkin-pkg",
            # coverage-guided fuzzing of the parsers (bench/faults.py fuzz, test/test_fuzz.py);
            # binary wheels exist for x86_64 only, elsewhere the random engine is used
            "atheris>=2.3; platform_machine == 'x86_64'",
        ],
        # baselines for `jitsi-teleop bench` (not needed to run anything else); uvloop so
        # the bench measures the loop the nodes use where it is installed
        "bench": ["eclipse-zenoh>=1.0", "uvloop>=0.17; sys_platform != 'win32'", "py-spy>=0.3"],
        # optional: the nodes' and the core's asyncio loops on uvloop (same code without it)
        "speed": ["uvloop>=0.17; sys_platform != 'win32'"],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "dexter-sim = dexter_driver.sim:main",
            "dexter_sim = dexter_driver.sim:main",
            "dexter_driver = dexter_driver.ros_node:main",
            "jitsi-teleop = jitsi_teleop.cli:main",
            "teleop = jitsi_teleop.ros.teleop_node:main",
            "transport = jitsi_teleop.ros.transport_node:main",
        ],
    },
)
