"""The codec against a real BEAM: bytes written by term_to_binary decode and re-encode to the
same bytes, and bytes written by pybroadway are read back by binary_to_term on the BEAM.

One long-lived distributed erl per OTP release serves every case (see testkit/peers.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from pybroadway.term import (
    Atom,
    BitBinary,
    Charlist,
    ExportFun,
    Fun,
    ImproperList,
    MapPairs,
    Pid,
    Port,
    Reference,
    decode,
    encode,
)
from testkit.peers import OTP_RELEASES, BeamPeer, SystemEpmd

# Erlang expressions whose values the BEAM encodes; each must survive decode → encode
# byte for byte. Pids, refs and ports come from a live distributed node.
CORPUS = {
    "atom": "ok",
    "quoted atom": "'hello world'",
    "latin-1 atom": "'héllo'",
    "unicode atom": "'日本語'",
    "255-char atom": "list_to_atom(lists:duplicate(255, $a))",
    "long unicode atom": "list_to_atom(lists:duplicate(200, 16#65E5))",
    "true": "true",
    "nil": "nil",
    "empty list": "[]",
    "empty tuple": "{}",
    "empty binary": "<<>>",
    "binary": '<<"How are you?">>',
    "utf8 binary": "<<\"héllo 日本\"/utf8>>",
    "1 KiB binary": "binary:copy(<<7>>, 1024)",
    "bit string": "<<1, 2, 3:4>>",
    "7-bit string": "<<255:7>>",
    "small ints": "[0, 1, 255]",
    "int 256": "256",
    "negative": "-1",
    "int32 max": "2147483647",
    "int32 min": "-2147483648",
    "past int32": "2147483648",
    "below int32": "-2147483649",
    "big": "1 bsl 64",
    "negative big": "-(1 bsl 200)",
    "large big": "1 bsl 2100",
    "negative large big": "-(1 bsl 4000) + 17",
    "float": "1.5",
    "negative zero": "-0.0",
    "big float": "3.14159e300",
    "tiny float": "1.0e-300",
    "charlist": '"abc"',
    "mixed list": "[1, 2, 300]",
    "list of 300": "lists:seq(1, 300)",
    "long charlist": "lists:duplicate(70000, $a)",
    "improper list": "[a | b]",
    "improper list 2": "[1, 2 | 3]",
    "alias tag": "[alias | make_ref()]",
    "tuple": '{a, 1, "x", <<"y">>}',
    "large tuple": "list_to_tuple(lists:seq(1, 300))",
    "empty map": "#{}",
    "map": "#{a => 1, b => [2], c => #{d => <<>>}}",
    "map with tuple, list and map keys": "#{{1, 2} => x, [1] => y, #{k => v} => z, [] => e}",
    "map of 40 (hash map)": "maps:from_list([{I, I * I} || I <- lists:seq(1, 40)])",
    "keys Python would merge": "#{1 => a, 1.0 => b}",
    "true and 1 keys": "#{true => a, 1 => b}",
    "pid": "self()",
    "ref": "make_ref()",
    "alias": "alias()",
    "port": "hd(erlang:ports())",
    "node": "node()",
    "export fun": "fun global:random_exit_name/3",
    "export fun 2": "fun lists:map/2",
    "closure": "(fun() -> X = 5, fun(Y) -> X + Y end end)()",
    "closure with pid": "(fun() -> P = self(), fun() -> P end end)()",
    "gen_call": "{'$gen_call', {self(), [alias | make_ref()]}, register}",
    "gen_cast": '{\'$gen_cast\', {push_message, <<"How are you?">>}}',
    "control tuple": "{22, self(), self()}",
    "global init_connect": (
        "{'$gen_cast', {init_connect, {8, -576460752303423488}, node(), "
        "{locker, no_longer_a_pid, #{{connection_id, node()} => 7779061, b28@vm => 8}, "
        "self()}}}"),
    "nested": "[{a, [{b, [{c, #{d => [1, 2.0, <<\"e\">>]}}]}]}]",
}


@pytest.fixture(scope="module", params=OTP_RELEASES, ids=lambda otp: f"otp{otp}")
def beam(request: pytest.FixtureRequest, epmd: SystemEpmd) -> Iterator[BeamPeer]:
    with BeamPeer.erlang(request.param, epmd_port=epmd.port) as peer:
        peer.wait_started()
        yield peer


_variables = itertools.count()


def binary_literal(data: bytes) -> str:
    return "<<" + ",".join(map(str, data)) + ">>"


def bind(beam: BeamPeer, expr: str) -> tuple[str, bytes]:
    """Evaluate ``expr`` once on the BEAM, keep it in a fresh variable, return its bytes."""
    var = f"V{next(_variables)}"
    return var, beam.raw(f"{var} = ({expr}), term_to_binary({var}, [{{minor_version, 2}}])")


def beam_equals(beam: BeamPeer, ours: bytes, expr: str) -> bool:
    """Does binary_to_term(ours) =:= expr hold on the BEAM?"""
    verdict = beam.raw(f"case binary_to_term({binary_literal(ours)}) =:= ({expr}) of "
                       "true -> <<\"same\">>; false -> <<\"different\">> end")
    return verdict == b"same"


@pytest.mark.parametrize("expr", CORPUS.values(), ids=list(CORPUS))
def test_beam_bytes_decode_and_reencode_identically(beam: BeamPeer, expr: str) -> None:
    _, original = bind(beam, expr)
    assert encode(decode(original)) == original


@pytest.mark.parametrize("expr", CORPUS.values(), ids=list(CORPUS))
def test_python_bytes_are_read_by_the_beam(beam: BeamPeer, expr: str) -> None:
    var, original = bind(beam, expr)
    assert beam_equals(beam, encode(decode(original)), var)


def test_values_built_in_python_are_the_beams_values(beam: BeamPeer) -> None:
    """Terms Python builds (not decoded from the BEAM) equal the BEAM's own literal."""
    node = Atom(decode(beam.eval("node()")).name)
    pid = decode(beam.eval("self()"))
    cases = {
        "{ok, <<\"hi\">>, <<\"é\"/utf8>>, 1.5, -7, 1 bsl 70, [1, 2], #{a => nil}}": (
            Atom("ok"), b"hi", "é", 1.5, -7, 1 << 70, [1, 2], {Atom("a"): None}),
        "{true, false, nil}": (True, False, None),
        "[a | b]": ImproperList([Atom("a")], Atom("b")),
        "<<1, 2:3>>": BitBinary(b"\x01\x40", 3),
        "\"abc\"": Charlist(b"abc"),
        "fun erlang:node/0": ExportFun(Atom("erlang"), Atom("node"), 0),
        "#{1 => a, 1.0 => b}": MapPairs([(1, Atom("a")), (1.0, Atom("b"))]),
        "self()": Pid(node, pid.id, pid.serial, pid.creation),
    }
    for expr, value in cases.items():
        assert beam_equals(beam, encode(value), expr), expr


def test_decoded_identifiers(beam: BeamPeer) -> None:
    node = decode(beam.eval("node()"))
    pid = decode(beam.raw("term_to_binary(self())"))
    assert isinstance(pid, Pid) and pid.node is node and pid.creation > 0
    ref = decode(beam.raw("term_to_binary(make_ref())"))
    assert isinstance(ref, Reference) and ref.node is node and len(ref.ids) in (3, 4, 5)
    port = decode(beam.raw("term_to_binary(hd(erlang:ports()))"))
    assert isinstance(port, Port) and port.node is node
    fun = decode(beam.raw("term_to_binary(fun(X) -> X end)"))
    assert isinstance(fun, Fun) and fun.arity == 1 and fun.module is Atom("erl_eval")


@pytest.mark.parametrize("expr", ["lists:seq(1, 2000)", "binary:copy(<<\"abc\">>, 5000)",
                                  "[{I, <<\"x\">>} || I <- lists:seq(1, 500)]"])
def test_compressed_terms(beam: BeamPeer, expr: str) -> None:
    compressed = beam.raw(f"term_to_binary(({expr}), [compressed, {{minor_version, 2}}])")
    plain = beam.raw(f"term_to_binary(({expr}), [{{minor_version, 2}}])")
    assert compressed[1] == 80
    assert decode(compressed) == decode(plain)
    ours = encode(decode(plain), compressed=True)
    assert ours[1] == 80
    assert beam_equals(beam, ours, expr)


def test_latin1_atom_forms(beam: BeamPeer) -> None:
    """The older minor version writes ATOM_EXT / SMALL_ATOM_EXT; both decode."""
    data = beam.raw("term_to_binary({abc, 'héllo', '日本'}, [{minor_version, 1}])")
    assert decode(data) == (Atom("abc"), Atom("héllo"), Atom("日本"))


OLD_FORMS = {
    # tag, then the node atom 'n@h' as ATOM_EXT, then the fields
    "PID_EXT": b"\x83g" + b"d\x00\x03n@h" + b"\x00\x00\x00\x2a\x00\x00\x00\x01\x02",
    "PORT_EXT": b"\x83f" + b"d\x00\x03n@h" + b"\x00\x00\x00\x07\x01",
    "NEW_PORT_EXT": b"\x83Y" + b"d\x00\x03n@h" + b"\x00\x00\x00\x07\x00\x00\x00\x05",
    "REFERENCE_EXT": b"\x83e" + b"d\x00\x03n@h" + b"\x00\x00\x00\x09\x01",
    "NEW_REFERENCE_EXT": b"\x83r\x00\x03" + b"d\x00\x03n@h" + b"\x02" + bytes(range(12)),
    "FLOAT_EXT": b"\x83c" + b"1.50000000000000000000e+00".ljust(31, b"\0"),
}


@pytest.mark.parametrize("name", list(OLD_FORMS))
def test_older_forms_decode_and_keep_their_bytes(beam: BeamPeer, name: str) -> None:
    """Older tags decode; identifiers re-encode as they came, and the BEAM agrees on them."""
    data = OLD_FORMS[name]
    term = decode(data)
    if name == "FLOAT_EXT":
        assert term == 1.5
        assert beam_equals(beam, encode(term), binary_literal(data).join(["binary_to_term(", ")"]))
        return
    assert isinstance(term, Pid | Port | Reference) and term.node is Atom("n@h")
    assert encode(term) == data
    assert beam_equals(beam, encode(term), binary_literal(data).join(["binary_to_term(", ")"]))
