#!/usr/bin/env python3
"""Regenerates the transformers-made fixtures the suite relies on, so anyone can add a case.

Each fixture keeps its inputs (prompts, scores, conversations) in the committed JSON; this script
recomputes every expected value from those inputs with transformers (5.24 / torch 2.15, as the
shared fixtures were made) and appends the new cases listed below. To add a case: append its
inputs to the JSON (or to a NEW_* list here) and run the script.

usage (the bench venv has transformers, torch, gguf: `cargo xtask bench --peers` makes it, with
the versions pinned in scripts/bench-peers-requirements.txt):
  target/bench/venv/bin/python scripts/make_fixtures.py [--check] \
      [processors|tiny|smollm2|chat|stops|families|beam|tokenizer|all]
  target/bench/venv/bin/python scripts/make_fixtures.py new-family NAME CONFIG.json

  --check   recompute and compare with the committed files (max difference per fixture),
            write nothing; exits 1 when a value moved by more than 1e-4.

Fixtures (under tests/fixtures/):
  processors.json       transformers' logits processors on random scores (+ OpenAI frequency /
                        presence penalty formula, + logit bias = SequenceBiasLogitsProcessor with
                        one-token sequences, + banned tokens = NoBadWordsLogitsProcessor)
  tiny-llama/golden.json  full-prompt logits and greedy continuations (EOS active) of tiny-llama
  smollm2-golden.json   SmolLM2-135M-Instruct Q4_1 (dequantized by transformers' GGUF loader):
                        greedy ids/text, top-1/top-2 margins, last-prompt top-5
  chat-template.json    apply_chat_template of the default model on a few conversations
  stop-strings.json     where transformers' StopStringCriteria stops on token sequences of the
                        default model's tokenizer, and where the stop string first appears in
                        the decoded text
  families/*/golden.json  each tiny random family checkpoint (config.json + model.safetensors, as
                        transformers saved them): full-prompt logits and greedy 16 (EOS active)
                        for every case's prompt. `new-family NAME CONFIG.json` makes a new
                        checkpoint (seeded random init, saved by transformers) with the qwen2
                        cases' prompts; then run `families` to fill its golden.json, and
                        scripts/make_family_ggufs.py for its GGUF
  beam/*.json           transformers generate(num_beams=...) on tiny-llama and SmolLM2 for every
                        case's prompt and options: sequences (cut after the first EOS) and
                        sequences_scores
  tokenizer.json        the default model's tokenizer (transformers' GGUF loader): ids of varied
                        texts (CJK, emoji, accents, code, digits, special tokens)
"""
import json
import math
import os
import sys

import torch

from fixture_io import FIX, MODEL, compare, load, load_or, run, save


def nums(x):
    """-inf as null (JSON has no infinities)."""
    if isinstance(x, list):
        return [nums(v) for v in x]
    return None if x == -math.inf else float(x)


# ---------------------------------------------------------------- processors
def processor(name, p):
    import transformers.generation.logits_process as lp

    if name == "repetition_penalty":
        return lp.RepetitionPenaltyLogitsProcessor(p["penalty"])
    if name == "temperature":
        return lp.TemperatureLogitsWarper(p["temperature"])
    if name == "top_k":
        return lp.TopKLogitsWarper(p["top_k"])
    if name == "top_p":
        return lp.TopPLogitsWarper(p["top_p"])
    if name == "typical_p":
        return lp.TypicalLogitsWarper(p["typical_p"])
    if name == "min_p":
        return lp.MinPLogitsWarper(p["min_p"])
    if name == "min_length":
        return lp.MinLengthLogitsProcessor(p["min_length"], p["eos_token_id"])
    if name == "min_new_tokens":
        return lp.MinNewTokensLengthLogitsProcessor(p["prompt_length"], p["min_new_tokens"], p["eos_token_id"])
    if name == "no_repeat_ngram_size":
        return lp.NoRepeatNGramLogitsProcessor(p["ngram_size"])
    if name == "logit_bias":
        # OpenAI logit_bias: transformers' SequenceBiasLogitsProcessor with one-token sequences
        return lp.SequenceBiasLogitsProcessor([[[int(t)], float(b)] for t, b in p["bias"].items()])
    if name == "banned_tokens":
        return lp.NoBadWordsLogitsProcessor([[t] for t in p["ids"]], eos_token_id=p.get("eos_token_id"))
    if name == "epsilon_cutoff":
        return lp.EpsilonLogitsWarper(p["epsilon"])
    if name == "eta_cutoff":
        return lp.EtaLogitsWarper(p["eta"])
    if name == "exponential_decay_length_penalty":
        return lp.ExponentialDecayLengthPenalty((p["start_index"], p["decay_factor"]), p["eos_token_id"], p["prompt_length"])
    if name == "sequence_bias":
        return lp.SequenceBiasLogitsProcessor([[s, float(b)] for s, b in p["sequences"]])
    if name == "suppress_tokens":
        return lp.SuppressTokensLogitsProcessor(p["ids"])
    if name == "begin_suppress_tokens":
        return lp.SuppressTokensAtBeginLogitsProcessor(p["ids"], p["begin_index"])
    # llama.cpp's samplers (no transformers processor): the published algorithms, written out
    # here from llama.cpp's src/llama-sampling.cpp, naively (the Rust side is vectorised / uses
    # the Z-algorithm)
    if name == "top_n_sigma":
        def f(ids, scores):
            out = scores.clone()
            for r in range(scores.shape[0]):
                row = scores[r].double()
                fin = row[torch.isfinite(row)]
                mx, mean = fin.max(), fin.mean()
                std = ((fin - mean) ** 2).mean().sqrt()
                out[r][row < mx - p["n"] * std] = -math.inf
            return out
        return f
    if name == "dynamic_temperature":
        def f(ids, scores):
            out = scores.clone()
            t, rng, ex = p["temperature"], p["range"], p["exponent"]
            lo, hi = max(0.0, t - rng), t + rng
            for r in range(scores.shape[0]):
                row = scores[r].double()
                n = int(torch.isfinite(row).sum())
                if n <= 1:
                    continue
                pr = torch.softmax(row, 0)
                h = -sum(float(q) * math.log(float(q)) for q in pr if q > 0)
                dyn = lo + (hi - lo) * (h / math.log(n)) ** ex
                out[r] = (row / dyn).float()
            return out
        return f
    if name == "xtc":
        assert p["probability"] == 1.0, "the fixture uses probability 1 (no draw)"
        def f(ids, scores):
            out = scores.clone()
            for r in range(scores.shape[0]):
                pr = torch.softmax(scores[r].double(), 0)
                order = sorted(range(len(pr)), key=lambda i: -float(pr[i]))
                pos_last = 0
                for k, i in enumerate(order):
                    if pr[i] >= p["threshold"]:
                        pos_last = k
                    else:
                        break
                if pos_last > 0:
                    for i in order[:pos_last]:
                        out[r][i] = -math.inf
            return out
        return f
    if name == "dry":
        def f(ids, scores):
            out = scores.clone()
            for r in range(ids.shape[0]):
                ctx = ids[r].tolist()
                if p["last_n"] > 0:
                    ctx = ctx[-p["last_n"]:]
                n = len(ctx)
                if n <= p["allowed_length"]:
                    continue
                rep_limit = n
                for i in range(n):
                    if ctx[n - 1 - i] in p["breakers"]:
                        rep_limit = i
                        break
                if rep_limit < p["allowed_length"]:
                    continue
                best = {}
                for q in range(n - 1):
                    length = 0
                    while length <= q and ctx[q - length] == ctx[n - 1 - length]:
                        length += 1
                    length = min(length, rep_limit)
                    if length >= p["allowed_length"]:
                        best[ctx[q + 1]] = max(best.get(ctx[q + 1], 0), length)
                for t, length in best.items():
                    if t not in p["breakers"]:
                        out[r][t] -= p["multiplier"] * p["base"] ** (length - p["allowed_length"])
            return out
        return f
    if name == "frequency_presence":
        # the OpenAI formula (no transformers processor): over generated tokens only
        def f(ids, scores):
            out = scores.clone()
            for r in range(ids.shape[0]):
                gen = ids[r, p["prompt_length"]:].tolist()
                for t in set(gen):
                    c = gen.count(t)
                    out[r, t] -= p["frequency_penalty"] * c + p["presence_penalty"]
            return out

        return f
    raise SystemExit(f"unknown processor {name}")


NEW_PROCESSOR_CASES = [
    ("logit_bias", {"bias": {"3": 5.0, "17": -100.0, "40": 0.5}}, 11),
    ("logit_bias", {"bias": {"0": -2.5, "63": 30.0}}, 12),
    ("banned_tokens", {"ids": [5, 9, 31]}, 13),
    ("banned_tokens", {"ids": [0]}, 14),
    ("epsilon_cutoff", {"epsilon": 0.02}, 15),
    ("epsilon_cutoff", {"epsilon": 0.3}, 16),
    ("eta_cutoff", {"eta": 0.01}, 17),
    ("eta_cutoff", {"eta": 0.2}, 18),
    ("exponential_decay_length_penalty", {"start_index": 2, "decay_factor": 1.5, "eos_token_id": 3, "prompt_length": 6}, 19),
    ("exponential_decay_length_penalty", {"start_index": 1, "decay_factor": 0.8, "eos_token_id": 7, "prompt_length": 4}, 20),
    ("exponential_decay_length_penalty", {"start_index": 5, "decay_factor": 2.0, "eos_token_id": 3, "prompt_length": 6}, 21),
    ("sequence_bias", {"sequences": [[[5, 6, 9], 2.0], [[6, 9], -1.5], [[9], 0.7], [[6, 12], 4.0], [[3, 3, 3, 12], 5.0]]}, 22),
    ("suppress_tokens", {"ids": [1, 2, 60]}, 23),
    ("begin_suppress_tokens", {"ids": [4, 8], "begin_index": 10}, 24),
    ("begin_suppress_tokens", {"ids": [4, 8], "begin_index": 9}, 25),
    ("top_n_sigma", {"n": 1.0}, 26),
    ("top_n_sigma", {"n": 0.4}, 27),
    ("dynamic_temperature", {"temperature": 0.8, "range": 0.5, "exponent": 1.0}, 28),
    ("dynamic_temperature", {"temperature": 1.2, "range": 1.0, "exponent": 2.0}, 29),
    ("xtc", {"probability": 1.0, "threshold": 0.05}, 30),
    ("xtc", {"probability": 1.0, "threshold": 0.1}, 31),
    ("dry", {"multiplier": 0.8, "base": 1.75, "allowed_length": 2, "last_n": 0, "breakers": [11]}, 32),
    ("dry", {"multiplier": 1.5, "base": 2.0, "allowed_length": 1, "last_n": 7, "breakers": []}, 33),
]

# inputs that make a case meaningful (repetitions for DRY, tails for sequence bias)
def shape_inputs(name, ids, scores):
    if name == "sequence_bias":
        ids[0][-2:] = [5, 6]
        ids[1][-1] = 6
    if name == "dry":
        ids[0] = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
        ids[1] = [5, 6, 7, 11, 5, 6, 7, 11, 5, 6]
        ids[2] = [9, 9, 9, 9, 9, 9, 9, 9, 9, 9]
    if name in ("top_n_sigma", "dynamic_temperature", "xtc"):
        scores[2][:60] = [-math.inf] * 60  # a row with few candidates



def processors():
    f = load("processors.json")
    have = {(c["processor"], json.dumps(c["params"], sort_keys=True)) for c in f["cases"]}
    for name, params, seed in NEW_PROCESSOR_CASES:
        if (name, json.dumps(params, sort_keys=True)) in have:
            continue
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, 64, (3, 10), generator=g).tolist()
        scores = (torch.randn(3, 64, generator=g) * 3).tolist()
        shape_inputs(name, ids, scores)
        f["cases"].append({"processor": name, "params": params, "input_ids": ids, "scores": nums(scores)})
    for i, c in enumerate(f["cases"]):
        ids = torch.tensor(c["input_ids"], dtype=torch.long)
        scores = torch.tensor([[(-math.inf if x is None else x) for x in r] for r in c["scores"]], dtype=torch.float32)
        out = processor(c["processor"], c["params"])(ids, scores.clone())
        new = nums(out.tolist())
        if "expected" in c:
            compare(f"processors.json case {i} ({c['processor']})", c["expected"], new)
        c["expected"] = new
    save("processors.json", f)


# ---------------------------------------------------------------- goldens
def greedy(model, prompt, n, eos):
    from transformers import GenerationConfig

    gc = GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=gc, output_scores=True, return_dict_in_generate=True)
    ids = out.sequences[0, len(prompt):].tolist()
    margins = []
    for s in out.scores:
        top = torch.topk(s[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return ids, margins


def logits_and_greedy(model, cases, key, n, eos, label):
    """Each case's full-prompt logits and greedy continuation (`key`, n tokens unless the case
    already has some; EOS active), compared with the committed values and stored in the case."""
    for i, c in enumerate(cases):
        with torch.no_grad():
            logits = model(torch.tensor([c["prompt"]])).logits[0].tolist()
        ids, _ = greedy(model, c["prompt"], len(c.get(key, [])) or n, eos)
        compare(f"{label} case {i} logits", c.get("logits"), logits)
        compare(f"{label} case {i} greedy", c.get(key), ids)
        c["logits"], c[key] = logits, ids


def tiny():
    from transformers import LlamaForCausalLM

    path = os.path.join(FIX, "tiny-llama")
    f = load("tiny-llama/golden.json")
    model = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    eos = f["eos_token_id"]
    logits_and_greedy(model, f["cases"], "greedy_24", 24, eos, "tiny-llama")
    b = f["batched_left_padded"]
    from transformers import GenerationConfig

    gc = GenerationConfig(do_sample=False, max_new_tokens=len(b["greedy_16"][0]), eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(
            torch.tensor(b["input_ids"]), attention_mask=torch.tensor(b["attention_mask"]), generation_config=gc
        )
    new = out[:, len(b["input_ids"][0]):].tolist()
    compare("tiny-llama batched", b["greedy_16"], new)
    b["greedy_16"] = new
    save("tiny-llama/golden.json", f)


def smollm2_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.dirname(MODEL), os.path.basename(MODEL)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    return tok, d, name


def smollm2():
    from transformers import AutoModelForCausalLM

    tok, d, name = smollm2_model()
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32).eval()
    f = load("smollm2-golden.json")
    eos = f["eos_token_id"]
    for i, c in enumerate(f["cases"]):
        prompt = tok(c["prompt"], add_special_tokens=False).input_ids
        n = len(c.get("greedy_ids", [])) or 32
        ids, margins = greedy(model, prompt, n, eos)
        with torch.no_grad():
            last = model(torch.tensor([prompt])).logits[0, -1]
        top = torch.topk(last, 5)
        new = {
            "prompt": c["prompt"],
            "prompt_ids": prompt,
            "greedy_ids": ids,
            "greedy_text": tok.decode(ids),
            "top1_top2_margins": margins,
            "last_prompt_top5": {"ids": top.indices.tolist(), "logits": top.values.tolist()},
        }
        for k in ("prompt_ids", "greedy_ids", "top1_top2_margins"):
            compare(f"smollm2 case {i} {k}", c.get(k), new[k])
        compare(f"smollm2 case {i} top5 logits", c["last_prompt_top5"]["logits"], new["last_prompt_top5"]["logits"])
        f["cases"][i] = new
    save("smollm2-golden.json", f)


# ---------------------------------------------------------------- chat template
CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}], "add_generation_prompt": True},
    {
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name three primes."},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Write a haiku\nabout  rain."},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "system", "content": "  leading and trailing spaces  "},
            {"role": "user", "content": "Ünïcödé – «quotes» and emoji 🚀"},
            {"role": "assistant", "content": "Noted."},
        ],
        "add_generation_prompt": False,
    },
    {"messages": [{"role": "user", "content": "- a line starting with a dash\n\n\ttab"}], "add_generation_prompt": False},
]


def gguf_template():
    import gguf

    r = gguf.GGUFReader(MODEL)
    field = r.fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def chat():
    tok, _, _ = smollm2_model()
    template = gguf_template()
    old = load_or("chat-template.json", {"cases": []})
    cases = old["cases"] or CONVERSATIONS
    out = []
    for i, c in enumerate(cases):
        text = tok.apply_chat_template(
            c["messages"], chat_template=template, tokenize=False, add_generation_prompt=c["add_generation_prompt"]
        )
        ids = tok(text, add_special_tokens=False).input_ids
        new = {"messages": c["messages"], "add_generation_prompt": c["add_generation_prompt"], "text": text, "ids": ids}
        if "text" in c:
            compare(f"chat case {i}", [c["text"], c["ids"]], [text, ids])
        out.append(new)
    save(
        "chat-template.json",
        {
            "note": "transformers apply_chat_template(tokenize=False) with the default model's GGUF chat template, "
            "then the text tokenized without special tokens added",
            "model": os.path.basename(MODEL),
            "cases": out,
        },
    )


# ---------------------------------------------------------------- stop strings
STOP_CASES = [
    ("The first paragraph ends here.\n\nThe second one starts.", ["\n\n"]),
    ("def f(x):\n    return x\n\ndef g(y):\n    return y", ["\ndef "]),
    ("Answer: 42. END OF ANSWER. More text follows.", ["END"]),
    ("one, two, three, four, five", ["four", "three"]),
    ("no stop string appears in this text at all", ["zebra"]),
    ("<|im_start|>assistant\nSure!<|im_end|> trailing", ["<|im_end|>"]),
    ("a stopper inside: the word laststopping is one piece", ["stop"]),
    ("hello world, the end", ["orl"]),
]


def stops():
    from transformers import StopStringCriteria

    tok, _, _ = smollm2_model()
    out = []
    for text, strings in STOP_CASES:
        ids = tok(text, add_special_tokens=False).input_ids
        crit = StopStringCriteria(tok, strings)
        hf = None
        contains = None
        for k in range(1, len(ids) + 1):
            x = torch.tensor([ids[:k]])
            if hf is None and bool(crit(x, torch.zeros(1, 1))[0]):
                hf = k
            if contains is None and any(s in tok.decode(ids[:k]) for s in strings):
                contains = k
        out.append({"text": text, "stop": strings, "ids": ids, "hf_stops_after": hf, "first_contained_after": contains})
    old = load_or("stop-strings.json", None)
    if old and len(old["cases"]) == len(out):
        compare("stop strings", [[c["hf_stops_after"], c["first_contained_after"]] for c in old["cases"]],
                [[c["hf_stops_after"], c["first_contained_after"]] for c in out])
    save(
        "stop-strings.json",
        {
            "note": "hf_stops_after: number of tokens after which transformers' StopStringCriteria first fires; "
            "first_contained_after: first prefix whose decoded text contains a stop string (null: never).",
            "cases": out,
        },
    )


# ---------------------------------------------------------------- families
def family_dirs():
    root = os.path.join(FIX, "families")
    return sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "config.json")))


def families():
    from transformers import AutoModelForCausalLM

    names = family_dirs()
    assert names, "no family checkpoints under tests/fixtures/families"
    for fam in names:
        path = os.path.join(FIX, "families", fam)
        name = f"families/{fam}/golden.json"
        f = load(name)
        # eager attention: the reference formula (sliding windows and softcaps included)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
        assert f["cases"], f"{name}: no cases"
        logits_and_greedy(model, f["cases"], "greedy_16", 16, f["eos_token_id"], fam)
        f["transformers"] = __import__("transformers").__version__
        save(name, f)


def new_family(name, config_path):
    """A tiny random checkpoint of a new family: seeded init, saved by transformers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with open(config_path) as fh:
        cfg = AutoConfig.for_model(**json.load(fh))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    path = os.path.join(FIX, "families", name)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    prompts = [c["prompt"] for c in load("families/qwen2/golden.json")["cases"]]
    vocab = cfg.vocab_size
    save(
        f"families/{name}/golden.json",
        {
            "family": name,
            "architectures": cfg.architectures or [type(model).__name__],
            "eos_token_id": 2,
            "pad_token_id": 0,
            "transformers": __import__("transformers").__version__,
            "cases": [{"prompt": [t % vocab for t in p]} for p in prompts],
        },
    )
    print(f"made tests/fixtures/families/{name}; now run: make_fixtures.py families")


# ---------------------------------------------------------------- beam search
def beam():
    from transformers import GenerationConfig, LlamaForCausalLM

    models = {
        "tiny-llama-beam.json": lambda: LlamaForCausalLM.from_pretrained(os.path.join(FIX, "tiny-llama"), dtype=torch.float32),
        "smollm2-beam.json": lambda: __import__("transformers").AutoModelForCausalLM.from_pretrained(
            os.path.dirname(MODEL), gguf_file=os.path.basename(MODEL), dtype=torch.float32
        ),
    }
    for file, make in models.items():
        name = f"beam/{file}"
        f = load(name)
        assert f["cases"], f"{name}: no cases"
        model = make().eval()
        for i, c in enumerate(f["cases"]):
            gc = GenerationConfig(
                do_sample=False,
                num_beams=c["num_beams"],
                length_penalty=c["length_penalty"],
                early_stopping=c["early_stopping"],
                num_return_sequences=c["num_return_sequences"],
                max_new_tokens=c["max_new_tokens"],
                eos_token_id=c["eos_token_id"],
                pad_token_id=c["pad_token_id"],
            )
            with torch.no_grad():
                out = model.generate(
                    torch.tensor([c["prompt"]]), generation_config=gc, output_scores=True, return_dict_in_generate=True
                )
            seqs = []
            for row in out.sequences[:, len(c["prompt"]):].tolist():
                if c["eos_token_id"] in row:
                    row = row[: row.index(c["eos_token_id"]) + 1]
                seqs.append(row)
            scores = out.sequences_scores.tolist()
            compare(f"{file} case {i} sequences", c.get("sequences"), seqs)
            compare(f"{file} case {i} scores", c.get("sequences_scores"), scores)
            c["sequences"], c["sequences_scores"] = seqs, scores
        f["transformers"] = __import__("transformers").__version__
        save(name, f)


# ---------------------------------------------------------------- tokenizer ids
TOKENIZER_TEXTS = [
    "Hello, world!",
    "def f(x):\n\treturn x  # tab-indented\n",
    "  leading spaces and trailing   ",
    "Accents: café, naïve, über, élève",
    "CJK: 你好，世界。日本語のテキスト",
    "한국어 텍스트와 中文混合 text",
    "Emoji: 🦀🔥👩‍💻 done",
    "flags 🇫🇷🇯🇵 and skin tones 👍🏽",
    "digits 1234567890 and 3.14159",
    "<|im_start|>user\nHi<|im_end|>",
    "Ünïcödé – «quotes» and emoji 🚀",
    "math: ∑ᵢ xᵢ² ≤ ∞, arrows → ⇒",
]


def tokenizer():
    tok, _, _ = smollm2_model()
    old = load_or("tokenizer.json", {"cases": []})
    texts = [c["text"] for c in old["cases"]] or TOKENIZER_TEXTS
    texts += [t for t in TOKENIZER_TEXTS if t not in texts]
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False).input_ids
        prev = next((c["ids"] for c in old["cases"] if c["text"] == t), None)
        if prev is not None:
            compare(f"tokenizer {t!r}", prev, ids)
        out.append({"text": t, "ids": ids})
    save(
        "tokenizer.json",
        {
            "note": "transformers' tokenizer of the default model (AutoTokenizer from the GGUF), "
            "text encoded without special tokens added",
            "model": os.path.basename(MODEL),
            "transformers": __import__("transformers").__version__,
            "cases": out,
        },
    )


JOBS = {
    "processors": processors,
    "tiny": tiny,
    "smollm2": smollm2,
    "chat": chat,
    "stops": stops,
    "families": families,
    "beam": beam,
    "tokenizer": tokenizer,
}

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if args and args[0] == "new-family":
        if len(args) != 3:
            raise SystemExit("usage: make_fixtures.py new-family NAME CONFIG.json")
        new_family(args[1], args[2])
        sys.exit(0)
    run(JOBS, args)
