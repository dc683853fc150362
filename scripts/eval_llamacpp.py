#!/usr/bin/env python3
"""HumanEval completions from llama.cpp (llama-cpp-python) on the same GGUF file, greedy, with
`demiurgic eval run`'s prompts, stop strings and token limit: a peer check of what the model does
on HumanEval, independent of our kernels and sampler. Writes target/eval/llamacpp-greedy.jsonl
(the harness's format) and scores it with `demiurgic eval score`.

usage: target/bench/venv/bin/python scripts/eval_llamacpp.py [MODEL.gguf] [path/to/demiurgic]
(the peer venv of `cargo xtask bench` has llama-cpp-python)
"""
import gzip
import json
import os
import subprocess
import sys
import time

from llama_cpp import Llama

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "demiurgic")
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
BIN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target", "release", "demiurgic")
PROBLEMS = os.path.join(CACHE, "HumanEval.jsonl.gz")
STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]

m = Llama(model_path=MODEL, n_ctx=2048, n_threads=1, verbose=False)
tasks = [json.loads(l) for l in gzip.open(PROBLEMS, "rt")]
out = os.path.join(ROOT, "target", "eval", "llamacpp-greedy.jsonl")
os.makedirs(os.path.dirname(out), exist_ok=True)
t = time.time()
with open(out, "w") as f:
    for task in tasks:
        r = m.create_completion(task["prompt"], max_tokens=384, temperature=0.0, top_k=1, stop=STOPS)
        f.write(json.dumps({"task_id": task["task_id"], "completion": r["choices"][0]["text"]}) + "\n")
print(f"llama.cpp: {len(tasks)} greedy completions in {time.time() - t:.0f} s -> {out}", file=sys.stderr)
subprocess.run([BIN, "eval", "score", "--problems", PROBLEMS, "--completions", out], check=True)
