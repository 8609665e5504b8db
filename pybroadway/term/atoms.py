"""Atoms of the OTP protocols that more than one module speaks.

Atoms are interned, so these constants compare by identity; a module that needs an atom only
for itself defines it where it is used.
"""

from __future__ import annotations

from .types import Atom

OK = Atom("ok")
ERROR = Atom("error")
UNDEFINED = Atom("undefined")
TIMEOUT = Atom("timeout")

# gen protocol (gen.erl)
GEN_CALL = Atom("$gen_call")
GEN_CAST = Atom("$gen_cast")
ALIAS = Atom("alias")

# exit and monitor signals (erlang:exit/2, erlang:monitor/2)
NORMAL = Atom("normal")
SHUTDOWN = Atom("shutdown")
KILL = Atom("kill")
KILLED = Atom("killed")
EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
NOPROC = Atom("noproc")
NOCONNECTION = Atom("noconnection")
