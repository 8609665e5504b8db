"""The node's own processes and the supervisor they run under, ``kernel_sup`` as on the BEAM:
one that crashes is restarted with its name; past the restart intensity the supervisor gives
up, and the node stops (:class:`NodeDown` says why)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from pybroadway._throttle import Throttle
from pybroadway.erldist.epmd import EpmdError, EpmdRegistration
from pybroadway.erldist.global_names import GlobalNameServer
from pybroadway.erldist.process import Process, ProcessHost
from pybroadway.erldist.rpc import NetKernel, Rex
from pybroadway.erldist.supervisor import ChildSpec, Supervisor
from pybroadway.errors import PyBroadwayError, StateError
from pybroadway.term import Atom, loggable
from pybroadway.term import _impl as term_impl

__all__ = ["SYSTEM_INTENSITY", "SYSTEM_PROCESSES", "Kernel", "NodeDown", "kernel_sup"]

log = logging.getLogger("pybroadway.erldist.node")

SYSTEM_PROCESSES: tuple[ChildSpec, ...] = (
    ChildSpec(id="global_name_server", start=GlobalNameServer, name="global_name_server"),
    ChildSpec(id="net_kernel", start=NetKernel, name="net_kernel"),
    ChildSpec(id="rex", start=Rex, name="rex"),
)
"""The processes every node runs from its start, in start order."""

SYSTEM_INTENSITY = (3, 5.0)
"""More than 3 restarts in 5 seconds: the supervisor gives up and the node stops."""


class EpmdKeeper(Process):
    """Keeps the node registered with EPMD: when the registration is lost (its EPMD stopped or
    was restarted), it registers again, trying every ``retry`` seconds until it succeeds."""

    def __init__(self, registration: EpmdRegistration, retry: float = 1.0) -> None:
        super().__init__()
        self.registration = registration
        self.retry = retry
        self._failures = Throttle(log, logging.WARNING, "failed registrations",
                                  burst=1, interval=30.0)

    async def run(self) -> None:
        registration = self.registration
        while True:
            await registration.wait_lost()
            while registration.closed and not registration.unregistered:
                try:
                    await registration.renew()
                except EpmdError as exc:
                    self._failures.log("cannot register %s with epmd again (%s); retrying "
                                       "every %gs", registration.name, exc, self.retry)
                    await asyncio.sleep(self.retry)
            if registration.unregistered:
                return
            log.info("registered %s with epmd again", registration.name)


def kernel_sup(registration: EpmdRegistration) -> Supervisor:
    """A new (not yet spawned) ``kernel_sup``: the system processes, and the keeper of the
    node's EPMD ``registration``."""
    intensity, period = SYSTEM_INTENSITY
    keeper = ChildSpec(id="epmd_registration", start=lambda: EpmdKeeper(registration))
    return Supervisor([*SYSTEM_PROCESSES, keeper], intensity=intensity, period=period)


class NodeDown(PyBroadwayError):
    """The node stopped by itself: its supervisor gave up restarting its processes."""

    def __init__(self, node: Atom, reason: Any) -> None:
        super().__init__(f"node {node.name} stopped: its supervisor gave up ({loggable(reason)})")
        self.node = node
        self.reason = reason


class KernelHost(ProcessHost, Protocol):
    """What the kernel needs of its node beyond what a process sees (the
    :class:`~pybroadway.erldist.node.Node` implements it)."""

    @property
    def running(self) -> bool:
        """True while the node runs."""

    async def stop(self) -> None:
        """Stop the node."""


class Kernel:
    """A node's ``kernel_sup`` and what its end means: a node whose supervisor ended while it
    runs cannot serve, so it stops, loudly, and says why."""

    def __init__(self, node: KernelHost) -> None:
        self.node = node
        self.supervisor: Supervisor | None = None
        self._down: asyncio.Future[Any] | None = None

    async def start(self, registration: EpmdRegistration) -> None:
        """Spawn ``kernel_sup`` and wait until the system processes run."""
        node = self.node
        self._down = asyncio.get_running_loop().create_future()
        self.supervisor = supervisor = node.spawn(kernel_sup(registration), name="kernel_sup")
        node.start_task(self._watch(supervisor), name=f"node-watch-{node.name.name}")
        await supervisor.started.wait()
        term_impl.announce()  # once per process, if the pure-Python codec runs

    async def _watch(self, supervisor: Supervisor) -> None:
        reason = await supervisor.wait()
        node = self.node
        if not node.running:
            return
        log.critical("node %s cannot serve: its supervisor kernel_sup ended (%s); stopping",
                     node.name.name, loggable(reason))
        self.stopped(reason)
        node.start_task(node.stop(), name=f"node-stop-{node.name.name}")

    def stopped(self, reason: Any) -> None:
        """The node stopped: by itself because of ``reason``, or on request (None)."""
        if self._down is not None and not self._down.done():
            self._down.set_result(reason)

    async def wait_down(self) -> Any:
        """Wait until the node stops; return why it stopped by itself, or None."""
        if self._down is None:
            raise StateError(f"{self.node} was never started")
        return await asyncio.shield(self._down)
