#!/usr/bin/env bash
# Start Erlang's own epmd (Debian's `epmd`) as a daemon on ${ERL_EPMD_PORT:-4369}.
#
#   ERL_EPMD_PORT=4370 epmd_scripts/start-system-epmd.sh
#
# Does nothing if something already answers on that port. Stop it with stop-epmd.sh.
set -euo pipefail
port=${ERL_EPMD_PORT:-4369}
if epmd -port "$port" -names >/dev/null 2>&1; then
    echo "an epmd already runs on port $port"
    exit 0
fi
# -relaxed_command_check lets stop-epmd.sh kill it even while nodes are registered.
epmd -port "$port" -daemon -relaxed_command_check
for _ in $(seq 50); do
    if epmd -port "$port" -names >/dev/null 2>&1; then
        echo "epmd started on port $port"
        exit 0
    fi
    sleep 0.1
done
echo "epmd did not come up on port $port" >&2
exit 1
