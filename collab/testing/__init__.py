"""Testing collaborative apps: fixtures, a fault-injecting network and a chaos runner.

* ``collab.testing.plugin``: pytest fixtures (registered as the ``collab``
  pytest plugin): ``collab_server``, ``collab_client``, ``collab_proxy``...
* ``converged`` / ``assert_converged``: wait for replicas to agree, or show
  how they differ.
* ``collab.testing.netem.NetemProxy``: latency, jitter, bandwidth caps,
  dropped connections, held frames, partitions and server restarts, seeded.
* ``collab.testing.chaos``: ``collab chaos``, many clients editing through
  the proxy, then a check for divergence and lost edits.

Nothing here imports pytest except the plugin, so the proxy and the runner
work in any program.
"""

from __future__ import annotations

from .converge import (
    ConvergenceError,
    assert_converged,
    converged,
    json_view,
    state_vector,
    text_view,
)
from .netem import Direction, FaultUnavailable, NetemProxy
from .server import InProcessServer, ServerProcess, free_port

__all__ = [
    "ConvergenceError",
    "Direction",
    "FaultUnavailable",
    "InProcessServer",
    "NetemProxy",
    "ServerProcess",
    "assert_converged",
    "converged",
    "free_port",
    "json_view",
    "state_vector",
    "text_view",
]
