"""One record per peer: where this node stands in the connect protocol with it.

``global.erl`` keeps this per node in its ``#state{}`` (``known``, ``synced``) and in its
process dictionary (``{sync_tag_my, Node}``, ``{sync_tag_his, Node}``, ``{save_ops, Node}``),
with the peer's locker in ``#him{}``; the fields carry the same names. The others are the
steps a Python node takes itself where a BEAM has its locker process do them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pybroadway.term import Atom, Pid


@dataclass(slots=True)
class PeerSync:
    """Sync state of one peer; the server drops the whole record when the peer goes down."""

    known: bool = False
    """In the cluster as this node sees it: synced, or being connected to."""
    synced: bool = False
    """The connect protocol completed: the peer has the same names as this node."""
    sync_tag_my: int | None = None
    """The tag of the session this node started (None: no session yet)."""
    sync_tag_his: Any = None
    """The tag of the peer's session, from its ``init_connect``."""
    locker: Pid | None = None
    """The peer's locker, from its ``init_connect``."""
    pre_connect: tuple[Any, Any] | None = None
    """The peer's ``init_connect`` (its ``{Vsn, Tag}`` and locker message) that came while
    this node had no session with it, replayed when one starts (global.erl's
    ``pre_connect``)."""
    pybroadway: bool = False
    """The peer is a Python node (it marked itself in ``init_connect``)."""
    locking: bool = False
    """This node is setting the session lock on its partition (global.erl's locker is in
    ``lock_nodes_safely``)."""
    lock: tuple[Any, list[Atom]] | None = None
    """The session lock this node holds, and the nodes it holds it on (its own partition, and
    the peer when this node started the lock step): deleted once resolved or cancelled."""
    lock_set_sent: bool = False
    """This session's ``lock_set … true`` went out."""
    exchange_sent: bool = False
    """This session's ``exchange`` went out (global.erl's ``lock_is_set``)."""
    saved_exchange: list[Any] | None = None
    """The peer's names from an ``exchange`` that came before our lock was set."""
    save_ops: list[Any] | None = None
    """The name operations of our side of the exchange, waiting for the peer's ``resolved``."""
    saved_resolved: tuple[list[Any], Any] | None = None
    """The peer's ``resolved`` (its operations, its known list), waiting for its ``exchange``."""

    def new_session(self, tag: int) -> None:
        """Start a session tagged ``tag``: what the previous one exchanged no longer counts.

        What the peer told in its ``init_connect`` stays (it may come before our session
        starts), and so does where the peer stands in the cluster.
        """
        self.sync_tag_my = tag
        self._reset_steps()

    def _reset_steps(self) -> None:
        self.locking = False
        self.lock = None
        self.lock_set_sent = False
        self.exchange_sent = False
        self.saved_exchange = None
        self.save_ops = None
        self.saved_resolved = None

    def end_session(self) -> None:
        """No session with the peer any more (global.erl's ``reset_node_state``): neither
        tag, nothing sent, nothing saved, no lock (the server deletes it first). Whether it is
        known or synced is not touched."""
        self.sync_tag_my = None
        self.sync_tag_his = None
        self.locker = None
        self.pre_connect = None
        self._reset_steps()
