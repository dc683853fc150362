#!/usr/bin/env python3
"""Load an OpenAI-compatible server: requests/s, tokens/s, latency p50/p99 and time to first
token at several concurrency levels. Standard library only (threads + http.client).

usage: python scripts/bench_serve.py --url http://127.0.0.1:8080 --model NAME [--concurrency 1,8,32]
       [--requests-per-client 4] [--max-tokens 64] --json-out FILE

Every request is a streamed /v1/completions call (temperature 0, `stream_options.include_usage`),
so the time to the first content chunk is the time to first token; prompts cycle through a fixed
list so every server sees the same work.
"""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

PROMPTS = [
    "The history of the printing press",
    "def quicksort(items):",
    "Write a short letter to a friend about",
    "The three laws of thermodynamics are",
    "Once upon a time in a small village",
    "A recipe for tomato soup:",
    "Explain what a hash table is.",
    "The capital cities of Europe include",
]


def one(url, model, prompt, max_tokens):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]}")
    ttft, tokens, chunks = None, 0, 0
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        ev = json.loads(data)
        for ch in ev.get("choices", []):
            if ch.get("text"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
        if ev.get("usage"):
            tokens = ev["usage"]["completion_tokens"]
    c.close()
    total = time.perf_counter() - t0
    # a server that sends no usage: one streamed chunk per token
    return {"latency": total, "ttft": ttft if ttft is not None else total, "tokens": tokens or chunks}


def level(url, model, conc, per_client, max_tokens):
    results, errors = [], []
    lock = threading.Lock()

    def client(k):
        for j in range(per_client):
            p = PROMPTS[(k * per_client + j) % len(PROMPTS)]
            try:
                r = one(url, model, p, max_tokens)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(r["latency"] for r in results)
    ttft = sorted(r["ttft"] for r in results)

    def pct(v, q):
        return v[min(len(v) - 1, int(q * len(v)))] if v else None

    return {
        "concurrency": conc,
        "requests": len(results),
        "errors": len(errors),
        "wall_s": wall,
        "requests_per_s": len(results) / wall,
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "latency_p50_s": statistics.median(lat) if lat else None,
        "latency_p99_s": pct(lat, 0.99),
        "ttft_p50_s": statistics.median(ttft) if ttft else None,
        "ttft_p99_s": pct(ttft, 0.99),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", default="server")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json-out", required=True)
    a = ap.parse_args()
    one(a.url, a.model, "warm-up", 4)
    rows = []
    for conc in [int(x) for x in a.concurrency.split(",")]:
        r = level(a.url, a.model, conc, a.requests_per_client, a.max_tokens)
        r["server"] = a.name
        print(json.dumps(r), flush=True)
        rows.append(r)
    with open(a.json_out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
