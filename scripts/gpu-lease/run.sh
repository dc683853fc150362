#!/usr/bin/env bash
# One GPU lease (see pack.sh): bench, launches per step, per-kernel times, host profile, the
# suite's fixture tests on cuda, long-context decode. ~4–5 minutes; everything lands in $OUT.
set -uo pipefail
source "$(dirname "$0")/common.sh"
step machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; ./demiurgic backends
step "bench on cuda (same-shape model)"
timeout 170 ./demiurgic bench --backend cuda --model shape.gguf --batches 1,4,16 --prefill 128,512 --reps 3 \
  --profile --host-profile "$OUT/host.txt" --json-out "$OUT/bench.json" 2>&1 | grep -v '^ \|^{\|^}' | tail -5
python3 - "$OUT/bench.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("cache_speedup", "decode", "prefill", "memory"): print(k, json.dumps(d[k]))
p = d["profile"]; print("decode ms/token", p["decode_ms_per_token"])
for o in p["ops"]:
    if o["calls_per_token"]: print("  ", o["op"], round(o["ms_per_token"], 4), o["calls_per_token"])
PY
head -12 "$OUT/host.txt"
step "launches per decode step"
launch_table "$G/shape.gguf" shape
step "per-kernel device times (cubecl profiling level basic), 24 tokens"
mkdir -p "$G/kt" && cd "$G/kt"
printf '[profiling]\nlogger = { level = "basic", file = "kernels.log" }\n' > cubecl.toml
timeout 60 "$G/demiurgic" generate --backend cuda --model "$G/shape.gguf" --prompt "The quick brown fox" --greedy \
  --max-new-tokens 24 --eos-token-id 49151 --json > gen.json 2> gen.err || tail -5 gen.err
cp kernels.log "$OUT/kernels.log"; tail -14 kernels.log; cd "$G"
step "suite on cuda (fixtures; the real-model cases need the model file)"
timeout 150 ./suite --test-threads 1 cuda --skip smollm2 --skip gemma3_270m --skip speculative_greedy 2>&1 \
  | tee "$OUT/suite.log" | grep -E "FAILED|panicked|test result|differ|vs" | head -30
step "long-context decode on cuda (same-shape model)"
timeout 60 ./demiurgic bench --backend cuda --model shape.gguf --quick --cache-lengths 8 --batches 1 --prefill 16 \
  --reps 2 --contexts 1024,4096 --json-out "$OUT/context.json" 2>&1 | grep "context" | tail -3
step done
