#!/usr/bin/env bash
# Build the documentation site into docs/_build/html.
#
#   bash scripts/docs.sh [sphinx-build args...]
#
# - creates .venv when missing and installs pybroadway with its docs extra (Sphinx, MyST,
#   furo) when they are missing or pyproject.toml changed;
# - builds with warnings as errors and every cross-reference checked (-W --keep-going -n);
#   the reference is generated from the code (docs/_ext/pybroadway_docs.py), so it is rebuilt
#   from this clone's pybroadway (and its metrics extra, which pybroadway.metrics needs).
#   tests/test_docs.py checks the built site's links.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($python --version)"
    $python -m venv .venv
fi
if ! .venv/bin/python -c 'import pybroadway, prometheus_client, sphinx, myst_parser, furo' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.docs-installed ]; then
    say "installing pybroadway[docs] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[docs]'
    touch .venv/.docs-installed
fi

say "sphinx-build: docs -> docs/_build/html"
exec .venv/bin/python -m sphinx -W --keep-going -n -q -b html "$@" docs docs/_build/html
