#!/usr/bin/env python3
"""Q8_0 and Q4_0 variants of the default model for `cargo xtask bench --model` (the speed issue's
"the same on a Q8_0 and a Q4_0 file"), made with llama.cpp's own `llama-quantize` (built beside
`llama-server` by `cargo xtask bench --llama-cpp`, in ~/.cache/demiurgic/peers/*/bin). The
source is the Q4_1 file, so the weights are requantized from Q4_1 (`--allow-requantize`): fine
for speed comparisons, not for quality ones. `--pure` keeps every tensor in the target type (no
mixed K-quant choices), the embedding included.

usage: python scripts/make_quant_variants.py SRC.gguf OUT_DIR [LLAMA_QUANTIZE]
"""
import glob
import os
import subprocess
import sys


def quantizer():
    if len(sys.argv) > 3:
        return sys.argv[3]
    home = os.environ.get("DEMIURGIC_HOME") or os.path.expanduser("~/.cache/demiurgic")
    found = sorted(glob.glob(os.path.join(home, "peers", "*", "bin", "llama-quantize")))
    if not found:
        sys.exit("llama-quantize not found under the peers cache: run `cargo xtask bench --llama-cpp` first")
    return found[-1]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, out_dir = sys.argv[1], sys.argv[2]
    tool = quantizer()
    os.makedirs(out_dir, exist_ok=True)
    for name in ["Q8_0", "Q4_0"]:
        dst = os.path.join(out_dir, f"SmolLM2-135M-Instruct.{name}.gguf")
        if not os.path.exists(dst):
            r = subprocess.run([tool, "--allow-requantize", "--pure", src, dst, name], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"llama-quantize {name} failed ({r.returncode}):\n{r.stderr[-2000:]}")
        print(dst)


if __name__ == "__main__":
    main()
