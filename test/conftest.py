"""Test-wide settings: loopback only, DDS discovery on this host only, one ROS domain per run."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# A domain id of our own, so that concurrent test runs on one machine do not see each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))


def free_tcp_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_port() -> int:
    return free_tcp_port()
