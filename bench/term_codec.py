"""Encode and decode speed of pybroadway.term, beside erlang_py (PyPI `erlang-py`).

    python bench/term_codec.py [--seconds 0.3]

Prints operations per second for the terms that make up the distribution traffic, for both
codecs, and the ratio (pybroadway / erlang_py). erlang_py is a dev-only dependency.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybroadway.term import Atom, ImproperList, Pid, Reference, decode, encode

NODE = Atom("client@localhost")
PID = Pid(NODE, 227, 0, 1700000001)
PID2 = Pid(Atom("server@localhost"), 90, 0, 1700000002)
REF = Reference(NODE, 1700000001, (187758, 3701014534, 3437655963))

TERMS: dict[str, Any] = {
    "$gen_cast push_message 12 B": (Atom("$gen_cast"), (Atom("push_message"), b"How are you?")),
    "$gen_cast push_message 1 KiB": (Atom("$gen_cast"), (Atom("push_message"), b"x" * 1024)),
    "$gen_call {pid, [:alias | ref]}": (
        Atom("$gen_call"), (PID, ImproperList([Atom("alias")], REF)), Atom("register")),
    "control {22, pid, pid}": (22, PID, PID2),
    "map of 100 entries": {Atom(f"key{i}"): i for i in range(100)},
    "list of 10,000 small ints": list(range(256)) * 39 + list(range(16)),
}


def rate(func: Callable[[], Any], seconds: float) -> float:
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    repeat = max(3, int(seconds / max(timer.timeit(number) / number * number, 1e-9)))
    best = min(timer.repeat(repeat=min(repeat, 7), number=number))
    return number / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3,
                        help="rough time per measurement (default 0.3)")
    args = parser.parse_args()
    try:
        import erlang  # erlang_py
    except ImportError:
        sys.exit("erlang_py is missing: pip install -e '.[dev]' (it is the comparison baseline)")

    print(f"{'term':34} {'op':6} {'pybroadway/s':>14} {'erlang_py/s':>13} {'ratio':>7}")
    print("-" * 78)
    for name, term in TERMS.items():
        data = encode(term)
        theirs = erlang.binary_to_term(data)
        pairs = [
            ("encode", lambda t=term: encode(t), lambda t=theirs: erlang.term_to_binary(t)),
            ("decode", lambda d=data: decode(d), lambda d=data: erlang.binary_to_term(d)),
        ]
        for op, ours_fn, theirs_fn in pairs:
            ours_rate = rate(ours_fn, args.seconds)
            theirs_rate = rate(theirs_fn, args.seconds)
            print(f"{name:34} {op:6} {ours_rate:14,.0f} {theirs_rate:13,.0f} "
                  f"{ours_rate / theirs_rate:6.1f}x")


if __name__ == "__main__":
    main()
