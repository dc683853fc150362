#!/usr/bin/env bash
# GPU check for a CUDA machine (also: `cargo xtask gpu-check`). Within ~8 minutes it
#   1. builds the runner and the cross-backend suite with `--features cuda` (needs cargo + the
#      CUDA driver; NVRTC is loaded at run time), or takes prebuilt binaries (--prebuilt DIR);
#   2. lists the backends (`demiurgic backends`: is a CUDA device found?);
#   3. runs the cross-backend suite for cuda against ndarray with DEMIURGIC_FULL=1 (every
#      real-model case, as `cargo xtask test --full`; tiny-llama logits and greedy,
#      every processors.json case, SmolLM2 12 greedy tokens);
#   4. generates with SmolLM2 on cuda and runs the quick bench on cuda (and flex, for scale),
# printing every figure. Exit status non-zero when any step fails.
#
# --prebuilt DIR: DIR holds `demiurgic` and the test binary `suite` built elsewhere with
#   `CUDARC_CUDA_VERSION=<driver's version, e.g. 13000> cargo build --release --features cuda`
#   (see docs/BACKENDS.md); fixtures are read from this checkout.
# Model: the default model is fetched with pip into $DEMIURGIC_HOME unless already there.
set -uo pipefail
cd "$(dirname "$0")/.."
PREBUILT=""
if [[ "${1:-}" == "--prebuilt" ]]; then PREBUILT="$(cd "$2" && pwd)"; fi
export CARGO_TERM_COLOR=never
status=0
step() { echo; echo "=== $* ($(date +%T))"; }
fail() { echo "FAILED: $*"; status=1; }

# driver, NVRTC and toolkit headers for cubecl-cuda
source scripts/cuda-env.sh

step "machine"
echo "CUDA_PATH=${CUDA_PATH:-/usr/local/cuda (default)}"
ls "${CUDA_PATH:-/usr/local/cuda}/include/cuda.h" 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || fail "nvidia-smi"
nproc

if [[ -n "$PREBUILT" ]]; then
  BIN="$PREBUILT/demiurgic"; SUITE="$PREBUILT/suite"
  export DEMIURGIC_FIXTURES="$PWD/tests/fixtures"
else
  step "build with --features cuda"
  cargo build --release -p demiurgic-runner --features cuda || { echo "FAILED: build"; exit 1; }
  SUITE=$(cargo test --release -p demiurgic-tests --features cuda --test suite --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("executable") and m.get("target",{}).get("name")=="suite": print(m["executable"])') \
    || { echo "FAILED: building the cross-backend suite"; exit 1; }
  BIN="${CARGO_TARGET_DIR:-target}/release/demiurgic"
fi

step "backends"
"$BIN" backends || fail "backends"

step "model"
MODEL=$("$BIN" fetch-model) || { echo "FAILED: no model"; exit 1; }
echo "$MODEL"

step "test suite on cuda: cross-backend (against ndarray) and every golden test"
# the filter must select cuda tests: a suite built without them would "pass" with none
N_CUDA=$("$SUITE" --list 2>/dev/null | grep -c '::cuda: test$' || true)
echo "cuda tests in the suite: $N_CUDA"
[ "$N_CUDA" -ge 1 ] || fail "the suite has no cuda test (built without --features cuda?)"
DEMIURGIC_FULL=1 "$SUITE" --test-threads 1 --nocapture cuda || fail "cross-backend suite"

step "generate on cuda"
"$BIN" generate --backend cuda --model "$MODEL" --prompt "def fibonacci(n):" --greedy --max-new-tokens 48 --json || fail "generate"

step "quick bench: cuda"
"$BIN" bench --backend cuda --model "$MODEL" --quick --batches 1,4,16 --prefill 128,512 || fail "bench cuda"

step "quick bench: flex (same machine, for scale)"
"$BIN" bench --backend flex --model "$MODEL" --quick --cache-lengths 50 --batches 1 --prefill 128 || fail "bench flex"

echo
[[ $status == 0 ]] && echo "gpu-check: all steps passed" || echo "gpu-check: some steps FAILED"
exit $status
