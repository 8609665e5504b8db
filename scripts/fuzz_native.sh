#!/usr/bin/env bash
# Fuzz the compiled decoder, and the workers' message builder, under AddressSanitizer and
# UndefinedBehaviorSanitizer.
#
#   bash scripts/fuzz_native.sh [--inputs 1000000] [--seed 1]
#
# Builds pybroadway/term/_native/*.c and pybroadway/workers/_native/unwrap.c with
# -fsanitize=address,undefined into a copy of the package in a temporary folder (the installed
# build is not touched), then runs scripts/fuzz_native.py, and the builder's tests (random and
# malformed events among them), against it with the sanitizer runtime preloaded and Python's
# allocator switched to malloc (so that the sanitizer sees every allocation). Any sanitizer
# report aborts the run with a non-zero status. Not part of the test suite: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(realpath "${PYTHON:-.venv/bin/python}")
tests_python=$(realpath -s "${PYTHON:-.venv/bin/python}")  # the venv's, with pytest's plugins
work=$(mktemp -d -t pybroadway-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r pybroadway "$work/"
cp -r tests testkit pyproject.toml "$work/"
rm -f "$work"/pybroadway/term/_ccodec*.so "$work"/pybroadway/workers/_cunwrap*.so
suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
sanitized() {  # sanitized OUTPUT SOURCE...
    local output=$1
    shift
    gcc -shared -fPIC -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
        -fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter \
        -Wno-missing-field-initializers -I"$include" "$@" -o "$output"
}
echo "==> building the codec and the message builder with AddressSanitizer and UBSan in $work"
sanitized "$work/pybroadway/term/_ccodec$suffix" pybroadway/term/_native/module.c \
    pybroadway/term/_native/decode.c pybroadway/term/_native/encode.c
sanitized "$work/pybroadway/workers/_cunwrap$suffix" pybroadway/workers/_native/unwrap.c
fuzz=$(realpath scripts/fuzz_native.py)
cd "$work"
under_sanitizers() {
    PYTHONPATH="$work" PYTHONMALLOC=malloc \
        LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:quarantine_size_mb=16 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$@"
}
echo "==> fuzzing the decoder"
under_sanitizers "$python" -P "$fuzz" "$@"
echo "==> the message builder's tests"
under_sanitizers "$tests_python" -m pytest -q -p no:cacheprovider tests/workers/test_unwrap.py
