#!/usr/bin/env bash
# Fuzz the compiled decoder under AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   bash scripts/fuzz_native.sh [--inputs 1000000] [--seed 1]
#
# Builds pybroadway/term/_native/*.c with -fsanitize=address,undefined into a copy of the
# package in a temporary folder (the installed build is not touched), then runs
# scripts/fuzz_native.py against it with the sanitizer runtime preloaded and Python's allocator
# switched to malloc (so that the sanitizer sees every allocation). Any sanitizer report aborts
# the run with a non-zero status. Not part of the test suite: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(realpath "${PYTHON:-.venv/bin/python}")
work=$(mktemp -d -t pybroadway-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r pybroadway "$work/"
rm -f "$work"/pybroadway/term/_ccodec*.so
suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
echo "==> building the codec with AddressSanitizer and UBSan in $work"
gcc -shared -fPIC -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter \
    -Wno-missing-field-initializers -I"$include" \
    pybroadway/term/_native/module.c pybroadway/term/_native/decode.c \
    pybroadway/term/_native/encode.c -o "$work/pybroadway/term/_ccodec$suffix"
echo "==> fuzzing"
cd "$work"
PYTHONPATH="$work" PYTHONMALLOC=malloc \
    LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:quarantine_size_mb=16 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$python" -P "$OLDPWD/scripts/fuzz_native.py" "$@"
