"""The EPMD wire format, shared by the client and the embedded server
(docs/guides/protocol.md#epmd).

Every request is ``Len:16`` followed by the request bytes; replies are unframed. ALIVE2_REQ
and PORT2_RESP carry the same node record (``PortNo:16, NodeType, Protocol, Highest:16,
Lowest:16, Nlen:16, Name, Elen:16, Extra``): :func:`pack_node` / :func:`unpack_node`.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass

__all__ = [
    "ALIVE2_REQ",
    "ALIVE2_RESP",
    "ALIVE2_X_RESP",
    "DEFAULT_EPMD_PORT",
    "DIST_HIGHEST",
    "DIST_LOWEST",
    "DUMP_REQ",
    "KILL_REQ",
    "NAMES_REQ",
    "NODE_TYPE_HIDDEN",
    "NODE_TYPE_NORMAL",
    "PORT2_RESP",
    "PORT_PLEASE2_REQ",
    "STOP_REQ",
    "NodeAddress",
    "default_epmd_port",
    "frame",
    "loopback",
    "names_line",
    "pack_node",
    "parse_names",
    "unpack_node",
]

log = logging.getLogger(__name__)

#: EPMD's port when ``ERL_EPMD_PORT`` does not say another.
DEFAULT_EPMD_PORT = 4369

#: The node type EPMD registers a visible node with (``'M'``).
NODE_TYPE_NORMAL = 77  # 'M'
#: The node type EPMD registers a hidden node with (``'H'``).
NODE_TYPE_HIDDEN = 72  # 'H'

# Request / reply tags.
ALIVE2_REQ = 120  # 'x'
ALIVE2_X_RESP = 118  # 'v'
ALIVE2_RESP = 121  # 'y'
PORT_PLEASE2_REQ = 122  # 'z'
PORT2_RESP = 119  # 'w'
NAMES_REQ = 110  # 'n'
DUMP_REQ = 100  # 'd'
KILL_REQ = 107  # 'k'
STOP_REQ = 115  # 's'

# What real OTP 25..28 nodes register with (erl_epmd:epmd_dist_low/0 is 5).
DIST_HIGHEST = 6
DIST_LOWEST = 5

REQUEST_LENGTH = struct.Struct(">H")
ALIVE2_X_RESULT = struct.Struct(">BI")  # after ALIVE2_X_RESP: Result, Creation:32
ALIVE2_RESULT = struct.Struct(">BH")  # after ALIVE2_RESP: Result, Creation:16
NAMES_HEADER = struct.Struct(">I")  # the EPMD's own port, before the NAMES lines

_NODE_HEAD = struct.Struct(">HBBHHH")  # PortNo, NodeType, Protocol, Highest, Lowest, Nlen
_EXTRA_LENGTH = struct.Struct(">H")
_NAMES_LINE = re.compile(rb"^name (.+) at port (\d+)$")


@dataclass(frozen=True)
class NodeAddress:
    """A node record: where a node listens and which distribution versions it speaks."""

    name: str
    port: int
    node_type: int = NODE_TYPE_NORMAL
    protocol: int = 0
    highest: int = DIST_HIGHEST
    lowest: int = DIST_LOWEST
    extra: bytes = b""

    @property
    def hidden(self) -> bool:
        """True if the node registered as hidden ('H')."""
        return self.node_type == NODE_TYPE_HIDDEN


def loopback(ipv6: bool = False) -> str:
    """Where a node reaches its own host's EPMD, as erl_epmd registers one: over 127.0.0.1
    under ``inet_tcp``, over ``::1`` under ``inet6_tcp``."""
    return "::1" if ipv6 else "127.0.0.1"


def default_epmd_port() -> int:
    """The EPMD port: ``$ERL_EPMD_PORT`` if set (and valid), else 4369."""
    value = os.environ.get("ERL_EPMD_PORT", "").strip()
    if value:
        try:
            port = int(value)
        except ValueError:
            log.warning("ignoring invalid ERL_EPMD_PORT=%r", value)
        else:
            if 0 < port < 65536:
                return port
            log.warning("ignoring out-of-range ERL_EPMD_PORT=%r", value)
    return DEFAULT_EPMD_PORT


def frame(body: bytes) -> bytes:
    """A request as sent to EPMD: its length, then its bytes."""
    return REQUEST_LENGTH.pack(len(body)) + body


def pack_node(node: NodeAddress) -> bytes:
    """The node record of an ALIVE2_REQ or a PORT2_RESP."""
    raw_name = node.name.encode("utf-8")
    return (_NODE_HEAD.pack(node.port, node.node_type, node.protocol, node.highest,
                            node.lowest, len(raw_name))
            + raw_name + _EXTRA_LENGTH.pack(len(node.extra)) + node.extra)


def unpack_node(data: bytes, offset: int, *, strict: bool) -> NodeAddress:
    """Read the node record at ``data[offset:]``; ValueError if it is malformed.

    ``strict`` (the server reading a registration) wants the whole record and a non-empty
    UTF-8 name. Otherwise, like OTP's own client, only the fields up to the name must be
    there: a missing or short Extra is tolerated and a non-UTF-8 name is decoded leniently.
    """
    try:
        port, node_type, protocol, highest, lowest, nlen = _NODE_HEAD.unpack_from(data, offset)
    except struct.error:
        raise ValueError("truncated node record") from None
    start = offset + _NODE_HEAD.size
    raw_name = data[start:start + nlen]
    if len(raw_name) != nlen:
        raise ValueError("truncated node name")
    start += nlen
    extra = b""
    if len(data) >= start + _EXTRA_LENGTH.size:
        (elen,) = _EXTRA_LENGTH.unpack_from(data, start)
        extra = data[start + _EXTRA_LENGTH.size:start + _EXTRA_LENGTH.size + elen]
        if strict and len(extra) != elen:
            raise ValueError("truncated Extra")
    elif strict:
        raise ValueError("no Extra length")
    if strict and nlen == 0:
        raise ValueError("empty node name")
    name = raw_name.decode("utf-8", "strict" if strict else "replace")
    return NodeAddress(name, port, node_type, protocol, highest, lowest, extra)


def names_line(name: str, port: int) -> bytes:
    """One line of a NAMES reply."""
    return f"name {name} at port {port}\n".encode()


def parse_names(lines: bytes) -> list[tuple[str, int]]:
    """``(name, port)`` of each well-formed line of a NAMES reply (after its port header)."""
    result: list[tuple[str, int]] = []
    for line in lines.splitlines():
        m = _NAMES_LINE.match(line.strip())
        if m:
            result.append((m.group(1).decode("utf-8", "replace"), int(m.group(2))))
    return result
