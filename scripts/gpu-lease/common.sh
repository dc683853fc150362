# Sourced by run.sh on the GPU machine: unpack the binaries, the CUDA environment, helpers.
R=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
G=$R/.gpu
cd "$G"
step() { echo; echo "=== $* ($(date +%T))"; }
unpack() {
  [[ -x $1 && ! $1.xz -nt $1 ]] && return 0
  xz -dc "$1.xz" > "$1" 2>/dev/null || python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$1.xz'), open('$1','wb'))"
  chmod +x "$1"
}
unpack demiurgic
unpack suite
source "$R/scripts/cuda-env.sh"
export DEMIURGIC_FIXTURES=$R/tests/fixtures DEMIURGIC_BIN=$G/demiurgic DEMIURGIC_HOME=$G/home
mkdir -p "$DEMIURGIC_HOME"
# the same-shape model: the real header, tensors zero-filled (pack.sh)
cp m.head shape.gguf && truncate -s "$(cat m.head.size)" shape.gguf
# launches of a greedy generation of N tokens on cuda, counted with CubeCL's profiling logger
launches() { # model n tag
  local d=$G/prof-$3-$2; rm -rf "$d"; mkdir -p "$d"; cd "$d"
  printf '[profiling]\nlogger = { level = "minimal", file = "launches.log" }\n' > cubecl.toml
  timeout 60 "$G/demiurgic" generate --backend cuda --model "$1" --prompt "The quick brown fox" --greedy \
    --max-new-tokens "$2" --eos-token-id 49151 --json > gen.json 2> gen.err || { echo "generate failed"; tail -5 gen.err; }
  cd "$G"
}
# kernels per decode step: the launches of 24 new tokens minus those of 8, over 16
launch_table() { # model tag
  launches "$1" 8 "$2"; launches "$1" 24 "$2"
  python3 - "$G/prof-$2-8/launches.log" "$G/prof-$2-24/launches.log" <<'PY'
import sys, collections
a = open(sys.argv[1]).read().splitlines(); b = open(sys.argv[2]).read().splitlines()
print(f"launch lines: 8 tokens {len(a)}, 24 tokens {len(b)}; per decode step {(len(b)-len(a))/16:.1f}")
ca, cb = collections.Counter(a), collections.Counter(b)
for k in sorted(cb, key=lambda k: -(cb[k] - ca.get(k, 0))):
    d = (cb[k] - ca.get(k, 0)) / 16
    if d: print(f"  {d:7.2f}  {k}")
PY
}
