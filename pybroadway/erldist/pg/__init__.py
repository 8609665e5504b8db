"""``pg``, kernel's process groups, spoken with the BEAM: a scope on a Python node is one more
node of the scope's overlay, with the scopes of the same name on Erlang and Elixir nodes.

    from pybroadway.erldist import pg

    workers = await pg.start(node)             # the scope "pg", under kernel_sup
    workers.join("pipeline", process.pid)      # Elixir: :pg.get_members("pipeline") has it
    workers.get_members("pipeline")            # members on every node of the scope
    workers.monitor("pipeline", print)         # PgEvent(kind='join', group=…, pids=[…])

Modules: :mod:`.groups` (the membership table and its subscriptions), :mod:`.scope` (the
server and the wire protocol), :mod:`.api` (:func:`start` and the :class:`Scope` handle).
"""

from pybroadway.erldist.pg.api import DEFAULT_SCOPE, Scope, ScopeNotRunning, scope, start
from pybroadway.erldist.pg.groups import Callback, PgEvent, Subscription
from pybroadway.erldist.pg.scope import (
    DEFAULT_MAX_REMOTE_MEMBERS,
    MAX_SCOPES_PER_NODE,
    ScopeServer,
)

__all__ = [
    "DEFAULT_MAX_REMOTE_MEMBERS",
    "DEFAULT_SCOPE",
    "MAX_SCOPES_PER_NODE",
    "Callback",
    "PgEvent",
    "Scope",
    "ScopeNotRunning",
    "ScopeServer",
    "Subscription",
    "scope",
    "start",
]
