"""The Erlang external term format: value types and a lossless, fast codec. No I/O.

>>> from pybroadway.term import Atom, encode, decode
>>> decode(encode((Atom("push_message"), "How are you?")))
(Atom('push_message'), b'How are you?')

Mapping: ``str``/``bytes`` → binary (binaries decode to ``bytes``; pass ``strings=True`` to get
``str`` for valid UTF-8), ``int`` ↔ integer, ``float`` ↔ float, ``tuple`` ↔ tuple, ``list`` ↔
list, ``dict`` ↔ map, ``True``/``False`` ↔ ``true``/``false``, ``None`` ↔ ``nil``. The BEAM's
other terms have types of their own: :class:`Atom`, :class:`Pid`, :class:`Reference`,
:class:`Port`, :class:`ImproperList`, :class:`BitBinary`, :class:`ExportFun`, :class:`Fun`,
:class:`Charlist`. :func:`consult` reads Erlang term text (a configuration file's).

Terms nest to any depth, as on the BEAM: deep ones are decoded, encoded and printed without
recursion, bounded by their size. A tuple nested more than 4096 deep decodes as a
:class:`DeepTuple` (a tuple, which CPython could not hash without exhausting the C stack), and
a map whose keys nest more than 64 deep as :class:`MapPairs`.

The codec has two implementations giving the same results: a compiled accelerator, built when
the package is installed with a C compiler at hand, and the pure-Python reference, used without
one or when ``PYBROADWAY_PURE_PYTHON=1``. :data:`IMPLEMENTATION` says which runs.
"""

from pybroadway.term import _impl
from pybroadway.term import decode as _decode_module
from pybroadway.term import encode as _encode_module
from pybroadway.term._deep_tuple import DeepTuple
from pybroadway.term.consult import consult
from pybroadway.term.decode import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_INFLATED,
    Decoder,
    decode,
    decode_from,
)
from pybroadway.term.elixir import register_struct, struct, struct_name
from pybroadway.term.encode import Encoder, encode
from pybroadway.term.errors import ConsultError, DecodeError, EncodeError
from pybroadway.term.inspect import inspect, loggable
from pybroadway.term.types import (
    Atom,
    BitBinary,
    Charlist,
    ExportFun,
    FrozenList,
    FrozenMap,
    Fun,
    ImproperList,
    MapPairs,
    Pid,
    Port,
    Reference,
    freeze,
)

IMPLEMENTATION = _impl.implementation()
"""``"native"`` when the compiled codec runs, ``"python"`` when the pure-Python one does."""


def use_implementation(name: str) -> None:
    """Run ``"native"`` or ``"python"`` from now on: new decoders and encoders and the shared
    ones behind :func:`decode` and :func:`encode` (tests and benchmarks compare the two)."""
    global IMPLEMENTATION
    _impl.select(name)
    _decode_module._remake_default()
    _encode_module._remake_default()
    IMPLEMENTATION = _impl.implementation()


__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_INFLATED",
    "IMPLEMENTATION",
    "Atom",
    "BitBinary",
    "Charlist",
    "ConsultError",
    "DecodeError",
    "Decoder",
    "DeepTuple",
    "EncodeError",
    "Encoder",
    "ExportFun",
    "FrozenList",
    "FrozenMap",
    "Fun",
    "ImproperList",
    "MapPairs",
    "Pid",
    "Port",
    "Reference",
    "consult",
    "decode",
    "decode_from",
    "encode",
    "freeze",
    "inspect",
    "loggable",
    "register_struct",
    "struct",
    "struct_name",
    "use_implementation",
]
