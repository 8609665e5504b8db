"""The Erlang distribution node: EPMD, handshake, connections, processes, gen_server, rpc.

>>> async with Node("py@localhost", cookie="secret") as node:   # doctest: +SKIP
...     node.spawn(Echo(), name="echo")
...     await node.connect("beam@localhost")
"""

from pybroadway.dist import global_names  # starts global_name_server on every node
from pybroadway.dist import rpc as _rpc  # noqa: F401 - starts net_kernel and rex on every node
from pybroadway.dist.connection import Connection, ProtocolError
from pybroadway.dist.cookie import default_cookie
from pybroadway.dist.epmd import EmbeddedEpmd, EpmdError, ensure_epmd
from pybroadway.dist.genserver import NOREPLY, From, GenServer
from pybroadway.dist.handshake import HandshakeError
from pybroadway.dist.node import CallError, Node
from pybroadway.dist.process import Exit, Process

__all__ = [
    "NOREPLY",
    "CallError",
    "Connection",
    "EmbeddedEpmd",
    "EpmdError",
    "Exit",
    "From",
    "GenServer",
    "HandshakeError",
    "Node",
    "Process",
    "ProtocolError",
    "default_cookie",
    "ensure_epmd",
    "global_names",
]
