"""inspect() prints terms as Elixir's own inspect/1 does: checked against a real Elixir."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pybroadway.term import (
    Atom,
    BitBinary,
    Charlist,
    ExportFun,
    ImproperList,
    Pid,
    Reference,
    decode,
    encode,
    inspect,
    struct,
    struct_name,
)
from testkit.peers import BeamPeer, SystemEpmd

A = Atom
NOOP_ACK = (A("Elixir.Broadway.NoopAcknowledger"), None, None)
MESSAGE = struct("Broadway.Message", data=b"How are you?", metadata={}, acknowledger=NOOP_ACK,
                 batcher=A("default"), batch_key=A("default"), batch_mode=A("bulk"),
                 status=A("ok"))



def nested(wrap: Callable[[Any], Any], depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = wrap(leaf)
    return leaf


CASES = [
    MESSAGE,
    (A("push_message"), b"How are you?"),
    b"I'm alive!",
    b"\x01\x02\xff",
    b"",
    "quote \" backslash \\ newline \n tab \t #{interp}",
    "日本語",
    [1, 2, 3],
    [],
    (),
    Charlist(b"abc"),
    Charlist(b"\x01\x02"),
    [(A("a"), 1), (A("b"), b"x")],
    {A("a"): 1, A("b"): [2]},
    {b"k": 1, A("a"): 2, 3: 4, (1, 2): 5},
    {},
    ImproperList([A("alias")], A("x")),
    ImproperList([1, 2], 3),
    BitBinary(b"\x01\xe0", 3),
    ExportFun(A("global"), A("random_exit_name"), 3),
    ExportFun(A("Elixir.String"), A("upcase"), 1),
    [A("ok"), A("hello world"), A("Elixir.Foo.Bar"), A("ok?"), A("+"), A("nil_ish"),
     A("with@at"), A("été")],
    [None, True, False, A("nil")],
    [0, -1, 1 << 70, 1.5, -0.0, 1.0e20, 1.0e-7, 123456789.125, 0.1],
    struct("PyTest.Point", x=1, y=2),
    list(range(60)),
    # deeper than ``limit`` (50): as Elixir, the nesting shown stops there
    nested(lambda inner: (inner,), 100, A("x")),
    nested(lambda inner: [inner], 100, 1),
    nested(lambda inner: {A("k"): inner}, 100, b"end"),
]


@pytest.fixture(scope="module")
def elixir(epmd: SystemEpmd) -> Iterator[BeamPeer]:
    with BeamPeer.elixir(epmd_port=epmd.port) as peer:
        peer.wait_started()
        peer.eval("""
            defmodule Broadway.NoopAcknowledger do end
            defmodule Broadway.Message do
              defstruct [:data, :metadata, :acknowledger, batcher: :default,
                         batch_key: :default, batch_mode: :bulk, status: :ok]
            end
            defmodule PyTest.Point do defstruct [:x, :y] end
            """)
        yield peer


@pytest.mark.parametrize("term", CASES, ids=range(len(CASES)))
def test_inspect_matches_elixir(elixir: BeamPeer, term: object) -> None:
    literal = "<<" + ",".join(map(str, encode(term))) + ">>"
    expected = elixir.raw(f"inspect(:erlang.binary_to_term({literal}))").decode()
    assert inspect(term) == expected


def test_identifiers_match_elixir(elixir: BeamPeer) -> None:
    node = decode(elixir.eval("node()"))
    for expr in ("self()", "[:alias | make_ref()]", "{self(), [:alias | :erlang.alias()]}"):
        term = decode(elixir.eval(f"binding()[:v] || (v = {expr}; v)"))
        literal = "<<" + ",".join(map(str, encode(term))) + ">>"
        expected = elixir.raw(f"inspect(:erlang.binary_to_term({literal}))").decode()
        assert inspect(term, local_node=node) == expected


def test_remote_pids_get_a_node_number() -> None:
    pid = Pid(A("elsewhere@host"), 227, 0, 1)
    ref = Reference(A("elsewhere@host"), 1, (187758, 3701014534, 3437655963))
    text = inspect((pid, ImproperList([A("alias")], ref)), local_node="me@host")
    number = text.split("<")[1].split(".")[0]
    assert number != "0"
    assert text == (f"{{#PID<{number}.227.0>, [:alias | "
                    f"#Reference<{number}.3437655963.3701014534.187758>]}}")


def test_struct_helpers() -> None:
    assert struct_name(MESSAGE) == "Broadway.Message"
    assert struct_name({A("a"): 1}) is None
    assert next(iter(MESSAGE)) is A("__struct__")
