"""Erlang term text, as ``file:consult/1`` reads it: the terms of a configuration file such as
the BEAM's ``-ssl_dist_optfile``. Text in, terms out (no I/O: the caller reads the file).

>>> consult('[{server, [{certfile, "/etc/node.pem"}]}]. % the options\\n')
[[(Atom('server'), [(Atom('certfile'), '/etc/node.pem')])]]

Each term ends with a dot. What reads: atoms (``ok``, ``'quoted atom'``; ``true`` and
``false`` read as Python's booleans, as the codec decodes them), strings (``"..."``, with
Erlang's escapes; adjacent strings join) as ``str``, characters (``$a``) and integers
(``-12``, ``16#ff``, ``1_000``) as ``int``, floats, lists (``[a | b]`` as an
:class:`ImproperList`), tuples, binaries (``<<"text">>``, ``<<"text"/utf8>>``, ``<<1,2>>``) as
``bytes``, external funs (``fun mod:name/2``) as :class:`ExportFun`, and ``%`` comments.
Variables, maps, operators and other expressions do not: a term is data. Errors are
:class:`ConsultError` and name the line. Nesting costs no recursion (the parser keeps its own
stack), so deep text cannot exhaust Python's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pybroadway.term.errors import ConsultError
from pybroadway.term.types import Atom, ExportFun, ImproperList

__all__ = ["consult"]

#: Erlang's reserved words: not atoms unless quoted (``maybe`` and ``else`` only where the
#: maybe_expr feature is on, so atoms here, as in OTP 25 and 26).
_RESERVED = frozenset(
    "after and andalso band begin bnot bor bsl bsr bxor case catch cond div end fun if let "
    "not of or orelse receive rem try when xor".split())

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n\f\v]+)
  | (?P<comment>%[^\n]*)
  | (?P<float>\d+(?:_\d+)*\.\d+(?:_\d+)*(?:[eE][+-]?\d+(?:_\d+)*)?)
  | (?P<based>\d+\#[0-9a-zA-Z]+(?:_[0-9a-zA-Z]+)*)
  | (?P<int>\d+(?:_\d+)*)
  | (?P<atom>[a-z\xdf-\xf6\xf8-\xff][A-Za-z0-9_@\xc0-\xd6\xd8-\xf6\xf8-\xff]*)
  | (?P<var>[A-Z_\xc0-\xd6\xd8-\xde][A-Za-z0-9_@\xc0-\xd6\xd8-\xf6\xf8-\xff]*)
  | (?P<dot>\.(?=[\s%]|\Z))
  | (?P<punct><<|>>|[\[\]{}(),|/:#\-])
  | (?P<quote>['"$])
""", re.VERBOSE)

_ESCAPES = {"b": 8, "d": 127, "e": 27, "f": 12, "n": 10, "r": 13, "s": 32, "t": 9, "v": 11}
_HEX = re.compile(r"x(?:\{([0-9a-fA-F]+)\}|([0-9a-fA-F]{1,2}))")
_OCTAL = re.compile(r"[0-7]{1,3}")
_CLOSING = {"[": "]", "{": "}"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # value, atom, var, str, punct, dot, fun
    value: Any
    line: int


def consult(text: str) -> list[Any]:
    """The terms of ``text``, each ended by a dot; raises :class:`ConsultError` naming the
    line of the first problem."""
    tokens = _Tokens(_tokenize(text), text.count("\n") + 1)
    terms = []
    while tokens.peek() is not None:
        terms.append(_term(tokens))
        end = tokens.next("a dot after the term")
        if end.kind != "dot":
            raise ConsultError(f"expected a dot after the term, got {_shown(end)}", end.line)
    return terms


class _Tokens:
    """The tokens, one ahead; the end of the text is an error naming what was expected."""

    def __init__(self, tokens: Iterator[_Token], last_line: int) -> None:
        self._tokens = tokens
        self._ahead: _Token | None = next(tokens, None)
        self.last_line = last_line

    def peek(self) -> _Token | None:
        return self._ahead

    def next(self, expected: str) -> _Token:
        token = self._ahead
        if token is None:
            raise ConsultError(f"the text ends where {expected} was expected",
                               self.last_line)
        self._ahead = next(self._tokens, None)
        return token


def _term(tokens: _Tokens) -> Any:
    """One term: containers are frames on a stack of their own, not Python calls."""
    stack: list[_Frame] = []
    while True:
        token = tokens.next("a term")
        if token.kind == "punct" and token.value in _CLOSING:
            ahead = tokens.peek()
            if ahead is not None and ahead.kind == "punct" and ahead.value == _CLOSING[
                    token.value]:
                tokens.next("")
                value: Any = [] if token.value == "[" else ()
            else:
                stack.append(_Frame(token))
                continue
        else:
            value = _scalar(token, tokens)
        while stack:  # the value ends the containers it completes
            frame = stack[-1]
            close = _CLOSING[frame.opening.value]
            if frame.tail is _NO_TAIL:
                frame.elements.append(value)
            else:
                frame.tail = value
            after = tokens.next(f"',' or '{close}'")
            if _is(after, ",") and frame.tail is _NO_TAIL:
                break
            if _is(after, "|") and close == "]" and frame.tail is _NO_TAIL:
                if not _is(tokens.peek(), "["):
                    frame.tail = None  # the next value is the tail
                    break
                # [a | [b | ...]]: the same list goes on (no copy of the tail per level)
                tokens.next("")
                frame.closes += 1
                if not _is(tokens.peek(), "]"):
                    break
                after = tokens.next("")
            # after a tail, or the first of several closing brackets, only one can come
            only_close = frame.tail is not _NO_TAIL
            while frame.closes:
                if not _is(after, close):
                    expected = f"'{close}'" if only_close else f"',' or '{close}'"
                    raise ConsultError(f"expected {expected} (for the '{frame.opening.value}' "
                                       f"of line {frame.opening.line}), got {_shown(after)}",
                                       after.line)
                frame.closes -= 1
                only_close = True
                if frame.closes:
                    after = tokens.next(f"'{close}'")
            stack.pop()
            value = frame.value()
        else:
            return value


_NO_TAIL = object()


class _Frame:
    """A list or tuple being read: its opening token, its elements, and the tail after
    ``|`` (:data:`_NO_TAIL` until one)."""

    def __init__(self, opening: _Token) -> None:
        self.opening = opening
        self.elements: list[Any] = []
        self.tail: Any = _NO_TAIL
        self.closes = 1  # the brackets still to close: [a | [b | [c]]] is one frame

    def value(self) -> Any:
        if self.opening.value == "{":
            return tuple(self.elements)
        if self.tail is _NO_TAIL:
            return self.elements
        if isinstance(self.tail, str):  # [$a | "bc"] is "abc": character codes
            return [*self.elements, *map(ord, self.tail)]
        return ImproperList(self.elements, self.tail)


def _is(token: _Token | None, punct: str) -> bool:
    return token is not None and token.kind == "punct" and token.value == punct


def _scalar(token: _Token, tokens: _Tokens) -> Any:
    if token.kind in ("value", "str"):
        return token.value
    if token.kind == "atom":
        return {"true": True, "false": False}.get(token.value, Atom(token.value))
    if token.kind == "punct" and token.value == "-":
        number = tokens.next("a number after '-'")
        if number.kind != "value" or not isinstance(number.value, int | float):
            raise ConsultError(f"expected a number after '-', got {_shown(number)}",
                               number.line)
        return -number.value
    if token.kind == "punct" and token.value == "<<":
        return _binary(tokens)
    if token.kind == "fun":
        return _export_fun(tokens)
    if token.kind == "var":
        raise ConsultError(f"a variable ({token.value}) is not a term: quote it as an atom "
                           f"('{token.value}') or a string", token.line)
    if token.kind == "punct" and token.value == "#":
        raise ConsultError("maps and records are not supported here", token.line)
    raise ConsultError(f"expected a term, got {_shown(token)}", token.line)


def _binary(tokens: _Tokens) -> bytes:
    """``<<...>>`` after its ``<<``: strings (Latin-1, or ``/utf8``) and bytes."""
    data = bytearray()
    token = tokens.next("a binary's contents or '>>'")
    if token.kind == "punct" and token.value == ">>":
        return bytes(data)
    while True:
        if token.kind == "str":
            after = tokens.next("',' or '>>'")
            if after.kind == "punct" and after.value == "/":
                kind = tokens.next("a type after '/'")
                if kind.kind != "atom" or kind.value != "utf8":
                    raise ConsultError(f"only /utf8 is supported in a binary, got "
                                       f"{_shown(kind)}", kind.line)
                data += token.value.encode("utf-8")
                after = tokens.next("',' or '>>'")
            elif max(map(ord, token.value), default=0) > 0xFF:
                raise ConsultError("a character above 255 in a binary needs /utf8",
                                   token.line)
            else:
                data += token.value.encode("latin-1")
        elif token.kind == "value" and isinstance(token.value, int) \
                and 0 <= token.value <= 0xFF:
            data.append(token.value)
            after = tokens.next("',' or '>>'")
        else:
            raise ConsultError(f"expected a string or a byte (0..255) in a binary, got "
                               f"{_shown(token)}", token.line)
        if after.kind == "punct" and after.value == ">>":
            return bytes(data)
        if after.kind != "punct" or after.value != ",":
            raise ConsultError(f"expected ',' or '>>' in a binary, got {_shown(after)}",
                               after.line)
        token = tokens.next("a binary's next segment")


def _export_fun(tokens: _Tokens) -> ExportFun:
    """``fun Module:Function/Arity`` after its ``fun``."""
    parts = []
    for kind, value in (("atom", None), ("punct", ":"), ("atom", None), ("punct", "/"),
                        ("value", None)):
        token = tokens.next("fun Module:Function/Arity")
        if token.kind != kind or (value is not None and token.value != value) or (
                kind == "value" and not isinstance(token.value, int)):
            raise ConsultError(f"expected fun Module:Function/Arity, got {_shown(token)} (a "
                               f"fun with a body cannot be read, only an external one)",
                               token.line)
        parts.append(token.value)
    return ExportFun(Atom(parts[0]), Atom(parts[2]), parts[4])


def _shown(token: _Token) -> str:
    if token.kind == "dot":
        return "the dot ending a term"
    if token.kind == "str":
        return f"the string {token.value[:40]!r}"
    return f"'{token.value}'" if token.kind != "value" else repr(token.value)


def _tokenize(text: str) -> Iterator[_Token]:
    position, line, end = 0, 1, len(text)
    while position < end:
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConsultError(f"unexpected character {text[position]!r}", line)
        kind, lexeme = match.lastgroup, match.group()
        assert kind is not None
        position = match.end()
        if kind == "quote":
            token, position, lines = _quoted(text, position, lexeme, line)
            if token.kind == "str":  # "a" "b" is "ab"
                last = _Token("str", token.value, line)
                while True:
                    follow = _TOKEN.match(text, position)
                    while follow is not None and follow.lastgroup in ("space", "comment"):
                        lines += follow.group().count("\n")
                        position = follow.end()
                        follow = _TOKEN.match(text, position)
                    if follow is None or follow.group() != '"':
                        break
                    more, position, extra = _quoted(text, follow.end(), '"', line + lines)
                    lines += extra
                    last = _Token("str", last.value + more.value, line)
                token = last
            yield token
            line += lines
        elif kind in ("space", "comment"):
            line += lexeme.count("\n")
        elif kind == "atom" and lexeme in _RESERVED:
            if lexeme != "fun":
                raise ConsultError(f"'{lexeme}' is a reserved word: quote it to make it an "
                                   f"atom ('{lexeme}')", line)
            yield _Token("fun", lexeme, line)
        elif kind in ("atom", "var", "punct", "dot"):
            yield _Token(kind, lexeme, line)
        else:
            yield _Token("value", _number(kind, lexeme, line), line)


def _number(kind: str, lexeme: str, line: int) -> int | float:
    digits = lexeme.replace("_", "")
    if kind == "float":
        return float(digits)
    if kind == "int":
        return int(digits)
    base, _, value = digits.partition("#")
    try:
        if not 2 <= int(base) <= 36:
            raise ValueError
        return int(value, int(base))
    except ValueError:
        raise ConsultError(f"bad number {lexeme!r} (Base#Digits: a base from 2 to 36 and "
                           f"its digits)", line) from None


def _quoted(text: str, position: int, quote: str, line: int) -> tuple[_Token, int, int]:
    """The quoted atom, string or character starting at ``position`` (after ``quote``):
    its token, where it ends, and the newlines it holds."""
    if quote == "$":
        if position >= len(text):
            raise ConsultError("the text ends after '$'", line)
        code, position = _character(text, position, line)
        return _Token("value", code, line), position, int(code == 10)
    chars: list[str] = []
    lines = 0
    while True:
        if position >= len(text):
            what = "string" if quote == '"' else "quoted atom"
            raise ConsultError(f"the {what} opened here is not closed", line)
        char = text[position]
        if char == quote:
            break
        code, position = _character(text, position, line + lines)
        lines += code == 10
        chars.append(chr(code))
    value = "".join(chars)
    if quote == "'":
        if len(value) > 255:
            raise ConsultError("an atom has at most 255 characters", line)
        return _Token("atom", value, line), position + 1, lines
    return _Token("str", value, line), position + 1, lines


def _character(text: str, position: int, line: int) -> tuple[int, int]:
    """The character at ``position``, an escape sequence read; and where the next starts."""
    char = text[position]
    if char != "\\":
        return ord(char), position + 1
    position += 1
    if position >= len(text):
        raise ConsultError("the text ends in an escape sequence", line)
    char = text[position]
    if char in _ESCAPES:
        return _ESCAPES[char], position + 1
    octal = _OCTAL.match(text, position)
    if octal is not None:
        return int(octal.group(), 8), octal.end()
    if char == "x":
        hexadecimal = _HEX.match(text, position)
        if hexadecimal is None:
            raise ConsultError("bad escape: \\x takes two hex digits or {hex digits}", line)
        code = int(hexadecimal.group(1) or hexadecimal.group(2), 16)
        if code > 0x10FFFF:
            raise ConsultError(f"bad escape: \\x{{{code:x}}} is past Unicode", line)
        return code, hexadecimal.end()
    if char == "^" and position + 1 < len(text):
        return ord(text[position + 1]) & 31, position + 2
    return ord(char), position + 1  # \\ \' \" and any other character: itself
