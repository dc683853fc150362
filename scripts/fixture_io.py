"""What the fixture scripts share (make_fixtures.py, llamacpp_crosscheck.py): the fixture folder,
the default model's path, reading and writing fixtures, `--check` (compare, write nothing) and the
job runner that fails when a committed value moved."""
import json
import math
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "tests", "fixtures")
MODEL = os.path.expanduser(
    os.path.join(os.environ.get("DEMIURGIC_HOME", "~/.cache/demiurgic"), "SmolLM2-135M-Instruct.Q4_1.gguf")
)
CHECK = "--check" in sys.argv
moved = []


def load(name):
    with open(os.path.join(FIX, name)) as f:
        return json.load(f)


def load_or(name, default):
    return load(name) if os.path.exists(os.path.join(FIX, name)) else default


def save(name, data):
    if CHECK:
        return
    with open(os.path.join(FIX, name), "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"wrote tests/fixtures/{name}")


def diff(a, b):
    """Max abs difference of two nested number lists (null = -inf must match exactly)."""
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return math.inf
        return max([diff(x, y) for x, y in zip(a, b)] + [0.0])
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    return 0.0 if a == b else math.inf


def compare(name, old, new):
    """Print how far a recomputed value is from the committed one; record it when it moved by
    more than 1e-4. A new case (nothing committed) has nothing to compare."""
    if old is None:
        return
    d = diff(old, new)
    print(f"{name}: max difference to the committed file {d:.3g}")
    if d > 1e-4:
        moved.append(name)


def run(jobs, names, what="fixture"):
    """Run the named jobs (`all`: every one); exit 1 when a committed value moved."""
    for n in names or ["all"]:
        for job in jobs if n == "all" else [n]:
            if job not in jobs:
                raise SystemExit(f"unknown {what} {job} (allowed: {', '.join(jobs)}, all)")
            jobs[job]()
    if moved:
        print("moved by more than 1e-4:", ", ".join(moved))
        sys.exit(1)
