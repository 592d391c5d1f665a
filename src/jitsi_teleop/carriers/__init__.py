"""Carriers: implementations of :class:`jitsi_teleop.carrier.Carrier` (one module each)."""
