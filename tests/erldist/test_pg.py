"""``pg`` scopes on Python nodes, with real OTP 25 / 28 scopes and with each other."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pybroadway.erldist import Node, pg
from pybroadway.term import Atom, Pid
from testkit.peers import BeamPeer, SystemEpmd, free_port, unique_name
from testkit.wait import eventually_async
from tests.erldist.nodekit import Mailbox, atom, ev

pytestmark = pytest.mark.timeout(90)

GROUP = Atom("py_group")
TUPLE_GROUP = (Atom("pipeline"), b"p1")  # {pipeline, <<"p1">>} on the BEAM



async def beam_members(beam: BeamPeer, group: str, scope: str = "pg") -> list[Any]:
    value: list[Any] = await ev(beam, f"pg:get_members({scope}, {group})")
    return value


async def until_beam(beam: BeamPeer, group: str, expected: list[Any],
                     scope: str = "pg") -> None:
    """Wait until the BEAM's scope holds ``expected`` in ``group`` (another node's table: no
    event to wait on)."""
    async def holds() -> bool:
        return Counter(await beam_members(beam, group, scope)) == Counter(expected)
    await eventually_async(holds, what=f"{group} on the BEAM is {expected}")


async def until_py(scope: pg.Scope, group: Any, expected: list[Any]) -> None:
    await eventually_async(lambda: Counter(scope.get_members(group)) == Counter(expected),
                           what=lambda: f"{group} here is {scope.get_members(group)}, "
                                        f"not {expected}")


async def test_members_both_ways_with_the_beam(beam: BeamPeer, py: Node) -> None:
    await ev(beam, "{ok, PgPid} = pg:start(pg), PgPid")
    scope = await pg.start(py)
    early = py.spawn(Mailbox())
    scope.join(GROUP, early)  # before any connection: announced by the first sync
    events: list[pg.PgEvent] = []
    watch = scope.monitor(Atom("beam_group"), events.append)
    assert watch.members == []

    assert await ev(beam, f"net_kernel:connect_node({atom(py)})") is True
    await until_beam(beam, "py_group", [early.pid])

    # The BEAM joins: Python sees it, and its monitor reports it.
    member = await ev(beam, "P = spawn(fun() -> receive stop -> ok end end), "
                            "ok = pg:join(beam_group, P), ok = pg:join({pipeline, <<\"p1\">>}, P),"
                            " P")
    await until_py(scope, Atom("beam_group"), [member])
    await until_py(scope, TUPLE_GROUP, [member])
    assert events == [pg.PgEvent("join", Atom("beam_group"), [member])]
    assert set(map(repr, scope.which_groups())) == {repr(GROUP), repr(Atom("beam_group")),
                                                    repr(TUPLE_GROUP)}
    assert scope.get_local_members(Atom("beam_group")) == []

    # Python joins and leaves after the connect, with one pid and with a list.
    late = [py.spawn(Mailbox()), py.spawn(Mailbox())]
    scope.join(TUPLE_GROUP, [p.pid for p in late])
    await until_beam(beam, '{pipeline, <<"p1">>}', [member, *(p.pid for p in late)])
    assert scope.leave(TUPLE_GROUP, late[0]) is True
    assert scope.leave(TUPLE_GROUP, late[0]) is False  # not_joined
    await until_beam(beam, '{pipeline, <<"p1">>}', [member, late[1].pid])

    # The BEAM leaves.
    assert await ev(beam, 'pg:leave({pipeline, <<"p1">>}, P)') is Atom("ok")
    await until_py(scope, TUPLE_GROUP, [late[1].pid])

    # Members that exit are removed everywhere.
    late[1].exit(Atom("shutdown"))
    await until_beam(beam, '{pipeline, <<"p1">>}', [])
    await ev(beam, "P ! stop")
    await until_py(scope, Atom("beam_group"), [])
    assert events[-1] == pg.PgEvent("leave", Atom("beam_group"), [member])
    assert scope.which_groups() == [GROUP]

    # The BEAM drops the connection: each side forgets the other's members.
    await ev(beam, "Q = spawn(fun() -> receive stop -> ok end end), ok = pg:join(beam_group, Q)")
    await until_py(scope, Atom("beam_group"), [await ev(beam, "Q")])
    assert await ev(beam, f"erlang:disconnect_node({atom(py)})") is True
    await until_py(scope, Atom("beam_group"), [])
    await until_beam(beam, "py_group", [])

    # Connected again (by Python this time): both resync; then Python drops it.
    assert await py.connect(beam.node)
    await until_py(scope, Atom("beam_group"), [await ev(beam, "Q")])
    await until_beam(beam, "py_group", [early.pid])
    assert py.disconnect(beam.node)
    await until_beam(beam, "py_group", [])
    await until_py(scope, Atom("beam_group"), [])

    # All of it left the BEAM's scope running: the same process, never restarted.
    assert await ev(beam, "whereis(pg) =:= PgPid") is True
    watch.cancel()


async def test_a_hidden_python_node_announces_its_scope(beam: BeamPeer,
                                                        epmd: SystemEpmd) -> None:
    await ev(beam, "{ok, PgPid} = pg:start(pg), P = spawn(fun() -> receive stop -> ok end end),"
                   " ok = pg:join(beam_group, P)")
    async with Node(unique_name("hid") + "@localhost", cookie="pybroadway", hidden=True,
                    epmd_port=epmd.port) as hidden:
        scope = await pg.start(hidden)
        member = hidden.spawn(Mailbox())
        scope.join(GROUP, member)
        assert await hidden.connect(beam.node)
        assert await ev(beam, "nodes()") == []  # hidden indeed
        await until_beam(beam, "py_group", [member.pid])
        await until_py(scope, Atom("beam_group"), [await ev(beam, "P")])
    await until_beam(beam, "py_group", [])
    assert await ev(beam, "whereis(pg) =:= PgPid") is True


async def test_a_custom_scope_name(beam: BeamPeer, py: Node) -> None:
    await ev(beam, "{ok, S} = pg:start(pybroadway), {ok, D} = pg:start(pg)")
    workers = await pg.start(py, "pybroadway")
    default = await pg.start(py)
    member = py.spawn(Mailbox())
    workers.join(Atom("my_pipeline"), member)
    assert await py.connect(beam.node)
    await until_beam(beam, "my_pipeline", [member.pid], scope="pybroadway")
    assert await beam_members(beam, "my_pipeline") == []  # not in the scope pg
    await ev(beam, "ok = pg:join(pybroadway, my_pipeline, self())")
    await until_py(workers, Atom("my_pipeline"), [member.pid, await ev(beam, "self()")])
    assert default.get_members(Atom("my_pipeline")) == []
    assert await ev(beam, "{whereis(pybroadway), whereis(pg)} =:= {S, D}") is True


# -- Python with Python: no Erlang at all -------------------------------------------------------

@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    epmd_port = free_port()
    async with Node(f"{unique_name('pga')}@localhost", cookie="c", epmd_port=epmd_port) as a, \
            Node(f"{unique_name('pgb')}@localhost", cookie="c", epmd_port=epmd_port) as b:
        yield a, b


async def test_python_with_python(pair: tuple[Node, Node]) -> None:
    a, b = pair
    scope_a, scope_b = await pg.start(a), await pg.start(b)
    seen: list[pg.PgEvent] = []
    scope_b.monitor_scope(seen.append)
    one, two = a.spawn(Mailbox()), a.spawn(Mailbox())
    scope_a.join("workers", [one, two])
    scope_a.join("workers", one)  # twice: a member counts each join
    assert await a.connect(b.name)
    await until_py(scope_b, b"workers", [one.pid, one.pid, two.pid])
    assert seen[0].kind == "join"
    assert scope_b.get_local_members("workers") == []
    assert scope_a.get_local_members("workers") == [one.pid, two.pid, one.pid]

    mine = b.spawn(Mailbox())
    scope_b.join("workers", mine)
    await until_py(scope_a, "workers", [one.pid, one.pid, two.pid, mine.pid])
    assert scope_a.leave("workers", one)
    await until_py(scope_b, "workers", [one.pid, two.pid, mine.pid])
    one.exit(Atom("shutdown"))  # its other membership ends with it
    await until_py(scope_b, "workers", [two.pid, mine.pid])
    assert seen[-1] == pg.PgEvent("leave", b"workers", [one.pid])

    a.disconnect(b.name)
    await until_py(scope_b, "workers", [mine.pid])
    await until_py(scope_a, "workers", [two.pid])
    assert await b.connect(a.name)
    await until_py(scope_b, "workers", [two.pid, mine.pid])
    await until_py(scope_a, "workers", [two.pid, mine.pid])


async def test_a_crashed_scope_comes_back_with_its_members_and_peers(
        pair: tuple[Node, Node]) -> None:
    a, b = pair
    scope_a, scope_b = await pg.start(a), await pg.start(b)
    member, theirs = a.spawn(Mailbox()), b.spawn(Mailbox())
    scope_a.join(Atom("g"), member)
    scope_b.join(Atom("g"), theirs)
    assert await a.connect(b.name)
    await until_py(scope_a, Atom("g"), [member.pid, theirs.pid])
    await until_py(scope_b, Atom("g"), [member.pid, theirs.pid])
    old = scope_a.server
    assert old is not None
    old.exit(Atom("kill"))
    await old.wait()

    async def restarted() -> bool:
        server = scope_a.server
        return server is not None and server.pid != old.pid
    await eventually_async(restarted)
    # Its own member is still in, the peer's members come back with the rediscovery, and the
    # peer got the old scope's DOWN and the new one's sync.
    await until_py(scope_a, Atom("g"), [member.pid, theirs.pid])
    await until_py(scope_b, Atom("g"), [member.pid, theirs.pid])
    server = scope_a.server
    assert server is not None and [p.node for p in server.peers] == [b.name]


async def test_remote_members_are_capped_per_node(pair: tuple[Node, Node],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    a, b = pair
    scope_a = await pg.start(a)
    scope_b = await pg.start(b, max_remote_members=3)
    members = [a.spawn(Mailbox()) for _ in range(5)]
    scope_a.join(Atom("many"), members[:4])
    with caplog.at_level(logging.ERROR, logger="pybroadway.erldist.pg"):
        assert await a.connect(b.name)
        await until_py(scope_b, Atom("many"), [m.pid for m in members[:3]])
        scope_a.join(Atom("more"), members[4])
        scope_a.leave(Atom("many"), members[0])
        await until_py(scope_b, Atom("many"), [m.pid for m in members[1:3]])
    assert "would hold more than 3 members here (max_remote_members)" in caplog.text
    server = scope_b.server
    assert server is not None and server.held(a.name) == 2
    a.disconnect(b.name)
    await eventually_async(lambda: server.held(a.name) == 0 and scope_b.which_groups() == [])


async def test_messages_a_scope_cannot_use_are_dropped(pair: tuple[Node, Node]) -> None:
    a, b = pair
    scope_b = await pg.start(b)
    server = scope_b.server
    assert server is not None
    assert await a.connect(b.name)
    target = (Atom("pg"), b.name)
    stranger = Pid(a.name, 999, 0, a.creation)
    for message in ["hello", (Atom("join"), 1, 2, 3), (Atom("discover"), 42),
                    (Atom("$gen_cast"), (Atom("sync"), stranger, [(1, 2)])),
                    (Atom("$gen_cast"), (Atom("sync"), stranger, "nope")),
                    (Atom("leave"), stranger, stranger, [Atom("g")]),
                    (Atom("join"), stranger, Atom("g"), stranger),  # not a peer: ignored
                    (Atom("$gen_call"), (stranger, a.make_ref()), Atom("x"))]:
        a.send(target, message)
    # A well-formed sync from a process of a: followed as a scope, its members held, until
    # it exits.
    fake = a.spawn(Mailbox())
    a.send(target, (Atom("$gen_cast"), (Atom("sync"), fake.pid, [(Atom("g"), [stranger])])))
    await until_py(scope_b, Atom("g"), [stranger])
    fake.exit(Atom("shutdown"))
    await until_py(scope_b, Atom("g"), [])
    assert scope_b.server is server and server.alive
