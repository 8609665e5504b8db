"""EPMD: an asyncio client (register, look up, list, kill) and an in-process EPMD server.

What the node implements is in docs/guides/protocol.md#epmd. The wire format is in
:mod:`.protocol`, the client in :mod:`.client`, the embedded server in :mod:`.server`. The
command line is ``pybroadway epmd`` (:mod:`pybroadway.cli`).
"""

from pybroadway.erldist.epmd.client import (
    DEFAULT_TIMEOUT,
    EpmdError,
    EpmdRegistration,
    EpmdUnreachable,
    NameTaken,
    NotRegistered,
    kill,
    names,
    port_please,
    register,
)
from pybroadway.erldist.epmd.protocol import (
    DEFAULT_EPMD_PORT,
    NODE_TYPE_HIDDEN,
    NODE_TYPE_NORMAL,
    NodeAddress,
    default_epmd_port,
    loopback,
)
from pybroadway.erldist.epmd.server import EmbeddedEpmd, ensure_epmd

__all__ = [
    "DEFAULT_EPMD_PORT",
    "DEFAULT_TIMEOUT",
    "NODE_TYPE_HIDDEN",
    "NODE_TYPE_NORMAL",
    "EmbeddedEpmd",
    "EpmdError",
    "EpmdRegistration",
    "EpmdUnreachable",
    "NameTaken",
    "NodeAddress",
    "NotRegistered",
    "default_epmd_port",
    "ensure_epmd",
    "kill",
    "loopback",
    "names",
    "port_please",
    "register",
]
