"""Fuzz the compiled decoder: random, plausible and mutated inputs, each of which must decode
or raise DecodeError, the same as the pure-Python decoder says (checked on every 10th input).

    python scripts/fuzz_native.py [--inputs 1000000] [--seed 1]

Run it through scripts/fuzz_native.sh, which builds the extension with AddressSanitizer and
UndefinedBehaviorSanitizer first. Prints the resident memory at the start, along the way and at
the end: it must stay flat. The decoders are made anew every tenth of the run, as connections
come and go, so that what their caches held (random atoms and pids) is released.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # run from a clone

from pybroadway import term
from pybroadway.term import (
    Atom,
    BitBinary,
    Charlist,
    DecodeError,
    Decoder,
    ExportFun,
    ImproperList,
    Pid,
    Port,
    Reference,
    _impl,
    encode,
)

NODE = Atom("peer@localhost")
SAMPLES = [
    encode((Atom("$gen_cast"), (Atom("push_message"), b"How are you?"))),
    encode((Atom("$gen_cast"), (Atom("push_message"), {
        Atom("id"): 1000, Atom("ok"): True, Atom("tags"): [b"sensor", b"eu-west"],
        Atom("ts"): 1_700_000_000_000_000, Atom("value"): 500.0}))),
    encode((22, Pid(NODE, 90, 0, 7), Pid(NODE, 91, 0, 7))),
    encode((Atom("$gen_call"), (Pid(NODE, 1, 2, 3),
                                ImproperList([Atom("alias")], Reference(NODE, 3, (1, 2, 3)))),
            Atom("register"))),
    encode({Atom("a"): [1, 2.5, -(1 << 80)], (1, 2): {b"k": Charlist(b"xyz")}, 1: 1.0}),
    encode([BitBinary(b"\x01\x80", 1), 1 << 3000, "ü" * 20, Port(NODE, 5, 6),
            ExportFun(Atom("m"), Atom("f"), 2), list(range(20)), None, False]),
    encode(list(range(300)), compressed=True),
    encode([[[[(1, [2, {3: [4]}])]]]]),
]
TAGS = bytes([70, 77, 80, 88, 89, 90, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108,
              109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121])


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def make_input(rng: random.Random, i: int) -> bytes:
    kind = i % 5
    if kind == 0:  # random bytes after a version byte
        return b"\x83" + rng.randbytes(rng.randrange(0, 48))
    if kind == 1:  # plausible tags and small numbers
        return b"\x83" + bytes(rng.choice(TAGS) if rng.random() < 0.5 else rng.randrange(256)
                               for _ in range(rng.randrange(1, 64)))
    data = bytearray(rng.choice(SAMPLES))
    for _ in range(rng.randrange(1, 5)):  # real traffic with bytes set, inserted, removed
        at = rng.randrange(0, len(data) + 1)
        action = rng.random()
        if action < 0.5 and at < len(data):
            data[at] = rng.randrange(256) if rng.random() < 0.7 else rng.choice(TAGS)
        elif action < 0.7:
            data[at:at] = rng.randbytes(rng.randrange(1, 5))
        elif action < 0.9:
            del data[at:at + rng.randrange(1, 5)]
        else:
            del data[at:]
    return bytes(data)


def outcome(decoder: Decoder, data: bytes, framed: bool = False) -> tuple[Any, ...]:
    """What decoding ``data`` gives; ``framed``: read from a bytearray at an offset, as the
    connection reads a frame from its buffer."""
    try:
        if framed:
            return ("value", repr(decoder.decode_from(bytearray(b"\x70" + data), 1)))
        return ("value", repr(decoder.decode(data)))
    except DecodeError as exc:
        return ("DecodeError", str(exc))
    except Exception as exc:  # what the pure decoder raises too (TypeError for odd map keys)
        return (type(exc).__name__, str(exc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if _impl.built is None:
        sys.exit(f"the native codec is not built: {_impl.reason}")
    print(f"native module: {_impl.built.__file__}")
    options: list[dict[str, Any]] = [
        {}, {"strings": True, "none": "undefined"},
        {"max_depth": 8, "max_inflated": 1 << 16, "max_inflate_ratio": 8}]

    def decoders(name: str) -> list[Decoder]:
        term.use_implementation(name)
        return [Decoder(**o) for o in options]

    pure, native = decoders("python"), decoders("native")
    rng = random.Random(args.seed)
    start_rss, started = rss_kib(), time.monotonic()
    print(f"RSS at start: {start_rss} KiB")
    counts: dict[str, int] = {}
    mismatches = 0
    for i in range(args.inputs):
        data = make_input(rng, i)
        which = i % len(options)
        framed = i % 7 == 0
        got = outcome(native[which], data, framed)
        counts[got[0]] = counts.get(got[0], 0) + 1
        if i % 10 == 0 and outcome(pure[which], data, framed) != got:
            mismatches += 1
            print(f"MISMATCH on {data!r}: native {got}, "
                  f"pure {outcome(pure[which], data, framed)}")
        if i and i % (args.inputs // 10) == 0:
            # New decoders, as a new connection has: what the old ones cached (random atoms
            # and pids, each cache bounded at 65,536) goes, and RSS must stay level.
            pure, native = decoders("python"), decoders("native")
            gc.collect()
            print(f"{i:>9,} inputs, RSS {rss_kib()} KiB, {Atom.count():,} live atoms, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    end_rss = rss_kib()
    atoms = Atom.count()
    del pure, native
    gc.collect()
    print(f"live atoms: {atoms:,} at the end, {Atom.count():,} once the decoders are gone")
    print(f"RSS at end: {end_rss} KiB ({end_rss - start_rss:+} KiB) after {args.inputs:,} "
          f"inputs in {time.monotonic() - started:.0f} s; outcomes {counts}; "
          f"{mismatches} mismatches with the pure decoder")
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
