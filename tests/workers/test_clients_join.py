"""Clients come and go while ``pybroadway serve --workers 2`` runs, as the library's clients
do: each connects to the front, finds the receiver through ``:global`` and pushes at once,
while global meshes it with the workers. Nothing may be lost, and no node may cut another off
to prevent overlapping partitions while a client pushes: in a cluster of BEAM nodes of the
same shape that happens only as a node leaves (``bench/client_churn.py`` compares both, many
runs of each). Before connections kept one pending attempt per peer, two nodes dialling each
other at once could each keep a different connection and close the other's: a nodedown in
the middle of a connect, which global answered by cutting the client off, and the workers
from the front (hundreds to thousands of messages lost in some runs)."""

from __future__ import annotations

import asyncio
import re
from functools import partial
from pathlib import Path

import pytest

from testkit.churn import CLIENTS, CUT_OFF, serve_with_workers
from testkit.peers import free_port, unique_name
from testkit.recorded import recorded
from testkit.wait import eventually_async

pytestmark = [pytest.mark.timeout(120), pytest.mark.beam]

COOKIE = "clients_join_cookie"
ROUNDS = 3
"""Clients one after the other, each a new node (each meshes anew with the workers)."""
PUSHES = 1_000
CLIENT_DOWN = re.compile(r"\] client .* down: ")


async def handled(log: Path, count: int, serve_log: list[str]) -> None:
    await eventually_async(lambda: len(recorded(log)) >= count, timeout=30,
                           what=lambda: f"{len(recorded(log))} of {count} handled; log:\n"
                           + "\n".join(serve_log[-30:]))


def client_down(serve_log: list[str], since: int) -> bool:
    return any(CLIENT_DOWN.search(line) for line in serve_log[since:])


@pytest.mark.parametrize("kind", sorted(CLIENTS))
async def test_clients_that_come_and_go_lose_nothing_and_cut_no_one_off(
        tmp_path: Path, kind: str) -> None:
    log = tmp_path / "handled"
    epmd_port = free_port()
    front = f"{unique_name('front')}@localhost"
    serve = serve_with_workers(front, epmd_port, COOKIE, log)
    try:
        await asyncio.to_thread(serve.wait_logged, "PyBroadway: worker ", 2, 30)
        gone: list[str] = []  # nodes of the clients that left
        for round_ in range(ROUNDS):
            since = len(serve.stderr)
            client = await CLIENTS[kind](front, epmd_port, COOKIE,
                                         range(round_ * PUSHES, (round_ + 1) * PUSHES))
            try:
                await handled(log, (round_ + 1) * PUSHES, serve.stderr)
                # Checked while the client is still there. As a client leaves, a node may hear
                # of it from another before its own nodedown and say so (a BEAM node does too);
                # the workers' lines about it may come after the front's.
                cut = [line for line in serve.stderr[since:]
                       if (CUT_OFF in line or CLIENT_DOWN.search(line))
                       and not any(node in line for node in gone)]
                assert not cut, "\n".join(cut)
            finally:
                await client.leave()
            gone.append(client.node)
            # The next client comes once the front saw this one go.
            await asyncio.to_thread(serve.wait_until, partial(client_down, serve.stderr, since),
                                    "client down", 20)
        assert sorted(recorded(log)) == list(range(ROUNDS * PUSHES)), \
            "each pushed message handled exactly once"
    finally:
        serve.kill()
