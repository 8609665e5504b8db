"""Introspection: topology and producer names."""

from __future__ import annotations

from pybroadway.pipeline import Producer

from .helpers import Passthrough


async def test_topology_and_producer_names() -> None:
    pipeline = Passthrough(name="Orders", producer={"module": Producer, "concurrency": 2},
                           processors={"default": {"concurrency": 3}},
                           batchers={"s3": {"concurrency": 2}, "sqs": {}})
    assert pipeline.producer_names() == ["Orders.Broadway.Producer_0",
                                         "Orders.Broadway.Producer_1"]
    assert pipeline.topology() == {
        "producers": [{"name": "Orders.Broadway.Producer", "concurrency": 2}],
        "processors": [{"name": "Orders.Broadway.Processor_default", "processor_key": "default",
                        "concurrency": 3}],
        "batchers": [
            {"batcher_key": "s3", "name": "Orders.Broadway.BatchProcessor_s3",
             "batcher_name": "Orders.Broadway.Batcher_s3", "concurrency": 2},
            {"batcher_key": "sqs", "name": "Orders.Broadway.BatchProcessor_sqs",
             "batcher_name": "Orders.Broadway.Batcher_sqs", "concurrency": 1},
        ],
    }
    async with pipeline:
        assert [p.name for p in pipeline.producers] == pipeline.producer_names()
