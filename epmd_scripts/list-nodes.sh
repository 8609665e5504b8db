#!/usr/bin/env bash
# List the nodes registered with an EPMD (Erlang's or pybroadway's), like `epmd -names`.
#
#   epmd_scripts/list-nodes.sh [--port P] [--host H]
#
# Env: ERL_EPMD_PORT - the port when --port is not given (default 4369);
#      PYTHON - the interpreter (default: the clone's .venv/bin/python, else python3).
# Same as `pybroadway epmd names`. Exits 1 (with one line on stderr) if no EPMD answers.
set -euo pipefail
. "$(dirname "$0")/_pybroadway.sh"
exec "${pybroadway[@]}" epmd names "$@"
