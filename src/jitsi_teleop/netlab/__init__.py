"""A simulated internet in network namespaces: sites behind NATs, a router, a server.

``netns`` holds the reusable primitives (namespace, veth, process inside); the other modules
build the two-site topology, the impairments and the servers on top of them.
"""
