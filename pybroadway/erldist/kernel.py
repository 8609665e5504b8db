"""The node's own processes and the supervisor they run under, ``kernel_sup`` as on the BEAM:
one that crashes is restarted with its name; past the restart intensity the supervisor gives
up, and the node stops (:class:`NodeDown` says why)."""

from __future__ import annotations

from typing import Any

from pybroadway.erldist.global_names import GlobalNameServer
from pybroadway.erldist.rpc import NetKernel, Rex
from pybroadway.erldist.supervisor import ChildSpec, Supervisor
from pybroadway.errors import PyBroadwayError
from pybroadway.term import Atom, loggable

__all__ = ["SYSTEM_INTENSITY", "SYSTEM_PROCESSES", "NodeDown", "kernel_sup"]

SYSTEM_PROCESSES: tuple[ChildSpec, ...] = (
    ChildSpec(id="global_name_server", start=GlobalNameServer, name="global_name_server"),
    ChildSpec(id="net_kernel", start=NetKernel, name="net_kernel"),
    ChildSpec(id="rex", start=Rex, name="rex"),
)
"""The processes every node runs from its start, in start order."""

SYSTEM_INTENSITY = (3, 5.0)
"""More than 3 restarts in 5 seconds: the supervisor gives up and the node stops."""


def kernel_sup() -> Supervisor:
    """A new (not yet spawned) ``kernel_sup`` with the system processes as its children."""
    intensity, period = SYSTEM_INTENSITY
    return Supervisor(SYSTEM_PROCESSES, intensity=intensity, period=period)


class NodeDown(PyBroadwayError):
    """The node stopped by itself: its supervisor gave up restarting its processes."""

    def __init__(self, node: Atom, reason: Any) -> None:
        super().__init__(f"node {node.name} stopped: its supervisor gave up ({loggable(reason)})")
        self.node = node
        self.reason = reason
