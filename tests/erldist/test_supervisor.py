"""Supervisors restart their children by strategy and intensity, with their names, and stop
them in reverse order. Python-only: an embedded EPMD on a private port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from pybroadway.erldist import Node, Process
from pybroadway.erldist.supervisor import ChildSpec, Supervisor
from pybroadway.term import Atom
from pybroadway.term.atoms import SHUTDOWN
from testkit.peers import free_port, unique_name

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0


class Worker(Process):
    """Crashes on ``crash``, ends normally on ``stop``; records its stop in ``log``."""

    def __init__(self, label: str, log: list[str]) -> None:
        super().__init__()
        self.label = label
        self.log = log

    async def run(self) -> None:
        try:
            while True:
                message = await self.receive()
                if message == "crash":
                    raise RuntimeError(f"{self.label} crashed on purpose")
                if message == "stop":
                    return
        finally:
            self.log.append(self.label)


class Stubborn(Process):
    """Traps exits and never ends by itself: only a kill stops it."""

    async def run(self) -> None:
        self.trap_exit = True
        while True:
            await self.receive()


class LostCancellation(Process):
    """Loses the cancellation of its first exit signal, as ``asyncio.wait_for`` on Python
    3.11 does when the cancellation comes just as its inner future completes."""

    async def run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with Node(f"{unique_name('sup')}@localhost", cookie="c",
                    epmd_port=free_port()) as started:
        yield started


def specs(log: list[str], *labels: str, restart: str = "permanent") -> list[ChildSpec]:
    return [ChildSpec(id=label, start=lambda label=label: Worker(label, log), name=label,
                      restart=restart)  # type: ignore[arg-type]
            for label in labels]


async def start(node: Node, supervisor: Supervisor) -> Supervisor:
    node.spawn(supervisor)
    await asyncio.wait_for(supervisor.started.wait(), WAIT)
    return supervisor


async def restarted(supervisor: Supervisor, child_id: str, old: Process) -> Process:
    """The new incarnation of ``child_id`` once ``old`` has ended: ``which_children`` is
    answered after the supervisor has handled the exit."""
    await asyncio.wait_for(old.wait(), WAIT)
    await asyncio.wait_for(supervisor.which_children(), WAIT)
    current = supervisor.child(child_id)
    assert current is not None and current is not old, f"{child_id} was not restarted"
    return current


async def test_one_for_one_restarts_only_the_crashed_child_with_its_name(node: Node) -> None:
    log: list[str] = []
    starts: list[str] = []
    children = [ChildSpec(id="a", start=lambda: Worker("a", log), name="a",
                          on_start=lambda p: starts.append(str(p.pid))),
                *specs(log, "b")]
    supervisor = await start(node, Supervisor(children))
    a, b = supervisor.child("a"), supervisor.child("b")
    assert a is not None and b is not None
    assert node.whereis("a") == a.pid
    node.send(a.pid, "crash")
    new_a = await restarted(supervisor, "a", a)
    assert new_a.pid != a.pid
    assert node.whereis("a") == new_a.pid
    assert supervisor.child("b") is b and b.alive
    assert len(starts) == 2  # on_start ran for the restart too


async def test_one_for_all_restarts_every_child(node: Node) -> None:
    log: list[str] = []
    supervisor = await start(node, Supervisor(specs(log, "a", "b", "c"),
                                              strategy="one_for_all"))
    a, b, c = (supervisor.child(x) for x in "abc")
    assert a is not None and b is not None and c is not None
    node.send(b.pid, "crash")
    await restarted(supervisor, "c", c)
    for old, label in ((a, "a"), (b, "b"), (c, "c")):
        new = supervisor.child(label)
        assert new is not None and new is not old and new.alive
        assert node.whereis(label) == new.pid
    assert log[0] == "b" and sorted(log[1:]) == ["a", "c"]
    assert log[1:] == ["c", "a"]  # the others are stopped last-started first


async def test_rest_for_one_restarts_the_child_and_those_started_after_it(node: Node) -> None:
    log: list[str] = []
    supervisor = await start(node, Supervisor(specs(log, "a", "b", "c"),
                                              strategy="rest_for_one"))
    a, b, c = (supervisor.child(x) for x in "abc")
    assert a is not None and b is not None and c is not None
    node.send(b.pid, "crash")
    await restarted(supervisor, "c", c)
    assert supervisor.child("a") is a
    assert supervisor.child("b") is not b and supervisor.child("c") is not c


async def test_too_many_restarts_stop_the_supervisor_and_its_children(node: Node) -> None:
    log: list[str] = []
    supervisor = await start(node, Supervisor(specs(log, "a", "b"), intensity=2, period=60))
    for _ in range(3):
        a = supervisor.child("a")
        assert a is not None
        node.send(a.pid, "crash")
        await asyncio.wait_for(a.wait(), WAIT)
    assert await asyncio.wait_for(supervisor.wait(), WAIT) is SHUTDOWN
    assert supervisor.child("a") is None and supervisor.child("b") is None
    assert node.whereis("a") is None and node.whereis("b") is None
    assert log.count("b") == 1


async def test_transient_and_temporary_children(node: Node) -> None:
    log: list[str] = []
    children = [*specs(log, "t", restart="transient"), *specs(log, "tmp", restart="temporary")]
    supervisor = await start(node, Supervisor(children))
    t, tmp = supervisor.child("t"), supervisor.child("tmp")
    assert t is not None and tmp is not None
    node.send(t.pid, "stop")  # a normal end: a transient child stays down
    node.send(tmp.pid, "crash")  # a temporary child never comes back
    await asyncio.wait_for(asyncio.gather(t.wait(), tmp.wait()), WAIT)
    assert await asyncio.wait_for(supervisor.which_children(), WAIT) == [("t", None),
                                                                          ("tmp", None)]
    assert supervisor.alive


async def test_transient_child_that_crashes_is_restarted(node: Node) -> None:
    log: list[str] = []
    supervisor = await start(node, Supervisor(specs(log, "t", restart="transient")))
    t = supervisor.child("t")
    assert t is not None
    node.send(t.pid, "crash")
    assert (await restarted(supervisor, "t", t)).alive


async def test_ending_supervisor_stops_children_in_reverse_order(node: Node) -> None:
    log: list[str] = []
    supervisor = await start(node, Supervisor(specs(log, "a", "b", "c")))
    node.exit(supervisor.pid, Atom("because"))
    assert await asyncio.wait_for(supervisor.wait(), WAIT) == Atom("because")
    assert log == ["c", "b", "a"]


async def test_a_child_that_ignores_shutdown_is_killed_after_its_grace_time(node: Node) -> None:
    supervisor = await start(node, Supervisor(
        [ChildSpec(id="s", start=Stubborn, shutdown=0.2)]))
    child = supervisor.child("s")
    assert child is not None
    node.exit(supervisor.pid, SHUTDOWN)
    await asyncio.wait_for(supervisor.wait(), WAIT)
    assert not child.alive


async def test_a_child_that_lost_its_shutdown_is_still_killed(node: Node) -> None:
    supervisor = await start(node, Supervisor(
        [ChildSpec(id="l", start=LostCancellation, shutdown=0.2)]))
    child = supervisor.child("l")
    assert child is not None
    await asyncio.wait_for(supervisor.terminate_child("l"), WAIT)  # hung for ever before
    assert await asyncio.wait_for(child.wait(), WAIT) == Atom("killed")


async def test_a_start_that_fails_counts_as_a_crash(node: Node) -> None:
    log: list[str] = []

    def refuse(process: Process) -> None:
        raise RuntimeError("cannot register")

    supervisor = Supervisor([ChildSpec(id="a", start=lambda: Worker("a", log),
                                       on_start=refuse)], intensity=2)
    node.spawn(supervisor)
    assert await asyncio.wait_for(supervisor.wait(), WAIT) is SHUTDOWN
    assert not supervisor.started.is_set()


async def test_children_added_and_removed_while_running(node: Node) -> None:
    log: list[str] = []
    supervisor = await start(node, Supervisor(specs(log, "a")))
    b = await supervisor.start_child(specs(log, "b")[0])
    assert node.whereis("b") == b.pid and b.alive
    with pytest.raises(ValueError, match="has a child 'b' already"):
        await supervisor.start_child(specs(log, "b")[0])
    node.send(b.pid, "crash")  # an added child is restarted like the others
    assert (await restarted(supervisor, "b", b)).alive
    await supervisor.terminate_child("b")
    assert [child for child, _ in await supervisor.which_children()] == ["a"]
    assert node.whereis("b") is None and log == ["b", "b"]
    with pytest.raises(KeyError):
        await supervisor.terminate_child("b")
