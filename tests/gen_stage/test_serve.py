"""``pybroadway serve --subscribe NAME@NODE``: the pipeline fed by GenStage producers, from
flags and from ``[[subscribe]]`` tables of the TOML file (no Erlang needed)."""

from __future__ import annotations

import argparse
import asyncio
import textwrap
from pathlib import Path

import pytest

from pybroadway._arguments import subscriptions
from pybroadway._config import ConfigError, load_config
from pybroadway.cli import add_serve_arguments, serve
from pybroadway.erldist import Node
from pybroadway.erldist.stages import ProducerStage
from testkit.peers import free_port, unique_name
from testkit.wait import eventually_async


@pytest.fixture(autouse=True)
def no_erlang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_subscribe_flags() -> None:
    assert subscriptions(["events@app@host", "more@b@h:max_demand=50,min_demand=5"], 1000) == [
        ("events", "app@host", {"max_demand": 1000}),
        ("more", "b@h", {"max_demand": 50, "min_demand": 5})]
    for bad in ("events", "events@host", "e@a@h:max=1", "e@a@h:max_demand=x",
                "e@a@h:max_demand=10,min_demand=10", "e@a@h:max_demand=1000000000",
                "e@a@h:max_demand=0"):
        with pytest.raises(ConfigError, match="bad --subscribe"):
            subscriptions([bad], 1000)


def test_subscribe_tables(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent("""
        [[subscribe]]
        name = "events"
        node = "app@host"
        max_demand = 500
        [[subscribe]]
        name = "more"
        node = "b@h"
        """))
    args = parse()
    load_config(str(path)).apply(args)
    assert args.subscribe == ["events@app@host:max_demand=500", "more@b@h"]
    flagged = parse("--subscribe", "x@y@z")
    load_config(str(path)).apply(flagged)
    assert flagged.subscribe == ["x@y@z"]  # the flags win
    path.write_text('[[subscribe]]\nname = "e"\nnode = "a@h"\nmax = 5\n')
    with pytest.raises(ConfigError, match=r"subscribe\[0\]: unknown key 'max'"):
        load_config(str(path))
    path.write_text('[[subscribe]]\nname = "e"\n')
    with pytest.raises(ConfigError, match="name and node are required"):
        load_config(str(path))


async def test_serve_runs_the_pipeline_on_genstage_producers() -> None:
    port = free_port()
    async with Node(f"{unique_name('app')}@localhost", cookie="c", epmd_port=port) as app:
        stage = app.spawn(ProducerStage(), name="events")
        args = parse("--subscribe", f"events@{app.name.name}:max_demand=40",
                     "--sname", f"{unique_name('serve')}@localhost", "--cookie", "c",
                     "--epmd-port", str(port), "--quiet")
        args.stop = asyncio.Event()
        serving = asyncio.ensure_future(serve(args))
        await eventually_async(lambda: stage.subscribers)
        await stage.emit(range(300))
        await eventually_async(lambda: stage.dispatched == 300)
        args.stop.set()
        summary = await asyncio.wait_for(serving, 20)
        assert (summary.handled, summary.failed) == (300, 0)
