#!/usr/bin/env bash
# Sourced by gpu-check.sh: where the CUDA driver, NVRTC and the toolkit headers are.
# NVRTC/driver libraries: the toolkit's, and pip's nvidia-* wheels where PyTorch is installed
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d $d ]] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
if command -v python3 >/dev/null; then
  for d in $(python3 - <<'EOF' 2>/dev/null
import glob, site, os
for s in site.getsitepackages():
    for d in glob.glob(os.path.join(s, "nvidia", "*", "lib")):
        print(d)
EOF
); do export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
fi

# cubecl-cuda compiles kernels with NVRTC against the toolkit's headers: $CUDA_PATH/include
if [[ -z "${CUDA_PATH:-}" && ! -d /usr/local/cuda ]] && command -v nvcc >/dev/null; then
  export CUDA_PATH="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
fi
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [[ -d $d ]] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done

# no toolkit directory: the headers of pip's nvidia wheels (nvidia/cu13, nvidia/cuda_runtime)
if [[ -z "${CUDA_PATH:-}" && ! -d /usr/local/cuda ]] && command -v python3 >/dev/null; then
  h=$(python3 -c 'import glob,site,os
for s in site.getsitepackages():
    for d in sorted(glob.glob(os.path.join(s,"nvidia","*"))):
        if os.path.exists(os.path.join(d,"include","cuda.h")): print(d); raise SystemExit' 2>/dev/null)
  [[ -n "$h" ]] && export CUDA_PATH="$h"
fi
