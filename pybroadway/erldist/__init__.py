"""The Erlang distribution node: EPMD, handshake, connections (plain, or over TLS with
:func:`read_optfile`'s settings), processes, gen_server, supervisors, rpc.

>>> async with Node("py@localhost", cookie="secret") as node:   # doctest: +SKIP
...     node.spawn(Echo(), name="echo")
...     await node.connect("beam@localhost")
"""

from pybroadway.erldist import global_names, pg
from pybroadway.erldist.calls import CallError
from pybroadway.erldist.connection import Connection, ProtocolError
from pybroadway.erldist.cookie import default_cookie
from pybroadway.erldist.epmd import EmbeddedEpmd, EpmdError, ensure_epmd
from pybroadway.erldist.genserver import NOREPLY, From, GenServer
from pybroadway.erldist.handshake import HandshakeError
from pybroadway.erldist.handshake_io import TlsRefused
from pybroadway.erldist.kernel import NodeDown
from pybroadway.erldist.node import Node
from pybroadway.erldist.process import Exit, Process
from pybroadway.erldist.supervisor import ChildSpec, Supervisor
from pybroadway.erldist.tls import TlsSettings
from pybroadway.erldist.tls_options import TlsOptionsError, read_optfile

__all__ = [
    "NOREPLY",
    "CallError",
    "ChildSpec",
    "Connection",
    "EmbeddedEpmd",
    "EpmdError",
    "Exit",
    "From",
    "GenServer",
    "HandshakeError",
    "Node",
    "NodeDown",
    "Process",
    "ProtocolError",
    "Supervisor",
    "TlsOptionsError",
    "TlsRefused",
    "TlsSettings",
    "default_cookie",
    "ensure_epmd",
    "global_names",
    "pg",
    "read_optfile",
]
