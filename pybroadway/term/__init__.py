"""The Erlang external term format: value types and a lossless, fast codec. No I/O.

>>> from pybroadway.term import Atom, encode, decode
>>> decode(encode((Atom("push_message"), "How are you?")))
(Atom('push_message'), b'How are you?')

Mapping: ``str``/``bytes`` → binary (binaries decode to ``bytes``; pass ``strings=True`` to get
``str`` for valid UTF-8), ``int`` ↔ integer, ``float`` ↔ float, ``tuple`` ↔ tuple, ``list`` ↔
list, ``dict`` ↔ map, ``True``/``False`` ↔ ``true``/``false``, ``None`` ↔ ``nil``. The BEAM's
other terms have types of their own: :class:`Atom`, :class:`Pid`, :class:`Reference`,
:class:`Port`, :class:`ImproperList`, :class:`BitBinary`, :class:`ExportFun`, :class:`Fun`,
:class:`Charlist`.
"""

from pybroadway.term.decode import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_INFLATED,
    Decoder,
    decode,
    decode_from,
)
from pybroadway.term.elixir import register_struct, struct, struct_name
from pybroadway.term.encode import Encoder, encode
from pybroadway.term.errors import DecodeError, EncodeError
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

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_INFLATED",
    "Atom",
    "BitBinary",
    "Charlist",
    "DecodeError",
    "Decoder",
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
    "decode",
    "decode_from",
    "encode",
    "freeze",
    "inspect",
    "loggable",
    "register_struct",
    "struct",
    "struct_name",
]
