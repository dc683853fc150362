#!/usr/bin/env python3
"""The tiny family checkpoints of tests/fixtures/families/* written as GGUF, the way llama.cpp's
convert_hf_to_gguf.py writes them (gguf-py 0.19, f32 tensors):

- llama3-rope, mistral -> architecture `llama`: Q/K rows permuted as llama.cpp permutes them;
  Llama 3 RoPE scaling as the `rope_freqs.weight` factors llama.cpp computes; Mistral's window as
  `llama.attention.sliding_window`;
- qwen2 -> `qwen2` (q/k/v biases, no permutation: NEOX RoPE);
- phi3 -> `phi3` (`attn_qkv`, and gate/up fused in `ffn_up`, no permutation);
- qwen3 -> `qwen3` (`attn_q_norm` / `attn_k_norm`, no permutation);
- qwen3-moe -> `qwen3moe` as llama.cpp's Qwen3MoeModel writes it: `expert_count`,
  `expert_used_count`, `expert_feed_forward_length`, the router as `ffn_gate_inp`, each expert
  projection stacked into one `[experts, rows, cols]` tensor (`ffn_{gate,up,down}_exps`);
- gemma3 -> `gemma3` as llama.cpp's Gemma3Model writes it: every `*norm.weight` stored as 1 + w,
  `post_attention_norm`, `ffn_norm` (pre-feedforward), `post_ffw_norm`, key/value length,
  `attention.sliding_window`, `rope.freq_base` of the global layers; the layer pattern as
  `attention.sliding_window_pattern` (one bool per layer, true = sliding) when it is not
  llama.cpp's built-in every-6th-global.

usage: python scripts/make_family_ggufs.py tests/fixtures/families
(the bench venv has gguf and safetensors: target/bench/venv/bin/python)
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

import gguf


def permute(w, n_head):
    # llama.cpp's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg, head_dim):
    rp = cfg["rope_parameters"]
    base = rp["rope_theta"]
    factor, low, high = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old = rp["original_max_position_embeddings"]
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def convert(d, out_path):
    cfg = json.load(open(os.path.join(d, "config.json")))
    t = load_file(os.path.join(d, "model.safetensors"))
    family = cfg["architectures"][0]
    arch = {
        "LlamaForCausalLM": "llama",
        "MistralForCausalLM": "llama",
        "Qwen2ForCausalLM": "qwen2",
        "Qwen3ForCausalLM": "qwen3",
        "Qwen3MoeForCausalLM": "qwen3moe",
        "Phi3ForCausalLM": "phi3",
        "Gemma3ForCausalLM": "gemma3",
    }[family]
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w = gguf.GGUFWriter(out_path, arch)
    w.add_name(os.path.basename(d.rstrip("/")))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rp = cfg.get("rope_parameters", {})
    w.add_rope_freq_base(rp.get("full_attention", rp).get("rope_theta", cfg.get("rope_theta", 10000.0)))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg["vocab_size"])
    if family == "MistralForCausalLM" and cfg.get("sliding_window"):
        w.add_sliding_window(cfg["sliding_window"])
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(cfg["sliding_window"])
        assert rp["sliding_attention"]["rope_theta"] == 10000.0, "llama.cpp's gemma3 local base is 10000"
        sliding = [t == "sliding_attention" for t in cfg["layer_types"]]
        if sliding != [(i + 1) % 6 != 0 for i in range(len(sliding))]:
            w.add_sliding_window_pattern(sliding)
    if arch == "qwen3moe":
        assert cfg.get("norm_topk_prob", False), "llama.cpp's qwen3moe always renormalises the top-k weights"
        assert not cfg.get("mlp_only_layers") and cfg.get("decoder_sparse_step", 1) == 1, "llama.cpp: every layer sparse"
        w.add_expert_count(cfg.get("num_experts", cfg.get("num_local_experts")))
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])

    def put(name, x):
        if arch == "gemma3" and name.endswith("norm.weight"):
            x = x + 1.0  # Gemma3RMSNorm computes with 1 + w
        w.add_tensor(name, np.ascontiguousarray(x.astype(np.float32)))

    put("token_embd.weight", t["model.embed_tokens.weight"])
    put("output_norm.weight", t["model.norm.weight"])
    if not cfg.get("tie_word_embeddings", False):
        put("output.weight", t["lm_head.weight"])
    if cfg.get("rope_parameters", {}).get("rope_type") == "llama3":
        put("rope_freqs.weight", llama3_rope_factors(cfg, head_dim))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", t[p + "input_layernorm.weight"])
        if arch == "gemma3":
            put(f"blk.{i}.post_attention_norm.weight", t[p + "post_attention_layernorm.weight"])
            put(f"blk.{i}.ffn_norm.weight", t[p + "pre_feedforward_layernorm.weight"])
            put(f"blk.{i}.post_ffw_norm.weight", t[p + "post_feedforward_layernorm.weight"])
        else:
            put(f"blk.{i}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        if p + "self_attn.q_norm.weight" in t:
            put(f"blk.{i}.attn_q_norm.weight", t[p + "self_attn.q_norm.weight"])
            put(f"blk.{i}.attn_k_norm.weight", t[p + "self_attn.k_norm.weight"])
        put(f"blk.{i}.attn_output.weight", t[p + "self_attn.o_proj.weight"])
        if arch == "qwen3moe":
            n_exp = cfg.get("num_experts", cfg.get("num_local_experts"))
            put(f"blk.{i}.ffn_gate_inp.weight", t[p + "mlp.gate.weight"])
            for proj, name in [("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")]:
                put(f"blk.{i}.{name}.weight", np.stack([t[p + f"mlp.experts.{e}.{proj}.weight"] for e in range(n_exp)]))
        else:
            put(f"blk.{i}.ffn_down.weight", t[p + "mlp.down_proj.weight"])
        if arch == "phi3":
            put(f"blk.{i}.attn_qkv.weight", t[p + "self_attn.qkv_proj.weight"])
            put(f"blk.{i}.ffn_up.weight", t[p + "mlp.gate_up_proj.weight"])
            continue
        q, k = t[p + "self_attn.q_proj.weight"], t[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = permute(q, n_head), permute(k, n_kv)
        put(f"blk.{i}.attn_q.weight", q)
        put(f"blk.{i}.attn_k.weight", k)
        put(f"blk.{i}.attn_v.weight", t[p + "self_attn.v_proj.weight"])
        for part in ["q", "k", "v"]:
            if p + f"self_attn.{part}_proj.bias" in t:
                put(f"blk.{i}.attn_{part}.bias", t[p + f"self_attn.{part}_proj.bias"])
        if arch != "qwen3moe":
            put(f"blk.{i}.ffn_gate.weight", t[p + "mlp.gate_proj.weight"])
            put(f"blk.{i}.ffn_up.weight", t[p + "mlp.up_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    root = sys.argv[1]
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isdir(d) and os.path.exists(os.path.join(d, "config.json")):
            out = os.path.join(d, "model.gguf")
            convert(d, out)
            print(out)


if __name__ == "__main__":
    main()
