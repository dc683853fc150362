#!/usr/bin/env bash
# Prepare a GPU lease (the workplace's `device` tool: a machine with an NVIDIA GPU, no Rust, no
# network, 64 MiB per transfer with the working tree) from a machine that builds:
#   1. builds `demiurgic` (cuda + host-profile) and the cross-backend suite in release, with
#      CUDARC_CUDA_VERSION (default 13000: driver 580 / CUDA 13.0), and xz-compresses both;
#   2. writes the default model's GGUF header (metadata, tokenizer, tensor table: 1.8 MB of the
#      98 MB file) — on the device `run.sh` zero-fills the tensors back to the file's size: a model
#      of the same shape (same kernels, launches and bytes moved; not the same tokens), because the
#      real file does not fit one transfer beside the tree;
#   3. copies run.sh / common.sh, all into .gpu/ (ignored through .git/info/exclude).
# Then: the device tool's `run` with carry [".gpu"] and command `bash .gpu/run.sh 2>&1 | tee $OUT/run.log`
# (about 5 minutes of device time with the start; BENCHMARKS.md's H200 section came from it).
set -euo pipefail
cd "$(dirname "$0")/../.."
G=.gpu
mkdir -p "$G"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
F=flex,ndarray,cuda
cargo build --release -p demiurgic-runner --no-default-features --features "$F,host-profile"
SUITE=$(cargo test --release -p demiurgic-tests --no-default-features --features "$F" --test suite --no-run \
  --message-format=json 2>/dev/null | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("executable") and m.get("target",{}).get("name")=="suite": print(m["executable"])')
cp target/release/demiurgic "$G/demiurgic"   # symbols kept: the host profile names functions
cp "$SUITE" "$G/suite" && strip "$G/suite"
xz -T0 -3 -f "$G/demiurgic" "$G/suite"
MODEL=$(target/release/demiurgic fetch-model)
python3 - "$MODEL" "$G/m.head" <<'PY'
import struct, sys
src, dst = sys.argv[1], sys.argv[2]
f = open(src, "rb")
def r(fmt):
    return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))
assert f.read(4) == b"GGUF", "not a GGUF file"
version, = r("I"); n_tensors, n_kv = r("QQ")
def rs():
    n, = r("Q"); return f.read(n)
size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def value(t):
    if t == 8: return rs()
    if t == 9:
        at, = r("I"); n, = r("Q")
        return [value(at) for _ in range(n)]
    return f.read(size[t])
align = 32
for _ in range(n_kv):
    key = rs(); t, = r("I"); v = value(t)
    if key == b"general.alignment": align = struct.unpack("<I", v)[0]
for _ in range(n_tensors):
    rs(); nd, = r("I"); r("Q" * nd); r("I"); r("Q")
data = (f.tell() + align - 1) // align * align
f.seek(0); open(dst, "wb").write(f.read(data))
import os; open(dst + ".size", "w").write(str(os.path.getsize(src)))
print(f"{dst}: {data} bytes of header; tensors zero-filled to {os.path.getsize(src)} on the device")
PY
cp scripts/gpu-lease/run.sh scripts/gpu-lease/common.sh "$G/"
du -ch "$G"/* | tail -1
