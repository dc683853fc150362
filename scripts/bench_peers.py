#!/usr/bin/env python3
"""Peers for `cargo xtask bench --peers`: the same measurements as `demiurgic bench`, on the same
GGUF file, prompt passage, thread count and shapes, with

- HF transformers (PyTorch, f32: the GGUF is dequantized by transformers at load, as ours), and
- llama.cpp through llama-cpp-python (weights stay Q4_1).

Greedy, EOS never stops a run (min_new_tokens / counted loops), warm-up excluded, median of reps.
Writes {"peers": [{"name", "version", "cache_speedup", "decode", "prefill", "notes"}]}.
"""
import argparse
import json
import os
import statistics
import sys
import time

# the same passage as crates/runner/src/bench.rs
PASSAGE = (
    "The quick brown fox jumps over the lazy dog. In computer science, a linked list is a "
    "linear collection of data elements whose order is not given by their physical placement in memory. "
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    "Language models predict the next token from the previous ones; a cache of keys and values avoids "
    "recomputing the past at every step. "
)
PROMPT_LEN = 16


def prompt_of(n, base, shift):
    return [base[(i + shift) % len(base)] for i in range(n)]


def med(f, reps):
    return statistics.median(f() for _ in range(reps))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def plan(quick, reps, contexts=None):
    return dict(
        contexts=contexts or [],
        cache_lengths=[50, 100] if quick else [50, 100, 200, 512],
        batches=[1, 4] if quick else [1, 4, 16],
        prefill=[128] if quick else [128, 512],
        decode_tokens=32 if quick else 64,
        reps=reps or (3 if quick else 5),
    )


def bench_transformers(model_path, threads, p):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    d, f = os.path.dirname(os.path.abspath(model_path)), os.path.basename(model_path)
    log(f"transformers {transformers.__version__} / torch {torch.__version__}: loading {f} (dequantized to f32)")
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    base = tok(PASSAGE, add_special_tokens=False)["input_ids"]

    def gen(rows, n, use_cache):
        ids = torch.tensor(rows)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, use_cache=use_cache, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + n, out.shape
        return time.perf_counter() - t

    cache = []
    one = [prompt_of(PROMPT_LEN, base, 0)]
    for n in p["cache_lengths"]:
        row = {"new_tokens": n, "prompt_tokens": PROMPT_LEN}
        for use_cache, key in [(True, "cache_s"), (False, "no_cache_s")]:
            gen(one, min(n, 8), use_cache)
            reps = p["reps"] if use_cache else 1
            row[key] = med(lambda: gen(one, n, use_cache), reps)
            log(f"transformers {n} tokens cache={use_cache}: {row[key]:.3f} s")
        row["speedup"] = row["no_cache_s"] / row["cache_s"]
        cache.append(row)

    decode = []
    T = p["decode_tokens"]
    for b in p["batches"]:
        rows = [prompt_of(PROMPT_LEN, base, 7 * i) for i in range(b)]
        gen(rows, T, True)
        # decode time = generate(T) - generate(1) (the prefill and first token)
        full = med(lambda: gen(rows, T, True), p["reps"])
        first = med(lambda: gen(rows, 1, True), p["reps"])
        tps = b * (T - 1) / (full - first)
        decode.append({"batch": b, "new_tokens": T, "tokens_per_s": tps, "ms_per_step": 1e3 * b / tps})
        log(f"transformers decode batch {b}: {tps:.1f} tokens/s")

    prefill = []
    for n in p["prefill"]:
        ids = torch.tensor([prompt_of(n, base, 3)])

        def fwd():
            t = time.perf_counter()
            with torch.no_grad():
                model(ids, use_cache=True)
            return time.perf_counter() - t

        fwd()
        tps = n / med(fwd, p["reps"])
        prefill.append({"prompt_tokens": n, "tokens_per_s": tps})
        log(f"transformers prefill {n}: {tps:.1f} tokens/s")
    return {"name": "transformers", "version": f"transformers {transformers.__version__}, torch {torch.__version__}",
            "threads": threads, "cache_speedup": cache, "decode": decode, "prefill": prefill,
            "notes": "f32 weights dequantized from the same GGUF; decode = (generate(T) - generate(1)) time"}


def bench_llama_cpp(model_path, threads, p):
    import numpy as np
    import llama_cpp

    log(f"llama-cpp-python {llama_cpp.__version__}: loading {model_path} (weights stay quantized)")
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=2048, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    base = llm.tokenize(PASSAGE.encode(), add_bos=False, special=False)

    def last_argmax():
        return int(np.argmax(llm.scores[llm.n_tokens - 1]))

    def gen_cached(prompt, n):
        t = time.perf_counter()
        llm.reset()
        llm.eval(prompt)
        for i in range(n):
            tok = last_argmax()
            if i + 1 < n:
                llm.eval([tok])
        return time.perf_counter() - t

    def gen_uncached(prompt, n):
        # no KV cache: the whole sequence is evaluated again for every new token
        t = time.perf_counter()
        seq = list(prompt)
        for _ in range(n):
            llm.reset()
            llm.eval(seq)
            seq.append(last_argmax())
        return time.perf_counter() - t

    cache = []
    one = prompt_of(PROMPT_LEN, base, 0)
    for n in p["cache_lengths"]:
        row = {"new_tokens": n, "prompt_tokens": PROMPT_LEN}
        for f, key, cached in [(gen_cached, "cache_s", True), (gen_uncached, "no_cache_s", False)]:
            f(one, min(n, 8))
            reps = p["reps"] if cached else 1
            row[key] = med(lambda: f(one, n), reps)
            log(f"llama.cpp {n} tokens cache={cached}: {row[key]:.3f} s")
        row["speedup"] = row["no_cache_s"] / row["cache_s"]
        cache.append(row)

    T = p["decode_tokens"]
    gen_cached(one, T)
    full = med(lambda: gen_cached(one, T), p["reps"])
    first = med(lambda: gen_cached(one, 1), p["reps"])
    tps = (T - 1) / (full - first)
    decode = [{"batch": 1, "new_tokens": T, "tokens_per_s": tps, "ms_per_step": 1e3 / tps}]
    log(f"llama.cpp decode batch 1: {tps:.1f} tokens/s")

    prefill = []
    for n in p["prefill"]:
        prompt = prompt_of(n, base, 3)

        def fwd():
            llm.reset()
            t = time.perf_counter()
            llm.eval(prompt)
            return time.perf_counter() - t

        fwd()
        tps = n / med(fwd, p["reps"])
        prefill.append({"prompt_tokens": n, "tokens_per_s": tps})
        log(f"llama.cpp prefill {n}: {tps:.1f} tokens/s")
    context = llama_cpp_context(model_path, threads, p, flash_attn=False)
    return {"name": "llama.cpp", "version": f"llama-cpp-python {llama_cpp.__version__}", "threads": threads,
            "cache_speedup": cache, "decode": decode, "prefill": prefill, "context": context,
            "notes": "Q4_1 weights as stored; batch 1 only (the Python API decodes one sequence); "
                     "no-cache = re-evaluate the whole sequence per token"}


def llama_cpp_context(model_path, threads, p, flash_attn):
    """Batch-1 decode after a long prompt: llama.cpp's default KV cache (f16), a context sized to it."""
    import numpy as np
    import llama_cpp

    context = []
    T = p["decode_tokens"]
    for c in p["contexts"]:
        big = llama_cpp.Llama(model_path=model_path, n_ctx=c + T + 16, n_batch=512, n_threads=threads,
                              n_threads_batch=threads, flash_attn=flash_attn, verbose=False)
        prompt = prompt_of(c, big.tokenize(PASSAGE.encode(), add_bos=False, special=False), 11)

        def dec():
            big.reset()
            big.eval(prompt)
            t = time.perf_counter()
            for _ in range(T - 1):
                # the last position's logits (llama-cpp-python 0.3.36 keeps `scores` only with logits_all)
                last = np.ctypeslib.as_array(big._ctx.get_logits(), shape=(big.n_vocab(),))
                big.eval([int(np.argmax(last))])
            return (T - 1) / (time.perf_counter() - t)

        if not context:
            dec()
        tps = med(dec, p["reps"])
        context.append({"context_tokens": c, "new_tokens": T, "tokens_per_s": tps, "cache_type": "f16"})
        log(f"llama.cpp (flash_attn={flash_attn}) decode after {c} tokens of context: {tps:.1f} tokens/s")
        del big
    return context


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--only", choices=["transformers", "llama.cpp"])
    ap.add_argument("--contexts", help="batch-1 decode after prompts this long (llama.cpp), e.g. 256,4096")
    a = ap.parse_args()
    if a.threads < 1:
        sys.exit(f"--threads must be at least 1, got {a.threads}")
    contexts = [int(x) for x in a.contexts.split(",")] if a.contexts else []
    if any(c < 1 for c in contexts):
        sys.exit(f"--contexts must be positive prompt lengths, got {a.contexts}")
    p = plan(a.quick, a.reps, contexts)
    peers = []
    if a.only in (None, "transformers"):
        peers.append(bench_transformers(a.model, a.threads, p))
    if a.only in (None, "llama.cpp"):
        peers.append(bench_llama_cpp(a.model, a.threads, p))
        if contexts:
            # llama.cpp's own tools default to flash attention where the backend has it (-fa auto)
            peers.append({"name": "llama.cpp -fa", "threads": a.threads,
                          "context": llama_cpp_context(a.model, a.threads, p, flash_attn=True)})
    with open(a.json_out, "w") as f:
        json.dump({"peers": peers}, f, indent=2)


if __name__ == "__main__":
    main()
