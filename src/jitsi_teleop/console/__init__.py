"""The robot's console: chat commands in the meeting (group chat, private, one-to-one) and
the site's SQLite event log.

Layers: :mod:`.commands` (grammar, permissions), :mod:`.console` (one line in, one reply
out), :mod:`.site` (status/who text, events from status changes) and :mod:`.eventlog` are
pure; :mod:`.chat` is the XMPP adapter; :mod:`.chime` plays a sound; the rclpy side lives in
:mod:`jitsi_teleop.ros.console_node`.
"""
