#!/usr/bin/env python3
"""Q8_0 and Q4_0 variants of the default model for `cargo xtask bench --model` (the speed issue's
"the same on a Q8_0 and a Q4_0 file"), made with llama.cpp's own quantizer through
llama-cpp-python (the bench venv). The source is the Q4_1 file, so the weights are requantized
from Q4_1 (`allow_requantize`): fine for speed comparisons, not for quality ones. `pure` keeps
every tensor in the target type (no mixed K-quant choices), the embedding included.

usage: python scripts/make_quant_variants.py SRC.gguf OUT_DIR
"""
import ctypes
import os
import sys

import llama_cpp


def main():
    src, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    for name, ftype in [("Q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), ("Q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0)]:
        dst = os.path.join(out_dir, f"SmolLM2-135M-Instruct.{name}.gguf")
        if os.path.exists(dst):
            print(dst)
            continue
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = ftype
        p.allow_requantize = True
        p.pure = True
        p.nthread = os.cpu_count() or 1
        rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
        if rc != 0:
            sys.exit(f"llama_model_quantize {name} failed ({rc})")
        print(dst)


if __name__ == "__main__":
    main()
