"""Links that carry frames between the two sites (MUC slow path, P2P data channel)."""
