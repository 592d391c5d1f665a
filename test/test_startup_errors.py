"""Nodes given bad parameters stop with their own message on every distro.

Kilted's ``rclpy.shutdown()`` destroys every node of the context, one whose constructor raised
included; a ``destroy_node`` that assumed a fully built node then raised AttributeError over
the real message (Jazzy never destroys such a node). Run on the Jazzy and the Kilted wheels.
The transport's own case (clear message, exit 2) is in test_transport_node.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ros_sites import site_domains

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    ("module", "param", "message"),
    [
        ("dexter_driver.ros_node", "mode:=bogus", "parameter mode must be one of"),
        ("jitsi_teleop.ros.teleop_node", "role:=bogus", "parameter role must be leader or"),
    ],
)
def test_bad_parameter_reports_itself_not_a_shutdown_error(module, param, message):
    env = dict(os.environ, ROS_DOMAIN_ID=str(site_domains()[0]))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    out = subprocess.run(
        [sys.executable, "-m", module, "--ros-args", "-p", param],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert message in text
    assert "AttributeError" not in text
