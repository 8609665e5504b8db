"""Erlang term text read as file:consult reads it: the option files of OTP's guide to TLS
distribution, the syntax they use, and errors that name their line."""

from __future__ import annotations

import pytest

from pybroadway.term import Atom, ConsultError, ExportFun, ImproperList, consult

# The option files of OTP's guide "Erlang Distribution over TLS" (lib/ssl/doc/guides/
# ssl_distribution.md), as the guide gives them.
GUIDE_OPTFILE = """\
[{server,
  [{certfile, "/home/me/ssl/erlserver.pem"}]},
 {client,
  [{cacertfile, "/home/me/ssl/client_trusted.pem"}]}].
"""

GUIDE_VERIFY_FUN = """\
[{server,[{fail_if_no_peer_cert,true},
          {certfile,"/home/me/ssl/cert.pem"},
          {keyfile,"/home/me/ssl/privkey.pem"},
          {cacertfile,"/home/me/ssl/ca_cert.pem"},
          {verify,verify_peer},
          {verify_fun,{fun mydist:verify/3,"any initial value"}}]},
 {client,[{certfile,"/home/me/ssl/cert.pem"},
          {keyfile,"/home/me/ssl/privkey.pem"},
          {cacertfile,"/home/me/ssl/ca_cert.pem"},
          {verify,verify_peer},
          {verify_fun,{fun mydist:verify/3,"any initial value"}}]}].

"""

GUIDE_REL = """\
      {release, {"OTP  APN 181 01","R15A"}, {erts, "5.9"},
      [{kernel,"2.15"},
      {stdlib,"1.18"},
      {crypto, "2.0.3"},
      {public_key, "0.12"},
      {asn1, "4.0"},
      {ssl, "5.0"}
      ]}.
"""

server, client = Atom("server"), Atom("client")


def test_the_guides_option_file() -> None:
    assert consult(GUIDE_OPTFILE) == [[
        (server, [(Atom("certfile"), "/home/me/ssl/erlserver.pem")]),
        (client, [(Atom("cacertfile"), "/home/me/ssl/client_trusted.pem")])]]


def test_the_guides_verify_fun_file() -> None:
    [[(_, server_options), (_, client_options)]] = consult(GUIDE_VERIFY_FUN)
    assert server_options[0] == (Atom("fail_if_no_peer_cert"), True)
    assert server_options[4] == (Atom("verify"), Atom("verify_peer"))
    assert server_options[5] == (Atom("verify_fun"), (ExportFun(Atom("mydist"), Atom("verify"),
                                                                3), "any initial value"))
    assert len(client_options) == 5


def test_the_guides_release_file() -> None:
    [(release, name, erts, applications)] = consult(GUIDE_REL)
    assert (release, name, erts) == (Atom("release"), ("OTP  APN 181 01", "R15A"),
                                     (Atom("erts"), "5.9"))
    assert applications[-1] == (Atom("ssl"), "5.0")


@pytest.mark.parametrize(("text", "term"), [
    ("'quoted atom'.", Atom("quoted atom")),
    (r"'it''s'.", None),  # two atoms side by side: an error, tested below
    (r"'a\'b\\c'.", Atom("a'b\\c")),
    ('"tab\\tnl\\n\\x41\\x{263A}\\101\\s\\^A\\e".', "tab\tnl\nA\u263aA \x01\x1b"),
    ('"multi" % a comment "not a string"\n "part".', "multipart"),
    ("$a.", 97), ("$\\n.", 10), ("$ .", 32),
    ("-12.", -12), ("16#fF.", 255), ("2#101.", 5), ("1_000_000.", 1_000_000),
    ("3.25.", 3.25), ("-1.5e3.", -1500.0), ("2.0E-2.", 0.02),
    ("[].", []), ("{}.", ()), ("[a | [b, c]].", [Atom("a"), Atom("b"), Atom("c")]),
    ("[a, b | c].", ImproperList([Atom("a"), Atom("b")], Atom("c"))),
    ("[a | [b | [c]]].", [Atom("a"), Atom("b"), Atom("c")]), ("[a | []].", [Atom("a")]),
    ("[a | [b, c | {d}]].", ImproperList([Atom("a"), Atom("b"), Atom("c")], (Atom("d"),))),
    ('[$a | "bc"].', [97, 98, 99]), ("[[] | []].", [[]]),
    ('<<"bytes", 0, 255>>.', b"bytes\x00\xff"), ('<<"\\x{e9}"/utf8>>.', b"\xc3\xa9"),
    ('<<"\\x{e9}">>.', b"\xe9"), ("<<>>.", b""),
    ("true.", True), ("false.", False), ("nil.", Atom("nil")), ("ok@host.", Atom("ok@host")),
    ("fun m:f/3.", ExportFun(Atom("m"), Atom("f"), 3)),
])
def test_syntax(text: str, term: object) -> None:
    if term is None:
        with pytest.raises(ConsultError):
            consult(text)
    else:
        assert consult(text) == [term]


def test_several_terms_each_end_with_a_dot() -> None:
    assert consult("a.\nb. % c.\n{1, 2}.") == [Atom("a"), Atom("b"), (1, 2)]
    assert consult("  % only a comment\n") == []


def test_nesting_costs_no_recursion() -> None:
    depth = 50_000
    [term] = consult("[" * depth + "{x}" + "]" * depth + ".")
    for _ in range(depth):
        term = term[0]
    assert term == (Atom("x"),)


def test_a_chain_of_tails_is_one_list_not_a_copy_per_level() -> None:
    depth = 100_000  # copied tail by tail, this would be 5e9 copies
    [term] = consult("[1 | " * depth + "[]" + "]" * depth + ".")
    assert term == [1] * depth


@pytest.mark.parametrize(("text", "line", "says"), [
    ("[{server,\n  [{certfile, \"a.pem\"}\n  {keyfile, \"b\"}]}].", 3,
     "expected ',' or ']' (for the '[' of line 2), got '{'"),
    ("[a,\n", 2, "the text ends where a term was expected"),
    ("[a]", 1, "the text ends where a dot after the term was expected"),
    ("\n\n\"never closed\n\n", 3, "the string opened here is not closed"),
    ("\n[Path].", 2, "a variable (Path) is not a term"),
    ("{a, b]", 1, "expected ',' or '}'"),
    ("[a | b, c].", 1, "expected ']' (for the '[' of line 1), got ','"),
    ("[a | [b], c].", 1, "expected ']' (for the '[' of line 1), got ','"),
    ("[a | [b].", 1, "expected ']' (for the '[' of line 1), got the dot ending a term"),
    ("\n\n{case, 1}.", 3, "'case' is a reserved word"),
    ("#{a => 1}.", 1, "maps and records are not supported"),
    ("[fun (X) -> X end].", 1, "expected fun Module:Function/Arity"),
    ("<<256>>.", 1, "a byte (0..255)"),
    ('<<"\\x{263A}">>.', 1, "needs /utf8"),
    ("37#1.", 1, "bad number"),
    ("a.b.", 1, "unexpected character '.'"),
    ("1 2.", 1, "expected a dot after the term, got 2"),
    ("\n\n\n'it''s'.", 4, "expected a dot after the term, got 's'"),
    ("- a.", 1, "expected a number after '-'"),
    ("\n\n  ].", 3, "expected a term, got ']'"),
    ("'" + "a" * 256 + "'.", 1, "at most 255 characters"),
    ("\n£.", 2, "unexpected character '£'"),
])
def test_errors_name_the_line(text: str, line: int, says: str) -> None:
    with pytest.raises(ConsultError) as info:
        consult(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")
    assert says in str(info.value)
    assert "\n" not in str(info.value)
