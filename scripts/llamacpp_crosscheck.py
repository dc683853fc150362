#!/usr/bin/env python3
"""llama.cpp as a second, independent reference (llama-cpp-python, pinned in
scripts/bench-peers-requirements.txt; `cargo xtask bench --peers` makes the venv).

usage: target/bench/venv/bin/python scripts/llamacpp_crosscheck.py [--check] [samplers|families|int8|all]

  --check   recompute and compare with the committed files, write nothing; exit 1 when a value
            moved by more than 1e-4 (ids: any change).

What it writes (the suite tests our code against each):
  processors.json  `llamacpp` on every case of a sampler llama.cpp has and transformers has not
                   (top_n_sigma, dynamic_temperature, xtc, dry, frequency_presence): each row
                   through llama.cpp's own sampler (llama_sampler_apply, after llama_sampler_accept
                   of the row's history where the sampler reads it). The candidates given to
                   llama.cpp are the row's finite scores (a masked token is not a candidate, as
                   after llama.cpp's truncation samplers); removed or masked tokens are null.
                   A case llama.cpp cannot express gets `llamacpp_not_comparable` with the reason.
  families/*/llamacpp.json  every family GGUF (tests/fixtures/families/*/model.gguf, written by
                   scripts/make_family_ggufs.py) evaluated by llama.cpp on the golden prompts:
                   full-prompt logits. The fixtures carry no tokenizer (prompts are ids), so
                   llama.cpp reads a copy with a placeholder SentencePiece vocabulary added.
  smollm2-llamacpp.json  the default model's file (Q4_1) on llama.cpp's CPU backend, whose
                   Q4_1 dot products quantize activations to 8 bits (q8_1) as our int8 path
                   does: last-prompt logits of the top 20 and greedy ids with llama.cpp's own
                   top-1/top-2 margins (EOS active), KV cache in f32.
"""
import ctypes
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np

import llama_cpp

from fixture_io import FIX, MODEL, compare, diff, load, load_or, run, save

llama_cpp.llama_backend_init()


# ---------------------------------------------------------------- samplers
def apply_sampler(smpl, row, history=()):
    """One row of scores (None = -inf) through a llama.cpp sampler; the row after it (None =
    removed or -inf)."""
    for t in history:
        llama_cpp.llama_sampler_accept(smpl, t)
    cand = [(i, x) for i, x in enumerate(row) if x is not None and math.isfinite(x)]
    arr_t = llama_cpp.llama_token_data * len(cand)
    data = arr_t(*[llama_cpp.llama_token_data(i, x, 0.0) for i, x in cand])
    arr = llama_cpp.llama_token_data_array(data=ctypes.cast(data, llama_cpp.llama_token_data_p), size=len(cand), selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(smpl, ctypes.byref(arr))
    out = [None] * len(row)
    base = ctypes.cast(arr.data, ctypes.c_void_p).value
    size = ctypes.sizeof(llama_cpp.llama_token_data)
    for k in range(arr.size):
        td = llama_cpp.llama_token_data.from_address(base + k * size)
        out[td.id] = None if td.logit == -math.inf else float(td.logit)
    llama_cpp.llama_sampler_free(smpl)
    return out


def sampler_case(c):
    """(llama.cpp's output rows, None) or (None, why not comparable)."""
    name, p = c["processor"], c["params"]
    rows = []
    for r, row in enumerate(c["scores"]):
        ids = c["input_ids"][r]
        if name == "top_n_sigma":
            out = apply_sampler(llama_cpp.llama_sampler_init_top_n_sigma(p["n"]), row)
        elif name == "dynamic_temperature":
            out = apply_sampler(llama_cpp.llama_sampler_init_temp_ext(p["temperature"], p["range"], p["exponent"]), row)
        elif name == "xtc":
            if p["probability"] != 1.0:
                return None, "XTC draws a random number unless probability is 1"
            out = apply_sampler(llama_cpp.llama_sampler_init_xtc(p["probability"], p["threshold"], 1, 0), row)
        elif name == "dry":
            if p["breakers"]:
                return None, "llama.cpp's DRY breakers are strings tokenized with a vocabulary; the case's are token ids"
            # ours: last_n 0 = the whole context; llama.cpp: 0 = DRY off (-1 = its context size, which
            # needs a context): the whole history is passed as its length
            last_n = p["last_n"] if p["last_n"] > 0 else len(ids)
            smpl = llama_cpp.llama_sampler_init_dry(None, p["multiplier"], p["base"], p["allowed_length"], last_n, None, 0)
            out = apply_sampler(smpl, row, ids)
        elif name == "frequency_presence":
            gen = ids[p["prompt_length"]:]
            smpl = llama_cpp.llama_sampler_init_penalties(len(row), len(gen), 1.0, p["frequency_penalty"], p["presence_penalty"])
            out = apply_sampler(smpl, row, gen)
        else:
            raise SystemExit(f"no llama.cpp sampler for {name}")
        rows.append(out)
    return rows, None


LLAMACPP_SAMPLERS = {"top_n_sigma", "dynamic_temperature", "xtc", "dry", "frequency_presence"}


def samplers():
    f = load("processors.json")
    n = 0
    for i, c in enumerate(f["cases"]):
        if c["processor"] not in LLAMACPP_SAMPLERS:
            continue
        rows, why = sampler_case(c)
        if why:
            c.pop("llamacpp", None)
            c["llamacpp_not_comparable"] = why
            print(f"processors.json case {i} ({c['processor']}): not comparable: {why}")
            continue
        compare(f"processors.json case {i} ({c['processor']}) llama.cpp", c.get("llamacpp"), rows)
        # how far llama.cpp is from the expected values written here (shown, not asserted here)
        d = diff(c["expected"], rows)
        print(f"processors.json case {i} ({c['processor']}): llama.cpp vs expected: {d:.3g}")
        c["llamacpp"] = rows
        c.pop("llamacpp_not_comparable", None)
        n += 1
    assert n, "no llama.cpp sampler case"
    save("processors.json", f)


# ---------------------------------------------------------------- model evaluation
def context(path, n_ctx, n_threads=2):
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
    assert model, f"llama.cpp cannot load {path}"
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = n_ctx
    cp.n_ubatch = n_ctx
    cp.n_threads = n_threads
    cp.n_threads_batch = n_threads
    cp.type_k = 0  # GGML_TYPE_F32: no f16 rounding of the cache
    cp.type_v = 0
    cp.flash_attn_type = 0 if hasattr(cp, "flash_attn_type") else None
    ctx = llama_cpp.llama_init_from_model(model, cp)
    assert ctx, "llama.cpp cannot create a context"
    return model, ctx


def n_vocab(model):
    return llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))


def decode(ctx, tokens, pos0, all_logits):
    b = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    b.n_tokens = len(tokens)
    for k, t in enumerate(tokens):
        b.token[k] = t
        b.pos[k] = pos0 + k
        b.n_seq_id[k] = 1
        b.seq_id[k][0] = 0
        b.logits[k] = all_logits or k == len(tokens) - 1
    rc = llama_cpp.llama_decode(ctx, b)
    llama_cpp.llama_batch_free(b)
    assert rc == 0, f"llama_decode returned {rc}"


def logits_at(ctx, i, nv):
    p = llama_cpp.llama_get_logits_ith(ctx, i)
    return [float(p[k]) for k in range(nv)]


def with_placeholder_vocab(src, dst, vocab):
    """A copy of a tokenizer-less GGUF with a SentencePiece vocabulary of `vocab` placeholder
    tokens (llama.cpp needs a vocabulary to size its logits)."""
    import gguf

    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"]
    arch = bytes(arch.parts[arch.data[0]]).decode()
    w = gguf.GGUFWriter(dst, arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        t = field.types[0]
        if t == gguf.GGUFValueType.STRING:
            w.add_string(name, bytes(field.parts[field.data[0]]).decode())
        elif t == gguf.GGUFValueType.ARRAY:
            w.add_array(name, [field.parts[i].tolist()[0] for i in field.data])
        else:
            w.add_key_value(name, field.parts[field.data[0]].tolist()[0], t)
    # <unk> <s> </s>, then byte tokens (llama.cpp's SPM loader looks up <0x0A>), then plain ones
    names = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(3, min(vocab, 256))] + [f"<t{i}>" for i in range(256, vocab)]
    types = [2 if i == 0 else 3 if i in (1, 2) else 6 if i < 256 else 1 for i in range(vocab)]
    if arch == "phi3":
        # llama.cpp's Phi-3 vocabulary setup looks these up by text
        names[vocab - 2], names[vocab - 1] = "<|endoftext|>", "<|end|>"
        types[vocab - 2] = types[vocab - 1] = 3
    w.add_tokenizer_model("llama")
    w.add_token_list(names[:vocab])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data).reshape([int(x) for x in reversed(t.shape)]), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def families():
    root = os.path.join(FIX, "families")
    fams = sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "model.gguf")))
    assert fams, "no family GGUF"
    tmp = tempfile.mkdtemp()
    try:
        for fam in fams:
            cfg = json.load(open(os.path.join(root, fam, "config.json")))
            g = load(f"families/{fam}/golden.json")
            path = os.path.join(tmp, f"{fam}.gguf")
            with_placeholder_vocab(os.path.join(root, fam, "model.gguf"), path, cfg["vocab_size"])
            model, ctx = context(path, 128)
            nv = n_vocab(model)
            assert nv == cfg["vocab_size"], (nv, cfg["vocab_size"])
            name = f"families/{fam}/llamacpp.json"
            old = load_or(name, {"cases": []})
            cases = []
            # llama.cpp's `llama` architecture has no sliding window (Mistral's GGUF carries it as
            # llama.attention.sliding_window, which llama.cpp does not read): past the window its
            # logits are full attention's, so only the positions inside it are comparable
            window = cfg.get("sliding_window") if cfg.get("model_type") == "mistral" else None
            for i, c in enumerate(g["cases"]):
                llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
                decode(ctx, c["prompt"], 0, True)
                n = len(c["prompt"]) if window is None else min(len(c["prompt"]), window)
                logits = [logits_at(ctx, k, nv) for k in range(n)]
                d = diff(c["logits"][:n], logits)
                print(f"{fam} case {i}: llama.cpp vs transformers on {n} of {len(c['prompt'])} positions: {d:.3g}")
                if i < len(old["cases"]):
                    compare(f"{fam} case {i} llama.cpp logits", old["cases"][i]["logits"], logits)
                case = {"prompt": c["prompt"], "logits": logits}
                if n < len(c["prompt"]):
                    case["positions_note"] = (
                        f"first {n} positions: llama.cpp's llama architecture ignores the sliding window of {window}"
                    )
                cases.append(case)
            llama_cpp.llama_free(ctx)
            llama_cpp.llama_model_free(model)
            out = {
                "note": "llama.cpp (llama-cpp-python %s, CPU, f32 KV cache) on model.gguf with a placeholder "
                "vocabulary: full-prompt logits" % llama_cpp.__version__,
                "cases": cases,
            }
            if cfg.get("hidden_activation", cfg.get("hidden_act")) == "gelu_pytorch_tanh":
                # ggml's CPU GELU reads a table of f16 values: llama.cpp itself is ~2e-3 from
                # transformers on these logits (printed above), the exact-GELU tests hold 1e-4
                out["tolerance"] = 5e-3
                out["tolerance_note"] = "ggml's CPU GELU is an f16 lookup table (llama.cpp vs transformers: ~2e-3)"
            save(name, out)
    finally:
        shutil.rmtree(tmp)


# ---------------------------------------------------------------- SmolLM2 Q4_1, llama.cpp's int8 arithmetic
INT8_PROMPTS = [
    "def fibonacci(n):",
    "The capital of France is",
    "Once upon a time, in a small village,",
    "import numpy as np\n\ndef softmax(x):",
    "Water boils at a temperature of",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
]


def int8():
    model, ctx = context(MODEL, 512)
    vocab = llama_cpp.llama_model_get_vocab(model)
    nv = n_vocab(model)
    eos = 2
    name = "smollm2-llamacpp.json"
    old = load_or(name, {"cases": []})
    prompts = [c["prompt"] for c in old["cases"]] or INT8_PROMPTS
    prompts += [p for p in INT8_PROMPTS if p not in prompts]
    cases = []
    for i, prompt in enumerate(prompts):
        buf = (llama_cpp.llama_token * 512)()
        n = llama_cpp.llama_tokenize(vocab, prompt.encode(), len(prompt.encode()), buf, 512, False, True)
        assert n > 0, f"tokenize {prompt!r}: {n}"
        ids = list(buf[:n])
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        decode(ctx, ids, 0, False)
        last = logits_at(ctx, -1, nv)
        top = sorted(range(nv), key=lambda k: -last[k])[:20]
        greedy, margins, cur, pos = [], [], last, len(ids)
        for _ in range(24):
            a, b = sorted(range(nv), key=lambda k: -cur[k])[:2]
            greedy.append(a)
            margins.append(cur[a] - cur[b])
            if a == eos:
                break
            decode(ctx, [a], pos, False)
            pos += 1
            cur = logits_at(ctx, -1, nv)
        new = {
            "prompt": prompt,
            "prompt_ids": ids,
            "last_prompt_top20": {"ids": top, "logits": [last[k] for k in top]},
            "greedy_ids": greedy,
            "top1_top2_margins": margins,
        }
        prev = next((c for c in old["cases"] if c["prompt"] == prompt), None)
        if prev:
            compare(f"smollm2 llama.cpp case {i} ids", [prev["prompt_ids"], prev["greedy_ids"]], [ids, greedy])
            compare(f"smollm2 llama.cpp case {i} logits", prev["last_prompt_top20"]["logits"], new["last_prompt_top20"]["logits"])
        cases.append(new)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    save(
        name,
        {
            "note": "llama.cpp (llama-cpp-python %s, CPU backend, 2 threads, f32 KV cache) on %s: its Q4_1 dot "
            "products quantize activations to q8_1. Prompts tokenized by llama.cpp (parse_special); greedy with "
            "EOS %d active; margins are llama.cpp's own top-1/top-2 logit gaps" % (llama_cpp.__version__, os.path.basename(MODEL), eos),
            "model": os.path.basename(MODEL),
            "eos_token_id": eos,
            "cases": cases,
        },
    )


JOBS = {"samplers": samplers, "families": families, "int8": int8}

if __name__ == "__main__":
    run(JOBS, [a for a in sys.argv[1:] if not a.startswith("--")], "job")
