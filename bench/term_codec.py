"""Encode and decode speed of pybroadway.term, beside erlang_py (PyPI `erlang-py`).

    python bench/term_codec.py [--rounds 5]

Prints operations per second for the terms that make up the distribution traffic, for both
codecs, and the ratio (pybroadway / erlang_py). erlang_py is a dev-only dependency. The
compiled codec runs when it is built; ``PYBROADWAY_PURE_PYTHON=1`` measures the pure one.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pybroadway.term import IMPLEMENTATION, Atom, ImproperList, Pid, Reference, decode, encode

NODE = Atom("client@localhost")
PID = Pid(NODE, 227, 0, 1700000001)
PID2 = Pid(Atom("server@localhost"), 90, 0, 1700000002)
REF = Reference(NODE, 1700000001, (187758, 3701014534, 3437655963))

TERMS: dict[str, Any] = {
    "$gen_cast push_message 12 B": (Atom("$gen_cast"), (Atom("push_message"), b"How are you?")),
    "$gen_cast push_message 1 KiB": (Atom("$gen_cast"), (Atom("push_message"), b"x" * 1024)),
    # Elixir's %{id: i, ts: System.system_time(:microsecond), value: i * 0.5,
    # tags: ["sensor", "eu-west"], ok: true}, keys in the BEAM's order: 119 bytes
    "$gen_cast structured event 119 B": (Atom("$gen_cast"), (Atom("push_message"), {
        Atom("id"): 1000, Atom("ok"): True, Atom("tags"): [b"sensor", b"eu-west"],
        Atom("ts"): 1_700_000_000_000_000, Atom("value"): 500.0})),
    "$gen_call {pid, [:alias | ref]}": (
        Atom("$gen_call"), (PID, ImproperList([Atom("alias")], REF)), Atom("register")),
    "control {22, pid, pid}": (22, PID, PID2),
    "map of 100 entries": {Atom(f"key{i}"): i for i in range(100)},
    "list of 10,000 small ints": list(range(256)) * 39 + list(range(16)),
}


def rates(ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Best operations/s of each, measured in alternation so that both see the same machine."""
    timers = [timeit.Timer(ours), timeit.Timer(theirs)]
    numbers = [timer.autorange()[0] for timer in timers]
    best = [0.0, 0.0]
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            best[i] = max(best[i], numbers[i] / timer.timeit(numbers[i]))
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating measurements of each, best kept (default 5)")
    args = parser.parse_args()
    try:
        import erlang  # erlang_py
    except ImportError:
        sys.exit("erlang_py is missing: pip install -e '.[dev]' (it is the comparison baseline)")

    print(f"pybroadway.term codec: {IMPLEMENTATION} (PYBROADWAY_PURE_PYTHON=1 for the pure one)")
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
            ours_rate, theirs_rate = rates(ours_fn, theirs_fn, args.rounds)
            print(f"{name:34} {op:6} {ours_rate:14,.0f} {theirs_rate:13,.0f} "
                  f"{ours_rate / theirs_rate:6.1f}x")


if __name__ == "__main__":
    main()
