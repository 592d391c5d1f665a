"""Joining a Jitsi (or plain Prosody) room: XMPP transports, discovery, focus, MUC, extdisco."""
