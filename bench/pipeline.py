"""Throughput and memory of pybroadway.pipeline.

Pushes N small messages (default 1,000,000) into a running pipeline's producer buffer in one
go (so all of them are buffered at once), then waits until every one is acknowledged:

(a) processors only, with a no-op ``handle_message``;
(b) the same plus a batcher with ``batch_size`` 100 and a no-op ``handle_batch``.

Each scenario runs in a fresh subprocess so that its peak RSS is its own. Run::

    python bench/pipeline.py [--messages N] [--max-demand D] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

import support  # noqa: F401  (puts the repository on sys.path, for testkit)

from pybroadway.pipeline import Message, Producer
from testkit.doubles import Passthrough


class _CountingAcknowledger:
    def __init__(self, expected: int, done: asyncio.Future[None]) -> None:
        self.left = expected
        self.done = done

    def ack(self, ack_ref: object, successful: list[Message], failed: list[Message]) -> None:
        self.left -= len(successful) + len(failed)
        if self.left <= 0 and not self.done.done():
            self.done.set_result(None)


async def _run(scenario: str, count: int, max_demand: int, concurrency: int) -> dict:
    options: dict = {
        "producer": {"module": (Producer, {"buffer_size": None})},
        "processors": {"default": {"concurrency": concurrency, "max_demand": max_demand}},
    }
    if scenario == "b":
        options["batchers"] = {"default": {"batch_size": 100, "concurrency": 1}}
    pipeline = Passthrough(**options)
    done = asyncio.get_running_loop().create_future()
    acknowledger = (_CountingAcknowledger(count, done), None, None)
    async with pipeline:
        started = time.perf_counter()
        pipeline.push_messages([Message(i, None, acknowledger) for i in range(count)])
        pushed = time.perf_counter()
        buffered_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        await done
        finished = time.perf_counter()
        stats = pipeline.stats()
    assert stats["handled"] == count, stats
    return {
        "push_s": pushed - started,
        "total_s": finished - started,
        "rate": count / (finished - started),
        "process_rate": count / (finished - pushed),
        "buffered_rss_mb": buffered_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--max-demand", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--scenario", choices=["a", "b"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        result = asyncio.run(_run(args.scenario, args.messages, args.max_demand,
                                  args.concurrency))
        print(json.dumps(result))
        return
    print(f"{args.messages:,} messages, processors concurrency {args.concurrency}, "
          f"max_demand {args.max_demand}; Python {sys.version.split()[0]}")
    print(f"{'scenario':<34}{'msgs/s (all)':>14}{'msgs/s (drain)':>16}{'push s':>8}"
          f"{'RSS buffered MB':>17}{'peak RSS MB':>13}")
    labels = {"a": "(a) processors, no-op", "b": "(b) + batcher batch_size 100"}
    for scenario in ("a", "b"):
        output = subprocess.run(
            [sys.executable, __file__, "--scenario", scenario, "--messages", str(args.messages),
             "--max-demand", str(args.max_demand), "--concurrency", str(args.concurrency)],
            check=True, capture_output=True, text=True).stdout
        r = json.loads(output)
        print(f"{labels[scenario]:<34}{r['rate']:>14,.0f}{r['process_rate']:>16,.0f}"
              f"{r['push_s']:>8.2f}{r['buffered_rss_mb']:>17.0f}{r['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
