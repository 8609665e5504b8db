"""What the dashboard shows, read from the pipeline and its node once per tick.

:class:`Sampler` reads counters the pipeline, the connector and the node keep anyway
(:meth:`Pipeline.stats`, :meth:`Pipeline.stage_stats`, :meth:`Pipeline.recent_failures`, the
receiver's clients, the node's connections): a tick costs the same whatever the traffic, and
nothing is done per message for the dashboard. Rates and workloads are differences between
two ticks. Every list a peer can grow (clients, subscriptions, names, nodes) is cut to
:data:`MAX_ROWS` rows, with the full count beside it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from pybroadway.erldist import Node, global_names
from pybroadway.erldist.stages import ConsumerStage, ProducerStage
from pybroadway.gen_stage import GenStageProducer
from pybroadway.otp_distribution import OtpDistributionProducer
from pybroadway.pipeline import Failure, Pipeline
from pybroadway.term import loggable

__all__ = ["FAILURES", "MAX_ROWS", "Sampler"]

MAX_ROWS = 100
"""Rows of each Erlang-side list a snapshot carries (the count is always the full one)."""
FAILURES = 20
"""The last failures a snapshot carries (each up to a log line's 8 KiB of data)."""


def _rows(items: list[Any]) -> dict[str, Any]:
    return {"count": len(items), "rows": items[:MAX_ROWS]}


class Sampler:
    """Reads one pipeline (and the node it runs on, when given) each :meth:`tick`, and keeps
    the throughput of the last ``history`` ticks for the chart."""

    def __init__(self, pipeline: Pipeline, node: Node | None = None, *,
                 history: int = 300) -> None:
        self.pipeline = pipeline
        self.node = node
        self.history: deque[tuple[float, float, float]] = deque(maxlen=history)
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES)
        self._failures_seen = 0
        self._last: dict[str, Any] | None = None  # the counters of the previous tick
        self._last_time = time.monotonic()
        self.snapshot: dict[str, Any] = {}
        self.tick()

    def tick(self) -> dict[str, Any]:
        """Read everything now; the snapshot (also kept as :attr:`snapshot`)."""
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-6)
        stats = self.pipeline.stats()
        stages = self.pipeline.stage_stats()
        counters = {"handled": stats["handled"], "failed": stats["failed"]}
        last = self._last or {}

        def rate(key: str, value: float) -> float:
            before = last.get(key)
            return 0.0 if before is None else max(0.0, (value - before) / elapsed)

        topology = self._topology(stages, stats.get("workers"), counters, rate, elapsed)
        handled_rate = rate("handled", stats["handled"])
        failed_rate = rate("failed", stats["failed"])
        if self._last is not None:
            self.history.append((time.time(), handled_rate, failed_rate))
        self._last, self._last_time = counters, now
        self._read_failures()
        producers = self._producers()
        self.snapshot = {
            "time": time.time(),
            "pipeline": str(self.pipeline.options["name"]),
            "node": None if self.node is None else self.node.name.name,
            "totals": {
                "handled": stats["handled"], "failed": stats["failed"],
                "dropped": sum(getattr(p, "dropped", 0) for p in producers),
                "in_flight": stats["in_flight"], "buffered": stats["buffered"],
                "rate": handled_rate + failed_rate, "restarts": stats["restarts"]},
            "topology": topology,
            "history": [list(point) for point in self.history],
            "erlang": self._erlang(producers),
            "failures": list(self.failures),
        }
        return self.snapshot

    def _producers(self) -> list[Any]:
        try:
            return list(self.pipeline.producers)
        except RuntimeError:  # not running
            return []

    def _topology(self, stages: dict[str, list[dict[str, Any]]],
                  workers: list[dict[str, Any]] | None, counters: dict[str, Any],
                  rate: Any, elapsed: float) -> dict[str, Any]:
        """Each stage: its name, concurrency, throughput (``rate``, messages/s), what waits
        in it (``queued``) and its ``load``: the share of the last tick it was busy (None
        where a stage keeps no busy time)."""
        options = self.pipeline.options
        last = self._last or {}

        def load(key: str, busy: float, concurrency: int) -> float | None:
            before = last.get(key)
            counters[key] = busy
            if before is None:
                return 0.0
            share: float = (busy - before) / (elapsed * max(concurrency, 1))
            return min(1.0, max(0.0, share))

        producers = []
        for index, (entry, producer) in enumerate(
                zip(stages["producers"], self._producers(), strict=False)):
            key = f"producer:{index}"
            counters[key] = entry["taken"]
            size = getattr(producer, "buffer_size", None)
            producers.append({
                "name": str(entry["name"]), "kind": type(producer).__name__,
                "rate": rate(key, entry["taken"]), "queued": entry["buffered"],
                "load": min(1.0, entry["buffered"] / size) if size else None})
        processors = []
        group = stages["processors"][0] if stages["processors"] else None
        for name, processor_options in options["processors"].items():
            concurrency = int(processor_options.get("concurrency", 1))
            row = {"name": str(name), "concurrency": concurrency, "rate": 0.0, "queued": 0,
                   "load": None, "offloaded": workers is not None}
            if group is not None and workers is None:
                done = group["successful"] + group["failed"]
                counters[f"processor:{name}"] = done
                row.update(rate=rate(f"processor:{name}", done), queued=group["queued"],
                           load=load(f"busy:processor:{name}", group["busy"],
                                     concurrency))
            processors.append(row)
        batchers = []
        for entry in stages["batchers"]:
            name = entry["batcher_key"]
            batcher_options = (options.get("batchers") or {}).get(name, {})
            concurrency = int(batcher_options.get("concurrency", 1))
            done = entry["successful"] + entry["failed"]
            counters[f"batcher:{name}"] = done
            batchers.append({
                "name": str(name), "concurrency": concurrency,
                "batch_size": batcher_options.get("batch_size"),
                "rate": rate(f"batcher:{name}", done), "queued": entry["queued"],
                "load": load(f"busy:batcher:{name}", entry.get("busy", 0.0), concurrency)})
        worker_rows = [{"node": str(worker["node"]),
                        "host": str(worker["node"]).partition("@")[2],
                        "handled": worker["handled"], "failed": worker["failed"],
                        "queued": worker["in_flight"], "rate": worker["rate"]}
                       for worker in workers or ()][:MAX_ROWS]
        return {"producers": producers, "processors": processors, "batchers": batchers,
                "workers": worker_rows, "with_workers": workers is not None}

    def _read_failures(self) -> None:
        """Format the failures recorded since the last tick (each once: a log line's
        truncation of the data, the exception's type and text)."""
        count, recent = self.pipeline.recent_failures()
        new = min(count - self._failures_seen, len(recent))
        self._failures_seen = count
        for failure in recent[len(recent) - new:] if new > 0 else ():
            self.failures.appendleft(_failure_row(failure))

    def _erlang(self, producers: list[Any]) -> dict[str, Any]:
        node = self.node
        if node is None:
            return {}
        nodes = []
        for peer in node.nodes():
            connection = node.connection(peer)
            if connection is not None:
                nodes.append({"name": peer.name, "hidden": connection.hidden,
                              "tls": connection.tls})
        clients = [{"pid": loggable(pid), "node": pid.node.name}
                   for producer in producers if isinstance(producer, OtpDistributionProducer)
                   for pid in producer.receiver.clients]
        return {"nodes": _rows(sorted(nodes, key=lambda row: row["name"])),
                "clients": _rows(clients),
                "subscriptions": _rows(self._subscriptions(node, producers)),
                "global_names": _rows(self._global_names(node))}

    @staticmethod
    def _subscriptions(node: Node, producers: list[Any]) -> list[dict[str, Any]]:
        """GenStage subscriptions: those this node's consumers hold on producers (``in``:
        events come in, ``demand`` asked and not yet met) and those of consumers on this
        node's registered producer stages (``out``)."""
        consumers: list[tuple[str, ConsumerStage]] = [
            (producer.name, producer.subscriber) for producer in producers
            if isinstance(producer, GenStageProducer)]
        rows: list[dict[str, Any]] = []
        for name in node.registered:
            pid = node.whereis(name)
            process = node.process(pid) if pid is not None else None
            if isinstance(process, ProducerStage):
                rows += [{"direction": "out", "stage": name.name, "peer": loggable(sub.pid),
                          "node": sub.pid.node.name, "demand": sub.demand}
                         for sub in list(process.subscribers.values())[:MAX_ROWS]]
            elif isinstance(process, ConsumerStage):
                consumers.append((name.name, process))
        for stage, consumer in consumers:
            rows += [{"direction": "in", "stage": str(stage), "peer": loggable(sub.producer),
                      "node": sub.node.name, "demand": sub.pending}
                     for sub in list(consumer.subscriptions.values())[:MAX_ROWS]]
        return rows

    @staticmethod
    def _global_names(node: Node) -> list[dict[str, str]]:
        """The ``:global`` names registered to this node's processes."""
        try:
            table = global_names.server(node).table
        except Exception:  # a hidden node runs no global_name_server
            return []
        return sorted(({"name": loggable(name), "pid": loggable(entry[0])}
                       for name, entry in list(table.items())
                       if entry[0].node == node.name), key=lambda row: row["name"])


def _failure_row(failure: Failure) -> dict[str, Any]:
    return {"time": failure.time, "stage": failure.callback, "error": failure.error,
            "data": loggable(failure.data)}
