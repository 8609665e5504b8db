#!/usr/bin/env bash
# Start Erlang's own epmd (Debian's `epmd`) as a daemon, and wait until it answers.
#
#   epmd_scripts/start-system-epmd.sh
#
# Env: ERL_EPMD_PORT - its port (default 4369);
#      PYTHON - the interpreter (default: the clone's .venv/bin/python, else python3).
# Does nothing if an EPMD already answers on that port (checked with `pybroadway epmd names`).
# Stop it with stop-epmd.sh.
set -euo pipefail
. "$(dirname "$0")/_pybroadway.sh"
port=${ERL_EPMD_PORT:-4369}
answers() { "${pybroadway[@]}" epmd names --port "$port" >/dev/null 2>&1; }
if answers; then
    echo "an epmd already runs on port $port"
    exit 0
fi
# -relaxed_command_check lets stop-epmd.sh kill it even while nodes are registered.
epmd -port "$port" -daemon -relaxed_command_check
for _ in $(seq 50); do
    if answers; then
        echo "epmd started on port $port"
        exit 0
    fi
    sleep 0.1
done
echo "epmd did not come up on port $port" >&2
exit 1
