#!/usr/bin/env bash
# List the nodes registered with the epmd on ${ERL_EPMD_PORT:-4369} (Erlang's or ours).
#
#   epmd_scripts/list-nodes.sh [--host H] [--port P]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$here"
exec "$python" -m pybroadway epmd names "$@"
