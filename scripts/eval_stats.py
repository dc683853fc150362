#!/usr/bin/env python3
"""pass@1 with its 95% interval, pass@k and the paired comparisons of presets from scored
completion files: a line-for-line port of crates/runner/src/eval/stats.rs (the same estimator,
SplitMix64 resampling with the same seed, 10,000 resamples), for tables whose `demiurgic eval run`
did not finish (its report is printed at the end).

usage: for p in greedy baseline; do demiurgic eval score --json --completions DIR/$p.jsonl > $p.json; done
       python3 scripts/eval_stats.py greedy=greedy.json baseline=baseline.json
"""
import json, sys
M = (1 << 64) - 1
def splitmix(seed):
    s = seed
    while True:
        s = (s + 0x9e3779b97f4a7c15) & M
        z = s
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
        yield z ^ (z >> 31)
def boot(values):
    n = len(values); g = splitmix(0x5eed_e7a1); means = []
    for _ in range(10000):
        t = 0.0
        for _ in range(n):
            t += values[((next(g) >> 32) * n) >> 32]
        means.append(t / n)
    means.sort()
    return means[round(0.025 * 9999)], means[round(0.975 * 9999)]
def pak(n, c, k):
    if n - c < k: return 1.0
    p = 1.0
    for i in range(n - c + 1, n + 1): p *= 1.0 - k / i
    return 1.0 - p
ids = None; per = {}
args = [a.split("=", 1) for a in sys.argv[1:]]
if not args or any(len(a) != 2 for a in args):
    sys.exit("usage: eval_stats.py PRESET=SCORED.json ...")
for name, path in args:
    r = json.load(open(path))
    order = []; d = {}
    for row in r["results"]:
        if row["task_id"] not in d: order.append(row["task_id"]); d[row["task_id"]] = [0, 0]
        d[row["task_id"]][0] += 1; d[row["task_id"]][1] += row["passed"]
    ids = ids or order
    assert order == ids
    pp = [tuple(d[i]) for i in ids]; per[name] = pp
    p1 = [pak(n, c, 1) for n, c in pp]
    mean = sum(p1) / len(p1)
    ci = boot(p1)
    ks = {k: sum(pak(n, c, k) for n, c in pp) / len(pp) for k in [1, 2, 5, 10] if k <= min(n for n, _ in pp)}
    print(json.dumps({"preset": name, "pass@1": mean, "ci": ci, "pass@k": ks, "solved": sum(c > 0 for _, c in pp), "passed": sum(c for _, c in pp)}))
names = [a[0] for a in args]
for i, a in enumerate(names):
    for b in names[i + 1:]:
        dd = [pak(*x, 1) - pak(*y, 1) for x, y in zip(per[a], per[b])]
        ci = (0.0, 0.0) if all(v == 0 for v in dd) else boot(dd)
        oa = [t.split('/')[1] for t, x, y in zip(ids, per[a], per[b]) if x[1] > 0 and y[1] == 0]
        ob = [t.split('/')[1] for t, x, y in zip(ids, per[a], per[b]) if y[1] > 0 and x[1] == 0]
        order = f"{a} > {b}" if ci[0] > 0 else f"{b} > {a}" if ci[1] < 0 else "no order: the interval holds 0"
        print(json.dumps({"a": a, "b": b, "delta": sum(dd) / len(dd), "ci": ci, "only_a": oa, "only_b": ob, "order": order}))
