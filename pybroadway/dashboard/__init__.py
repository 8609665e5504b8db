"""A live dashboard of a running pipeline and its node, served by the node itself.

Needs the optional ``aiohttp`` and ``prometheus_client`` (``pip install '.[dashboard]'`` in a
clone); the rest of pybroadway does not import this package. ``pybroadway serve
--dashboard-port N`` (and ``pybroadway worker``) use it; a program that runs its own
pipeline starts it the same way::

    from pybroadway.dashboard import start_dashboard

    async with pipeline:          # on ``node``
        async with await start_dashboard(pipeline, node, 8080) as dashboard:
            ...                   # dashboard.url: http://127.0.0.1:8080/

The page (``/``) shows, updated every second without reloads: the topology as a graph
(producers, processors, batchers, batch processors, and the workers' nodes) with each
stage's workload, throughput and queue; the totals and the throughput of the last minutes;
the Erlang side (connected nodes, hidden or not, TLS or not; the connector's clients;
GenStage subscriptions and their demand; this node's ``:global`` names); the last failures.
Every script and style comes from the node: the page works with no other network.
``/metrics`` is the Prometheus text of :mod:`pybroadway.metrics`; ``/api/snapshot`` the JSON
the page draws; ``/api/stream`` the same as server-sent events.
"""

from __future__ import annotations

from pybroadway._hints import install_command
from pybroadway.erldist import Node
from pybroadway.pipeline import Pipeline

try:
    from ._server import Dashboard, DashboardLimits
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"pybroadway.dashboard needs aiohttp and prometheus_client: {exc}; "
                      f"{install_command('dashboard', 'aiohttp prometheus_client')}") from exc

__all__ = ["Dashboard", "DashboardLimits", "start_dashboard"]


async def start_dashboard(pipeline: Pipeline, node: Node | None = None, port: int = 8080,
                          host: str = "127.0.0.1", *, token: str | None = None,
                          interval: float = 1.0, limits: DashboardLimits | None = None
                          ) -> Dashboard:
    """Serve the dashboard of ``pipeline`` (and ``node``) at ``http://host:port/``.

    Returns the running :class:`Dashboard`; ``await dashboard.stop()`` (or ``async with``)
    ends it. ``port=0`` picks a free port. Listens on 127.0.0.1 by default: the page names
    the clients' nodes and shows message data, so expose it beyond this host only on purpose,
    with a ``token`` (then wanted as ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``).
    ``interval``: seconds between two snapshots. Raises OSError if the address cannot be
    bound.
    """
    dashboard = Dashboard(pipeline, node, token=token, interval=interval, limits=limits)
    try:
        await dashboard.start(host, port)
    except BaseException:
        await dashboard.stop()
        raise
    return dashboard
