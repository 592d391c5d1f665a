"""``jitsi-teleop demo``: two simulated Dexters, a leader moved by a scripted operator hand and a
follower that meets a table, teleoperated through a room on this machine, with a live status and
a report (plots, CSV, summary.json).

Modules, one concern each: :mod:`.scenario` (the hand script, phases, obstacle), :mod:`.messages`
(the ROS payloads and stream descriptors), :mod:`.roles` (what each site does per tick),
:mod:`.site` (one site's process; the impairment relay's faces come from
:mod:`jitsi_teleop.relay_faces`), :mod:`.status` (live status), :mod:`.report`
(figures, plots, summary) and :mod:`.run` (options and orchestration). ``--ros``: the same
script and report through the real ROS 2 nodes of each site, :mod:`.ros_run` (orchestration)
and :mod:`.ros_sites` (the parent's rclpy contexts and the simulators' control ports).
"""

from __future__ import annotations

from .report import FEEDBACK_MIN_RATIO, TRACKING_RMS_BOUND_MM
from .run import DemoError, DemoOptions, run_demo

__all__ = [
    "FEEDBACK_MIN_RATIO",
    "TRACKING_RMS_BOUND_MM",
    "DemoError",
    "DemoOptions",
    "run_demo",
]
