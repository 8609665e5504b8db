"""Bad input: truncated, corrupt or hostile bytes raise DecodeError, and nothing else."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from pybroadway.term import (
    Atom,
    BitBinary,
    Charlist,
    DecodeError,
    Decoder,
    ImproperList,
    Pid,
    Reference,
    decode,
    encode,
)

NODE = Atom("peer@localhost")
SAMPLES = [
    encode((Atom("$gen_cast"), (Atom("push_message"), b"How are you?"))),
    encode((22, Pid(NODE, 90, 0, 7), Pid(NODE, 91, 0, 7))),
    encode((Atom("$gen_call"), (Pid(NODE, 1, 2, 3),
                                ImproperList([Atom("alias")], Reference(NODE, 3, (1, 2, 3)))),
            Atom("register"))),
    encode({Atom("a"): [1, 2.5, -(1 << 80)], (1, 2): {b"k": Charlist(b"xyz")}}),
    encode([BitBinary(b"\x01\x80", 1), 1 << 3000, "ü" * 20]),
    encode(list(range(300)), compressed=True),
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_truncation_is_a_decode_error(sample: bytes) -> None:
    for cut in range(len(sample)):
        with pytest.raises(DecodeError):
            decode(sample[:cut])


@pytest.mark.parametrize(("data", "message"), [
    (b"", "expected a term"),
    (b"\x84a\x01", "version byte 131"),
    (b"\x83\xff", "unknown term tag 255"),
    (b"\x83R\x01", "ATOM_CACHE_REF"),
    (b"\x83m\xff\xff\xff\xff", "binary declares 4294967295 bytes but only 0 remain"),
    (b"\x83l\x7f\xff\xff\xff", "list of 2147483647 elements cannot fit"),
    (b"\x83t\xff\xff\xff\xffa\x01", "map of 4294967295 pairs cannot fit"),
    (b"\x83i\xff\xff\xff\xff", "tuple of arity 4294967295 cannot fit"),
    (b"\x83o\xff\xff\xff\xff\x00", "big integer declares 4294967295 bytes"),
    (b"\x83a\x01\x02", "1 unexpected byte after the term"),
    (b"\x83w\x02\xc3(", "not valid UTF-8"),
    (b"\x83Z\x00\x06w\x01a", "1 to 5 id words, not 6"),
    (b"\x83X" + b"a\x01" + bytes(12), "expected an atom for a pid's node"),
    (b"\x83M\x00\x00\x00\x01\x09\xff", "cannot have 9 bits"),
])
def test_bad_input_is_named(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message.replace("(", r"\(")):
        decode(data)


def test_compression_bombs_are_refused() -> None:
    huge = zlib.compress(bytes(10_000_000))
    declared_huge = b"\x83P" + struct.pack(">I", 10_000_001) + huge
    with pytest.raises(DecodeError, match="more than the limit"):
        Decoder(max_inflated=1_000_000).decode(declared_huge)
    lying = b"\x83P" + struct.pack(">I", 100) + huge
    with pytest.raises(DecodeError, match="declares 100"):
        decode(lying)
    with pytest.raises(DecodeError, match="corrupt"):
        decode(b"\x83P\x00\x00\x00\x05garbage")


def test_fuzz_only_decode_errors_escape() -> None:
    """100,000 random and mutated inputs: each decodes or raises DecodeError."""
    rng = random.Random(1234)
    decoder = Decoder(max_depth=64, max_inflated=1 << 20)
    tags = bytes([70, 77, 80, 88, 89, 90, 97, 98, 99, 100, 103, 104, 105, 106, 107, 108, 109,
                  110, 111, 112, 113, 114, 115, 116, 118, 119, 120])
    decoded = 0
    for i in range(100_000):
        kind = i % 4
        if kind == 0:  # random bytes after a version byte
            data = b"\x83" + rng.randbytes(rng.randrange(1, 40))
        elif kind == 1:  # a random stream of plausible tags and small numbers
            data = b"\x83" + bytes(rng.choice(tags) if rng.random() < 0.5
                                   else rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        else:  # a real term with a few bytes flipped, inserted or removed
            data = bytearray(rng.choice(SAMPLES))
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(1, len(data))
                action = rng.random()
                if action < 0.6:
                    data[at] = rng.randrange(256)
                elif action < 0.8:
                    data.insert(at, rng.randrange(256))
                else:
                    del data[at]
            data = bytes(data)
        try:
            decoder.decode(data)
            decoded += 1
        except DecodeError:
            pass
    assert decoded > 0  # the mutations do not all break the term
