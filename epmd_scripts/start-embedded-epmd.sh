#!/usr/bin/env bash
# Run pybroadway's embedded EPMD in the foreground on ${ERL_EPMD_PORT:-4369} (Ctrl-C stops).
#
#   ERL_EPMD_PORT=4370 epmd_scripts/start-embedded-epmd.sh [--host H] [--port P] [-v]
#
# Then start nodes with: ERL_EPMD_PORT=4370 erl -sname a -start_epmd false
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$here"
exec "$python" -m pybroadway epmd serve "$@"
