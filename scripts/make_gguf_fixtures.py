#!/usr/bin/env python3
"""Reference values for the GGUF dequantization tests, from an independent implementation:
the `gguf` PyPI package (llama.cpp's gguf-py, `gguf.quants.dequantize`).

For every block type: random block bytes (scale fields set to sane f16 values), dequantized by
gguf-py. Also a small GGUF file with one metadata key of every value type, written by gguf-py's
GGUFWriter. Run: pip install gguf==0.19.0 numpy && python3 scripts/make_gguf_fixtures.py
"""
import json, os
import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter, GGML_QUANT_SIZES
from gguf.quants import dequantize

rng = np.random.default_rng(1234)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")

def f16(x):
    return np.array([x], dtype=np.float16).tobytes()

# byte offsets of f16 scale fields inside one block
SCALES = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
cases = []
for name, offs in SCALES.items():
    qt = T[name]
    block_elems, block_bytes = GGML_QUANT_SIZES[qt]
    nblocks = 3
    raw = bytearray(rng.integers(0, 256, size=nblocks * block_bytes, dtype=np.uint8).tobytes())
    for b in range(nblocks):
        for o in offs:
            raw[b * block_bytes + o: b * block_bytes + o + 2] = f16(float(rng.uniform(-0.5, 0.5)))
    vals = dequantize(np.frombuffer(bytes(raw), dtype=np.uint8).reshape(1, -1), qt).reshape(-1)
    cases.append({"type": name, "ggml_type": int(qt), "n": int(vals.size), "hex": bytes(raw).hex(),
                  "values": [float(v) for v in vals]})
for name, dt in [("F16", np.float16), ("F32", np.float32)]:
    v = rng.standard_normal(16).astype(dt)
    cases.append({"type": name, "ggml_type": int(T[name]), "n": 16, "hex": v.tobytes().hex(),
                  "values": [float(x) for x in v.astype(np.float32)]})
v = rng.standard_normal(16).astype(np.float32)
bf = (v.view(np.uint32) >> 16).astype(np.uint16)
cases.append({"type": "BF16", "ggml_type": int(T["BF16"]), "n": 16, "hex": bf.tobytes().hex(),
              "values": [float(x) for x in (bf.astype(np.uint32) << 16).view(np.float32)]})
with open(os.path.join(OUT, "gguf-dequant.json"), "w") as f:
    json.dump({"note": "dequantized by gguf-py (gguf.quants.dequantize)", "cases": cases}, f)

# one metadata key of every value type + one small tensor
w = GGUFWriter(os.path.join(OUT, "all-types.gguf"), "llama")
w.add_uint8("t.u8", 200); w.add_int8("t.i8", -100); w.add_uint16("t.u16", 60000); w.add_int16("t.i16", -30000)
w.add_uint32("t.u32", 4000000000); w.add_int32("t.i32", -2000000000); w.add_float32("t.f32", 1.5)
w.add_bool("t.bool", True); w.add_string("t.str", "héllo 🦀"); w.add_array("t.arr", [1, 2, 3])
w.add_array("t.strs", ["a", "bc"]); w.add_uint64("t.u64", 2**40); w.add_int64("t.i64", -2**40); w.add_float64("t.f64", 0.25)
w.add_tensor("x", np.arange(8, dtype=np.float32).reshape(2, 4))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print("wrote", OUT)
