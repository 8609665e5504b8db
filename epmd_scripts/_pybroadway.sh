# Sourced by the scripts next to it (not run): sets `pybroadway`, the command line of the
# clone's `python -m pybroadway`, and cds to the clone so that its pybroadway is imported.
#
# Env: PYTHON - the interpreter (default: the clone's .venv/bin/python, else python3).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$root"
pybroadway=("$python" -m pybroadway)
