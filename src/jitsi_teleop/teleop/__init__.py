"""Pure teleoperation control logic (safety filter, force feedback, passivity)."""
