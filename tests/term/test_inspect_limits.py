"""inspect on hostile terms: huge integers print (in hex, exactly), and ``truncate`` bounds
both the text and the work, as Elixir's Logger truncation does."""

from __future__ import annotations

import pytest

from pybroadway.term import inspect
from pybroadway.term.inspect import LOG_TRUNCATE, loggable


@pytest.mark.parametrize("value", [10**5000, -(10**5000), 2**100_000 + 1],
                         ids=["10^5000", "-10^5000", "2^100000+1"])
def test_integers_past_the_decimal_limit_print_in_hex(value: int) -> None:
    text = inspect(value)
    assert text.lstrip("-").startswith("0x")
    assert int(text, 16) == value


def test_integers_below_it_print_in_decimal() -> None:
    assert inspect(10**4000) == str(10**4000)
    assert inspect((1, -2)) == "{1, -2}"


def test_truncate_marks_and_bounds_the_text() -> None:
    term = [list(range(1000)) for _ in range(1000)]
    text = inspect(term, limit=10**9, truncate=100)
    assert text.endswith(" (truncated)") and len(text) == 100 + len(" (truncated)")
    assert text.startswith("[[0, 1, 2")
    assert inspect([1, 2], truncate=100) == "[1, 2]"


def test_truncate_does_not_render_what_it_cuts() -> None:
    class Exploding:
        def __repr__(self) -> str:
            raise AssertionError("rendered past the budget")

    term = [b"x" * 50 for _ in range(100)] + [Exploding()]
    assert inspect(term, limit=10**9, truncate=200).endswith(" (truncated)")


def test_loggable_bounds_huge_binaries_and_keeps_them_printable() -> None:
    text = loggable(b"a" * 20_000_000)
    assert text.startswith('"aaa') and len(text) <= LOG_TRUNCATE + len(" (truncated)")
    # A multi-byte character split by the cut does not make the binary look unprintable.
    text = loggable("é".encode() * 10_000)
    assert text.startswith('"éé') and text.endswith('" <> ...')
    assert loggable(bytes(range(256)) * 100).startswith("<<0, 1, 2")


def test_max_inflate_ratio_keeps_the_cost_in_proportion() -> None:
    """With a ratio, a compressed term may inflate to that many times its size (64 KiB in any
    case); without one, only max_inflated bounds it."""
    import struct
    import zlib

    from pybroadway.term import DecodeError, Decoder

    body = b"l" + struct.pack(">I", 200_000) + b"j" * 200_001
    bomb = b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body, 9)
    assert len(Decoder().decode(bomb)) == 200_000
    with pytest.raises(DecodeError, match="max_inflate_ratio=64"):
        Decoder(max_inflate_ratio=64).decode(bomb)
    small = b"l" + struct.pack(">I", 1000) + b"j" * 1001
    assert len(Decoder(max_inflate_ratio=64).decode(
        b"\x83P" + struct.pack(">I", len(small)) + zlib.compress(small, 9))) == 1000
