#!/usr/bin/env bash
# Stop an EPMD (KILL_REQ, like `epmd -kill`): pybroadway's embedded one or Erlang's daemon.
#
#   epmd_scripts/stop-epmd.sh [--port P] [--host H]
#
# Env: ERL_EPMD_PORT - the port when --port is not given (default 4369);
#      PYTHON - the interpreter (default: the clone's .venv/bin/python, else python3).
# Same as `pybroadway epmd kill`: prints "Killed", or exits 1 with one line on stderr. An EPMD
# refuses while nodes are registered unless it runs with -relaxed_command_check (as
# start-system-epmd.sh starts Erlang's) or --relaxed-command-check (start-embedded-epmd.sh).
set -euo pipefail
. "$(dirname "$0")/_pybroadway.sh"
exec "${pybroadway[@]}" epmd kill "$@"
