#!/usr/bin/env bash
# Stop the epmd on ${ERL_EPMD_PORT:-4369}: Erlang's daemon or pybroadway's embedded one.
#
# Sends KILL_REQ. Uses `epmd -kill` when Erlang is installed, otherwise a tiny Python client.
# Erlang's epmd refuses while nodes are registered unless it runs with -relaxed_command_check.
set -euo pipefail
port=${ERL_EPMD_PORT:-4369}
if command -v epmd >/dev/null; then
    exec epmd -port "$port" -kill
fi
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" - "$port" <<'PY'
import socket, sys
port = int(sys.argv[1])
with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    s.sendall(b"\x00\x01k")
    reply = s.recv(16)
print("Killed" if reply == b"OK" else f"epmd answered {reply!r}")
sys.exit(0 if reply == b"OK" else 1)
PY
