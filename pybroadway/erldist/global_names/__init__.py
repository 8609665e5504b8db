"""``:global`` for a Python node: the ``global_name_server`` process (protocol version 8) and a
small API over it.

Every visible pybroadway node runs ``global_name_server``. It takes part in the BEAM's connect
protocol (``init_connect`` → ``lock_set`` → ``exchange`` → ``resolved``, then ``new_nodes`` /
``in_sync`` for the rest of the cluster), answers the lock and registration calls other nodes
make, and keeps a table of every global name in the cluster.

    from pybroadway.erldist import global_names

    await global_names.register_name(node, "receiver", pid)     # str names become atoms
    pid = global_names.whereis_name(node, "beam_name")
    global_names.send(node, "beam_name", message)                # like :global.send/2
    await global_names.sync(node)                                # like :global.sync/0

Sending to ``{:global, name}`` is :func:`send` (``Node.send`` keeps its meaning of
``(name, node)`` for tuples).

Modules: :mod:`.protocol` (atoms and term shapes), :mod:`.peer_sync` (one record per peer),
:mod:`.tables` (names and locks), :mod:`.locker` (a session's lock over both partitions),
:mod:`.connect` (the connect protocol), :mod:`.name_server` (the process),
:mod:`.requester` (the pids that call other nodes), :mod:`.transaction` (lock, act, unlock)
and :mod:`.api` (the functions above).
"""

from pybroadway.erldist.global_names.api import (
    register_name,
    registered_names,
    send,
    server,
    sync,
    unregister_name,
    whereis_name,
)
from pybroadway.erldist.global_names.name_server import GlobalNameServer
from pybroadway.erldist.global_names.peer_sync import PeerSync
from pybroadway.erldist.global_names.protocol import RANDOM_EXIT_NAME

__all__ = [
    "RANDOM_EXIT_NAME",
    "GlobalNameServer",
    "PeerSync",
    "register_name",
    "registered_names",
    "send",
    "server",
    "sync",
    "unregister_name",
    "whereis_name",
]
