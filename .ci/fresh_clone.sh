#!/usr/bin/env bash
# Proof that the README's two commands work on a fresh machine: clone this
# repository's HEAD into a temporary folder, then, there, with a new .venv
# made from python3 (BASE_PYTHON) and nothing else installed:
#   1. `make train` without data stops at once with the "data are missing" paragraph;
#   2. `make train ARGS="--limit ..."` trains a short run and writes its run folder;
#   3. `make test` passes (a quick subset; FULL=1 runs the whole suite).
# Usage: bash .ci/fresh_clone.sh   (KERASBERT_DATA or ../shared/data: the CS224N files;
#        KEEP=1 leaves the clone; BASE_PYTHON=python3.12 picks the interpreter)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
data="$(cd "${KERASBERT_DATA:-$src/../shared/data}" && pwd)"
tmp="$(mktemp -d /tmp/kerasbert_fresh.XXXXXX)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
tests="tests/test_layout.py tests/test_bad_inputs.py tests/test_tokenizer.py"
[ "${FULL:-0}" = 1 ] && tests=tests
start=$SECONDS
step() { echo "== $(( SECONDS - start ))s: $*"; }

step "clone $(git -C "$src" rev-parse --short HEAD) into $tmp/kerasbert"
git clone -q --no-local "$src" "$tmp/kerasbert"
git -C "$tmp/kerasbert" checkout -q "$(git -C "$src" rev-parse HEAD)"
cd "$tmp/kerasbert"
# Nothing of the calling shell's Python may leak in.
unset PYTHON PYTHONPATH VIRTUAL_ENV KERASBERT_DATA

step "make train without data: must stop at once, exit != 0, naming the files"
if out="$(make train DATA="$tmp/no-data" 2>&1)"; then
  echo "FAIL: make train without data succeeded"; exit 1
fi
grep -q "the CS224N data are missing: the data folder $tmp/no-data" <<<"$out" \
  || { echo "FAIL: no data paragraph in:"; echo "$out"; exit 1; }
grep -q "Traceback" <<<"$out" && { echo "FAIL: traceback:"; echo "$out"; exit 1; }
[ -x .venv/bin/python ] || { echo "FAIL: no .venv made"; exit 1; }
step "ok (the .venv is installed now)"

step "make train ARGS=--limit: a short run"
make train DATA="$data" ARGS="--limit 64 --epochs 1 --out runs/fresh"
for f in best.keras summary.json predictions/sts-dev-output.csv; do
  [ -s "runs/fresh/$f" ] || { echo "FAIL: runs/fresh/$f missing"; exit 1; }
done
step "ok"

step "make test TESTS=\"$tests\""
make test DATA="$data" TESTS="$tests"
step "fresh clone: both README commands pass"
