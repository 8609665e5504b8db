#!/usr/bin/env bash
# Run pybroadway's embedded EPMD in the foreground until Ctrl-C, SIGTERM or stop-epmd.sh.
#
#   epmd_scripts/start-embedded-epmd.sh [--port P] [--host H] [--relaxed-command-check] [-v]
#
# Env: ERL_EPMD_PORT - the port when --port is not given (default 4369);
#      PYTHON - the interpreter (default: the clone's .venv/bin/python, else python3).
# Same as `pybroadway epmd serve`. Like Erlang's epmd it refuses stop-epmd.sh while nodes are
# registered, unless started with --relaxed-command-check. Then start nodes with, e.g.:
#   ERL_EPMD_PORT=4370 erl -sname a -start_epmd false
set -euo pipefail
. "$(dirname "$0")/_pybroadway.sh"
exec "${pybroadway[@]}" epmd serve "$@"
