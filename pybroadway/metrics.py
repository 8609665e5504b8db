"""Prometheus metrics of a running pipeline, its connector and its node.

Needs the optional ``prometheus_client`` (``pip install '.[metrics]'`` in a clone); the rest of
pybroadway does not import this module. ``pybroadway serve --metrics-port N`` uses it::

    from pybroadway.metrics import start_metrics_server

    async with pipeline:          # fed by an OtpDistributionProducer on ``node``
        async with await start_metrics_server(pipeline, node, 9568) as server:
            ...                   # server.url: http://127.0.0.1:9568/metrics

Almost everything is read when Prometheus scrapes, from counters the pipeline and the
connector keep anyway (:meth:`Pipeline.stats`, :meth:`Pipeline.stage_stats`, the receiver's
clients and per-node counts, ``node.nodes()``): nothing is done per message for the metrics.
Only batch sizes and durations come from the ``("broadway", "batch_processor", "stop")``
telemetry event, once per batch, and only for pipelines with batchers.

Label sets stay bounded: stages are labelled by their configured names, never by message or
process. Messages per client are labelled by the client's *node* (``client_node``), never by
its pid: the first ``max_client_nodes`` nodes (default 100) seen get a label of their own, the
others (and senders on this node) add up under ``client_node="other"``. The metrics are listed
in :data:`METRICS`.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pybroadway._hints import install_command
from pybroadway._http import HttpLimits, HttpServer, Request, Response
from pybroadway.erldist import Node
from pybroadway.errors import ArgumentError
from pybroadway.otp_distribution import OtpDistributionProducer
from pybroadway.pipeline import Pipeline, subscribe

try:
    from prometheus_client import (
        GC_COLLECTOR,
        PLATFORM_COLLECTOR,
        PROCESS_COLLECTOR,
        CollectorRegistry,
    )
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"pybroadway.metrics needs prometheus_client: {exc}; "
                      f"{install_command('metrics', 'prometheus_client')}") from exc

__all__ = ["METRICS", "HttpLimits", "Metrics", "MetricsServer", "start_metrics_server"]

logger = logging.getLogger("pybroadway.metrics")

METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (type, labels, help)
    "pybroadway_messages_handled_total": (
        "counter", ("pipeline",), "Messages acknowledged as successful."),
    "pybroadway_messages_failed_total": (
        "counter", ("pipeline",), "Messages acknowledged as failed."),
    "pybroadway_messages_in_flight": (
        "gauge", ("pipeline",), "Messages taken from the producers, not yet acknowledged."),
    "pybroadway_pipeline_version_info": (
        "gauge", ("pipeline", "version"),
        "1, labelled with the version of the code that handles messages (the pipeline's "
        "version option, by default a hash of its code): a reload changes it."),
    "pybroadway_pipeline_version_since_seconds": (
        "gauge", ("pipeline",),
        "When that version started to handle messages, in seconds since the epoch."),
    "pybroadway_pipeline_reloads_total": (
        "counter", ("pipeline",), "Reloads that changed the code handling messages."),
    "pybroadway_stage_messages_in_total": (
        "counter", ("pipeline", "stage", "name"),
        "Messages that came into a stage (stage: producer, processor or batcher)."),
    "pybroadway_stage_messages_out_total": (
        "counter", ("pipeline", "stage", "name"),
        "Messages a stage passed on: taken from a producer, handled by a processor or a "
        "batch processor."),
    "pybroadway_stage_messages_failed_total": (
        "counter", ("pipeline", "stage", "name"), "Messages that failed in a stage."),
    "pybroadway_stage_queued_messages": (
        "gauge", ("pipeline", "stage", "name"),
        "Messages waiting in a stage: a producer's buffer, delivered to the processors and "
        "not yet handled, in a batcher's batches."),
    "pybroadway_stage_outstanding_demand": (
        "gauge", ("pipeline", "stage", "name"),
        "Messages asked for and not yet delivered: of a producer through handle_demand, of "
        "the producers by the processors."),
    "pybroadway_batch_size_messages": (
        "histogram", ("pipeline", "batcher"), "Messages per batch handled."),
    "pybroadway_batch_duration_seconds": (
        "histogram", ("pipeline", "batcher"), "Time handle_batch took, per batch."),
    "pybroadway_registered_clients": (
        "gauge", ("pipeline",), "Clients registered with the connector's receiver."),
    "pybroadway_client_messages_total": (
        "counter", ("pipeline", "client_node"),
        "Data messages the receiver took, by the sender's node (at most max_client_nodes "
        "labels; the rest under \"other\")."),
    "pybroadway_dropped_messages_total": (
        "counter", ("pipeline",), "Messages the connector dropped (overflow drop_*)."),
    "pybroadway_pull_requests_outstanding": (
        "gauge", ("pipeline",), "Pull requests sent to clients and not yet answered."),
    "pybroadway_connected_nodes": (
        "gauge", (), "Nodes connected to this node."),
    "pybroadway_workers": (
        "gauge", ("pipeline",), "Workers subscribed to the front (with workers only)."),
    "pybroadway_worker_messages_handled_total": (
        "counter", ("pipeline", "worker"),
        "Messages a worker handled successfully, by its node (at most max_client_nodes "
        "labels; the rest under \"other\")."),
    "pybroadway_worker_messages_failed_total": (
        "counter", ("pipeline", "worker"), "Messages that failed in a worker."),
    "pybroadway_worker_messages_in_flight": (
        "gauge", ("pipeline", "worker"), "Messages a worker holds, not yet reported."),
}
"""Every metric pybroadway exports: its type, label names and help text."""

SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000)
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
OTHER = "other"
_BATCH_STOP = ("broadway", "batch_processor", "stop")


class _Histogram:
    """Bucket counts kept by hand (no lock: observed and read in the event loop)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.count += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            out.append((str(float(bound)), float(cumulative)))
        out.append(("+Inf", float(self.count)))
        return out


def _family(name: str) -> Metric:
    kind, labels, documentation = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name, documentation, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(name, documentation, labels=labels)
    return HistogramMetricFamily(name, documentation, labels=labels)


class Metrics:
    """A Prometheus collector of one pipeline (and, given, the node it runs on).

    ``Metrics(pipeline, node)`` registers itself on ``registry`` (by default a registry of
    its own, which also gets the process, platform and GC collectors of
    ``prometheus_client``); :meth:`exposition` renders the registry as Prometheus or
    OpenMetrics text, :meth:`close` unregisters it. It may be made before the pipeline
    starts: a pipeline that is not running exports zeros. Use it from the event loop's
    thread, where the pipeline runs: collection reads the pipeline's state without locks.
    """

    def __init__(self, pipeline: Pipeline, node: Node | None = None, *,
                 registry: CollectorRegistry | None = None, max_client_nodes: int = 100
                 ) -> None:
        if max_client_nodes < 0:
            raise ArgumentError(f"max_client_nodes must be >= 0, got {max_client_nodes}")
        self.pipeline = pipeline
        self.node = node
        self.max_client_nodes = max_client_nodes
        self.name = str(pipeline.options["name"])
        self._client_labels: dict[Any, str] = {}
        self._worker_labels: dict[Any, str] = {}
        self._sizes: dict[str, _Histogram] = {}
        self._durations: dict[str, _Histogram] = {}
        self._unsubscribe: Callable[[], None] | None = None
        if pipeline.options["batchers"]:
            for key in pipeline.options["batchers"]:
                self._sizes[str(key)] = _Histogram(SIZE_BUCKETS)
                self._durations[str(key)] = _Histogram(DURATION_BUCKETS)
            self._unsubscribe = subscribe(_BATCH_STOP, self._batch_stopped)
        if registry is None:
            registry = CollectorRegistry()
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        self.registry = registry
        registry.register(self)

    def close(self) -> None:
        """Stop observing batches and unregister from the registry (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with contextlib.suppress(KeyError):
            self.registry.unregister(self)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry's metrics in the format ``accept`` (an HTTP Accept header) prefers:
        ``(body, content_type)``."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def _batch_stopped(self, event: tuple[str, ...], measurements: dict[str, Any],
                       metadata: dict[str, Any]) -> None:
        if metadata.get("name") != self.name:
            return
        key = str(metadata["batcher"])
        sizes = self._sizes.get(key)
        if sizes is None:
            return
        sizes.observe(measurements["successful"] + measurements["failed"])
        self._durations[key].observe(measurements["duration"] / 1e9)

    # -- the Collector protocol of prometheus_client ----------------------------------------

    def describe(self) -> list[Metric]:
        """The metric families, without samples (what the registry checks names with)."""
        with_workers = "workers" in self.pipeline.stats()
        return [_family(name) for name in METRICS
                if (self.node is not None or name != "pybroadway_connected_nodes")
                and (with_workers or not name.startswith("pybroadway_worker"))]

    def collect(self) -> Iterable[Metric]:
        """Read the pipeline, the connector and the node now, as Prometheus scrapes."""
        families = {family.name: family for family in self.describe()}

        def add(name: str, labels: Sequence[str], value: float) -> None:
            family = families[name.removesuffix("_total")]
            family.add_metric([self.name, *labels], value)  # type: ignore[attr-defined]

        stats = self.pipeline.stats()
        add("pybroadway_messages_handled_total", (), stats["handled"])
        add("pybroadway_messages_failed_total", (), stats["failed"])
        add("pybroadway_messages_in_flight", (), stats["in_flight"])
        add("pybroadway_pipeline_version_info", (str(stats["version"]),), 1)
        add("pybroadway_pipeline_version_since_seconds", (), stats["since"])
        add("pybroadway_pipeline_reloads_total", (), stats["reloads"])
        self._collect_stages(add)
        for key, sizes in self._sizes.items():
            durations = self._durations[key]
            for name, histogram in (("pybroadway_batch_size_messages", sizes),
                                    ("pybroadway_batch_duration_seconds", durations)):
                families[name].add_metric(  # type: ignore[attr-defined]
                    [self.name, key], histogram.buckets(), histogram.total)
        self._collect_connector(add)
        workers = stats.get("workers")
        if workers is not None:
            add("pybroadway_workers", (), len(workers))
            totals: dict[str, list[float]] = {}
            for worker in workers:
                label = self._client_label(worker["node"], self._worker_labels)
                total = totals.setdefault(label, [0, 0, 0])
                total[0] += worker["handled"]
                total[1] += worker["failed"]
                total[2] += worker["in_flight"]
            for label, (handled, failed, held) in totals.items():
                add("pybroadway_worker_messages_handled_total", (label,), handled)
                add("pybroadway_worker_messages_failed_total", (label,), failed)
                add("pybroadway_worker_messages_in_flight", (label,), held)
        if self.node is not None:
            families["pybroadway_connected_nodes"].add_metric(  # type: ignore[attr-defined]
                [], len(self.node.nodes()))
        return list(families.values())

    def _collect_stages(self, add: Callable[[str, Sequence[str], float], None]) -> None:
        stages = self.pipeline.stage_stats()
        for index, producer in enumerate(stages["producers"]):
            labels = ("producer", str(index))
            add("pybroadway_stage_messages_in_total", labels, producer["received"])
            add("pybroadway_stage_messages_out_total", labels, producer["taken"])
            add("pybroadway_stage_queued_messages", labels, producer["buffered"])
            add("pybroadway_stage_outstanding_demand", labels, producer["pending_demand"])
        for group, stage, key in (("processors", "processor", "processor_key"),
                                  ("batchers", "batcher", "batcher_key")):
            for entry in stages[group]:
                labels = (stage, str(entry[key]))
                add("pybroadway_stage_messages_in_total", labels, entry["received"])
                add("pybroadway_stage_messages_out_total", labels, entry["successful"])
                add("pybroadway_stage_messages_failed_total", labels, entry["failed"])
                add("pybroadway_stage_queued_messages", labels, entry["queued"])
                if stage == "processor":
                    add("pybroadway_stage_outstanding_demand", labels, entry["demand"])

    def _collect_connector(self, add: Callable[[str, Sequence[str], float], None]) -> None:
        try:
            producers = [producer for producer in self.pipeline.producers
                         if isinstance(producer, OtpDistributionProducer)]
        except RuntimeError:  # not running
            producers = []
        clients = dropped = outstanding = 0
        by_node: dict[str, int] = {}
        for producer in producers:
            receiver = producer.receiver
            clients += len(receiver.clients)
            outstanding += len(receiver.outstanding)
            dropped += producer.dropped
            for node, count in producer.received_by_node().items():
                label = self._client_label(node)
                by_node[label] = by_node.get(label, 0) + count
        add("pybroadway_registered_clients", (), clients)
        add("pybroadway_dropped_messages_total", (), dropped)
        add("pybroadway_pull_requests_outstanding", (), outstanding)
        for label, count in by_node.items():
            add("pybroadway_client_messages_total", (label,), count)

    def _client_label(self, node: Any, labels: dict[Any, str] | None = None) -> str:
        """A node's label: its name while fewer than ``max_client_nodes`` have one, else
        ``"other"``. A label once given is kept, so every series stays monotonic."""
        known = self._client_labels if labels is None else labels
        if node is None:
            return OTHER
        label = known.get(node)
        if label is None:
            if len(known) >= self.max_client_nodes:
                return OTHER
            label = known[node] = str(getattr(node, "name", node))
        return label


class MetricsServer:
    """Serves ``GET /metrics`` of a :class:`Metrics` over HTTP, in the running event loop
    (so scraping reads the pipeline in the thread it runs in), within ``limits``
    (:class:`HttpLimits`: connections, header and request sizes, a timeout).
    Made by :func:`start_metrics_server`; :meth:`stop` closes it. Each connection answers
    one request and is closed."""

    def __init__(self, metrics: Metrics, limits: HttpLimits | None = None) -> None:
        self.metrics = metrics
        self.http = HttpServer(self._answer, limits, logger=logger, name="metrics")

    @property
    def host(self) -> str:
        """The address listened on."""
        return self.http.host

    @property
    def port(self) -> int:
        """The port listened on."""
        return self.http.port

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (0: any free port; :attr:`port` tells which)."""
        await self.http.start(host, port)
        logger.info("metrics at %s", self.url)

    async def stop(self) -> None:
        """Stop listening, drop every connection and unregister the metrics (idempotent)."""
        await self.http.stop()
        self.metrics.close()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _answer(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"only GET\n")
        if request.path == "/metrics":
            body, content_type = self.metrics.exposition(request.headers.get("accept"))
            return Response(200, body, content_type)
        if request.path == "/":
            return Response(200, b'<html><body><a href="/metrics">/metrics</a></body></html>\n',
                            "text/html")
        return Response(404, b"not found: try /metrics\n")


async def start_metrics_server(pipeline: Pipeline, node: Node | None = None,
                               port: int = 9568, host: str = "127.0.0.1", *,
                               max_client_nodes: int = 100,
                               registry: CollectorRegistry | None = None,
                               limits: HttpLimits | None = None) -> MetricsServer:
    """Serve the metrics of ``pipeline`` (and ``node``) at ``http://host:port/metrics``.

    Returns the running :class:`MetricsServer`; ``await server.stop()`` (or ``async with``)
    ends it. ``port=0`` picks a free port. Listens on 127.0.0.1 by default: the metrics name
    the clients' nodes, so expose them beyond this host only on purpose. Raises OSError if
    the address cannot be bound. ``limits`` (:class:`HttpLimits`) bound what clients can make
    the server hold: by default 64 connections, 16 KiB of headers, 64 KiB per request, 10 s
    per connection.
    """
    metrics = Metrics(pipeline, node, registry=registry, max_client_nodes=max_client_nodes)
    server = MetricsServer(metrics, limits)
    try:
        await server.start(host, port)
    except BaseException:
        metrics.close()
        raise
    return server
