"""Test-wide settings: loopback only, DDS discovery on this host only, one ROS domain per run."""

from __future__ import annotations

import os
import socket

import pytest

from ros_domains import process_domain

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# A domain id of our own, so that concurrent test runs on one machine do not see each other
# (a block of ids held with a lock file: see ros_domains.py).
if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(process_domain())


def free_tcp_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_port() -> int:
    return free_tcp_port()
