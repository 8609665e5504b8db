"""What says which version of the code handles messages, and since when: ``stats()``, the
metrics and ``serve``'s status line, before and after a reload."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from pybroadway._terminal import StatusLine
from pybroadway.metrics import Metrics
from pybroadway.pipeline import Pipeline
from tests.pipeline.helpers import push_options
from tests.pipeline.test_reload import tagging


async def test_metrics_and_the_status_line_say_which_version_handles_and_since_when() -> None:
    def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(metrics.exposition()[0].decode())
                for sample in family.samples if "version" in sample.name
                or "reloads" in sample.name}

    pipeline = Pipeline(handle_message=tagging("v1"), version="v1", name="P", **push_options())
    async with pipeline:
        metrics = Metrics(pipeline)
        no_clients = SimpleNamespace(receiver=SimpleNamespace(clients={}))
        status = StatusLine(pipeline, no_clients, asyncio.Event())
        before = scraped(metrics)
        assert before[("pybroadway_pipeline_version_info",
                       (("pipeline", "P"), ("version", "v1")))] == 1
        assert before[("pybroadway_pipeline_reloads_total", (("pipeline", "P"),))] == 0
        assert status.text().endswith("version v1")
        await pipeline.reload(Pipeline(handle_message=tagging("v2"), version="v2", name="P",
                                       **push_options()))
        after = scraped(metrics)
        assert ("pybroadway_pipeline_version_info",
                (("pipeline", "P"), ("version", "v1"))) not in after
        assert after[("pybroadway_pipeline_version_info",
                      (("pipeline", "P"), ("version", "v2")))] == 1
        assert after[("pybroadway_pipeline_reloads_total", (("pipeline", "P"),))] == 1
        since = after[("pybroadway_pipeline_version_since_seconds", (("pipeline", "P"),))]
        assert since == pipeline.stats()["since"] > before[
            ("pybroadway_pipeline_version_since_seconds", (("pipeline", "P"),))]
        assert re.search(r"version v2 since \d\d:\d\d:\d\d$", status.text())
        metrics.close()
