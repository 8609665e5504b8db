"""The public functions of ``:global`` on a Python node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pybroadway.erldist.global_names.name_server import GlobalNameServer
from pybroadway.erldist.global_names.protocol import GNS, RANDOM_EXIT_NAME, as_name
from pybroadway.erldist.global_names.transaction import transaction
from pybroadway.errors import NotFound, StateError
from pybroadway.term import Atom, Pid

if TYPE_CHECKING:
    from pybroadway.erldist.process import ProcessHost


def server(node: ProcessHost) -> GlobalNameServer:
    """The node's ``global_name_server`` (raises RuntimeError if it is not running)."""
    pid = node.whereis(GNS)
    process = node.process(pid) if pid is not None else None
    if not isinstance(process, GlobalNameServer):
        raise StateError(f"{node} runs no global_name_server (is it started?)")
    return process


def whereis_name(node: ProcessHost, name: Any) -> Pid | None:
    """The pid registered globally as ``name`` (a ``str`` is taken as an atom), or None."""
    entry = server(node).table.get(as_name(name))
    return entry[0] if entry is not None else None


def registered_names(node: ProcessHost) -> list[Any]:
    """Every global name this node knows."""
    return list(server(node).table)


def send(node: ProcessHost, name: Any, message: Any) -> Pid:
    """Send ``message`` to the process registered as ``{:global, name}``; return its pid.

    Raises :class:`~pybroadway.errors.NotFound` (a LookupError) when no process has that
    name (``:global.send/2`` exits there).
    """
    pid = whereis_name(node, name)
    if pid is None:
        raise NotFound(f"no process is registered globally as {name!r}")
    node.send(pid, message)
    return pid


async def sync(node: ProcessHost, timeout: float = 10.0) -> None:
    """Wait until the connect protocol has completed with every visible connected node."""
    await server(node).wait_synced(timeout)


async def register_name(node: ProcessHost, name: Any, pid: Pid, *, method: Any = RANDOM_EXIT_NAME,
                        timeout: float = 30.0) -> bool:
    """Register ``pid`` as the global ``name`` on every node of the cluster.

    Runs ``global``'s transaction — lock ``{global, Registrar}`` on every known node (retrying
    with backoff while another requester holds it), ``{register, …}``, unlock — and returns
    False when the name is taken. ``method`` is the clash resolver (default
    ``global:random_exit_name/3``).
    """
    name = as_name(name)
    gns = server(node)

    def body(nodes: list[Atom]) -> tuple[Any, bool]:
        if name in gns.table:
            return None, False
        assert gns.registrar is not None
        if gns.lock_still_set(gns.registrar.pid):
            gns.insert_name(name, pid, method)
        return (Atom("register"), name, pid, method), True

    return await transaction(gns, body, timeout)


async def unregister_name(node: ProcessHost, name: Any, *, timeout: float = 30.0) -> None:
    """Remove the global ``name`` on every node of the cluster."""
    name = as_name(name)
    gns = server(node)

    def body(nodes: list[Atom]) -> tuple[Any, bool]:
        gns.delete_name(name)
        return (Atom("unregister"), name), True

    await transaction(gns, body, timeout)
