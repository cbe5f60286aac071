#!/usr/bin/env python3
"""Reference logits from transformers' DeepseekV4ForCausalLM for ds4's tests.

Runs on the GPU machine (python3 there has torch and transformers); the CPU
is enough. For each case it loads a synthetic GGUF written by ds4-synth (an
f32 copy made with `ds4-synth --dequantize` for quantized models), builds the
HF config from the GGUF's own metadata, loads every tensor, and runs three
evaluations that must agree in transformers itself:
  * the uncached full forward (these logits are the fixture),
  * prefill of the first 200 tokens then one-token decode steps,
  * an irregular chunked prefill (1, 7, 120, 3, 128, 41, ...).
When the indexer selects a strict subset (partial top-k), the smallest
relative score gap at the top-k boundary is reported and a fixture whose gap
is below 1e-4 is refused (a near-tie would make the reference ambiguous).

It also writes `qat/`: FP8 E4M3 round trips computed with torch.float8_e4m3fn,
FP4 E2M1 round trips and the 128-point Hadamard (float64), on seeded random
vectors, for ds4's unit tests of its quantization simulations.

Usage:
  gen_fixtures.py --out DIR [--seq-len 320] [--seed 7] [--qat]
                  --case NAME:GGUF[:F32GGUF] [--case ...]
Exit codes: 0 ok, 3 torch/transformers missing, 4 DeepseekV4 missing,
5 a check failed (paths disagree, near-tie at the top-k boundary).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

try:
    import torch
    import transformers
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"gen_fixtures: needs torch and transformers ({e})", file=sys.stderr)
    sys.exit(3)
try:
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
    from transformers.cache_utils import DynamicCache
except ImportError as e:
    print(f"gen_fixtures: transformers {transformers.__version__} has no DeepseekV4 ({e})", file=sys.stderr)
    sys.exit(4)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_min import GGUF  # noqa: E402

P = "deepseek4."


def build_config(meta):
    L = int(meta[P + "block_count"])
    ratios = [int(r) for r in meta[P + "attention.compress_ratios"][:L]]
    hca = sorted({r for r in ratios if r not in (0, 4)})
    if len(hca) > 1:
        raise ValueError(f"HF supports one HCA rate, file has {hca}")
    kinds = {0: "sliding_attention", 4: "compressed_sparse_attention"}
    layer_types = [kinds.get(r, "heavily_compressed_attention") for r in ratios]
    n_hash = int(meta[P + "hash_layer_count"])
    clamps = [float(x) for x in meta[P + "swiglu_clamp_exp"][:L]]
    if len(set(clamps)) != 1:
        raise ValueError("HF supports one SwiGLU limit for all layers")
    hd = int(meta[P + "attention.key_length"])
    rd = int(meta[P + "rope.dimension_count"])
    cfg = DeepseekV4Config(
        vocab_size=int(meta[P + "vocab_size"]),
        hidden_size=int(meta[P + "embedding_length"]),
        moe_intermediate_size=int(meta[P + "expert_feed_forward_length"]),
        num_hidden_layers=L,
        num_attention_heads=int(meta[P + "attention.head_count"]),
        num_key_value_heads=1,
        head_dim=hd,
        partial_rotary_factor=rd / hd,
        q_lora_rank=int(meta[P + "attention.q_lora_rank"]),
        o_groups=int(meta[P + "attention.output_group_count"]),
        o_lora_rank=int(meta[P + "attention.output_lora_rank"]),
        n_routed_experts=int(meta[P + "expert_count"]),
        num_experts_per_tok=int(meta[P + "expert_used_count"]),
        n_shared_experts=1,
        scoring_func="sqrtsoftplus",
        norm_topk_prob=True,
        routed_scaling_factor=float(meta[P + "expert_weights_scale"]),
        swiglu_limit=clamps[0],
        layer_types=layer_types,
        compress_rates={"compressed_sparse_attention": 4,
                        "heavily_compressed_attention": hca[0] if hca else 128},
        mlp_layer_types=["hash_moe"] * n_hash + ["moe"] * (L - n_hash),
        sliding_window=int(meta[P + "attention.sliding_window"]),
        index_n_heads=int(meta[P + "attention.indexer.head_count"]),
        index_head_dim=int(meta[P + "attention.indexer.key_length"]),
        index_topk=int(meta[P + "attention.indexer.top_k"]),
        hc_mult=int(meta[P + "hyper_connection.count"]),
        hc_sinkhorn_iters=int(meta[P + "hyper_connection.sinkhorn_iterations"]),
        hc_eps=float(meta[P + "hyper_connection.epsilon"]),
        rms_norm_eps=float(meta[P + "attention.layer_norm_rms_epsilon"]),
        rope_theta=float(meta[P + "rope.freq_base"]),
        compress_rope_theta=float(meta[P + "attention.compress_rope_freq_base"]),
        rope_parameters={
            "rope_type": "yarn",
            "factor": float(meta[P + "rope.scaling.factor"]),
            "original_max_position_embeddings": int(meta[P + "rope.scaling.original_context_length"]),
            "beta_fast": float(meta[P + "rope.scaling.yarn_beta_fast"]),
            "beta_slow": float(meta[P + "rope.scaling.yarn_beta_slow"]),
        },
        max_position_embeddings=int(meta.get(P + "context_length", 1048576)),
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    cfg._attn_implementation = "eager"
    return cfg


def expected_freqs(meta, compressed):
    """ds4's RoPE frequencies (MODEL.md 4.2), to check HF built the same."""
    R = int(meta[P + "rope.dimension_count"])
    base = float(meta[P + ("attention.compress_rope_freq_base" if compressed else "rope.freq_base")])
    k = np.arange(R // 2, dtype=np.float64)
    w = base ** (-2.0 * k / R)
    if not compressed:
        return w
    C = float(meta[P + "rope.scaling.original_context_length"])
    s = float(meta[P + "rope.scaling.factor"])
    bf, bs = float(meta[P + "rope.scaling.yarn_beta_fast"]), float(meta[P + "rope.scaling.yarn_beta_slow"])
    corr = lambda b: R * np.log(C / (b * 2 * np.pi)) / (2 * np.log(base))  # noqa: E731
    lo, hi = max(0.0, np.floor(corr(bf))), min(R - 1.0, np.ceil(corr(bs)))
    r = np.clip((k - lo) / max(0.001, hi - lo), 0, 1)
    return w * (1 - r) + (w / s) * r


def state_dict_from_gguf(g, cfg):
    t = lambda name: torch.from_numpy(np.array(g.tensors[name], dtype=np.float32))  # noqa: E731
    sd = {
        "model.embed_tokens.weight": t("token_embd.weight"),
        "lm_head.weight": t("output.weight"),
        "model.norm.weight": t("output_norm.weight"),
        "model.hc_head.hc_fn": t("output_hc_fn.weight"),
        "model.hc_head.hc_base": t("output_hc_base.weight"),
        "model.hc_head.hc_scale": t("output_hc_scale.weight"),
    }
    for i in range(cfg.num_hidden_layers):
        b, m = f"blk.{i}.", f"model.layers.{i}."
        for hc, src in (("attn_hc", "hc_attn"), ("ffn_hc", "hc_ffn")):
            for part in ("fn", "scale", "base"):
                sd[f"{m}{hc}.{part}"] = t(f"{b}{src}_{part}.weight")
        sd[m + "input_layernorm.weight"] = t(b + "attn_norm.weight")
        sd[m + "post_attention_layernorm.weight"] = t(b + "ffn_norm.weight")
        a = m + "self_attn."
        sd[a + "q_a_proj.weight"] = t(b + "attn_q_a.weight")
        sd[a + "q_a_norm.weight"] = t(b + "attn_q_a_norm.weight")
        sd[a + "q_b_proj.weight"] = t(b + "attn_q_b.weight")
        sd[a + "kv_proj.weight"] = t(b + "attn_kv.weight")
        sd[a + "kv_norm.weight"] = t(b + "attn_kv_a_norm.weight")
        sd[a + "o_a_proj.weight"] = t(b + "attn_output_a.weight")
        sd[a + "o_b_proj.weight"] = t(b + "attn_output_b.weight")
        sd[a + "sinks"] = t(b + "attn_sinks.weight")
        lt = cfg.layer_types[i]
        if lt != "sliding_attention":
            c = a + "compressor."
            sd[c + "kv_proj.weight"] = t(b + "attn_compressor_kv.weight")
            sd[c + "gate_proj.weight"] = t(b + "attn_compressor_gate.weight")
            sd[c + "position_bias"] = t(b + "attn_compressor_ape.weight")
            sd[c + "kv_norm.weight"] = t(b + "attn_compressor_norm.weight")
        if lt == "compressed_sparse_attention":
            x = a + "compressor.indexer."
            sd[x + "q_b_proj.weight"] = t(b + "indexer.attn_q_b.weight")
            sd[x + "scorer.weights_proj.weight"] = t(b + "indexer.proj.weight")
            sd[x + "kv_proj.weight"] = t(b + "indexer_compressor_kv.weight")
            sd[x + "gate_proj.weight"] = t(b + "indexer_compressor_gate.weight")
            sd[x + "position_bias"] = t(b + "indexer_compressor_ape.weight")
            sd[x + "kv_norm.weight"] = t(b + "indexer_compressor_norm.weight")
        f = m + "mlp."
        sd[f + "gate.weight"] = t(b + "ffn_gate_inp.weight")
        if cfg.mlp_layer_types[i] == "hash_moe":
            sd[f + "gate.tid2eid"] = torch.from_numpy(np.array(g.tensors[b + "ffn_gate_tid2eid.weight"], dtype=np.int64))
        else:
            sd[f + "gate.e_score_correction_bias"] = t(b + "exp_probs_b.bias")
        sd[f + "experts.gate_up_proj"] = torch.cat([t(b + "ffn_gate_exps.weight"), t(b + "ffn_up_exps.weight")], dim=1)
        sd[f + "experts.down_proj"] = t(b + "ffn_down_exps.weight")
        sd[f + "shared_experts.gate_proj.weight"] = t(b + "ffn_gate_shexp.weight")
        sd[f + "shared_experts.up_proj.weight"] = t(b + "ffn_up_shexp.weight")
        sd[f + "shared_experts.down_proj.weight"] = t(b + "ffn_down_shexp.weight")
    return sd


def load_model(g):
    cfg = build_config(g.meta)
    model = DeepseekV4ForCausalLM(cfg)
    for attr in ("_experts_implementation",):
        if hasattr(model.config, attr):
            setattr(model.config, attr, "eager")
    try:
        model.set_experts_implementation("eager")
    except Exception:
        pass
    sd = state_dict_from_gguf(g, cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "inv_freq" not in k]
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing[:10]} unexpected {unexpected[:10]}")
    model = model.float().eval()
    # the RoPE tables HF built must be ds4's
    rot = model.model.rotary_emb
    for kind, comp in (("main", False), ("compress", True)):
        got = getattr(rot, f"{kind}_inv_freq").double().numpy()
        want = expected_freqs(g.meta, comp)
        rel = float(np.max(np.abs(got - want) / want))
        if rel > 1e-5:
            raise RuntimeError(f"HF {kind} RoPE frequencies differ from ds4's by {rel:.3g} (YaRN not applied?)")
    return cfg, model


class IndexerGap:
    """Captures indexer scores and measures the top-k boundary gap."""

    def __init__(self, cfg):
        self.cfg, self.min_gap, self.partial_queries = cfg, float("inf"), 0

    def hook(self, module, inputs, output):
        scores = output[0].double()  # [S, T]
        k = self.cfg.index_topk
        S, T = scores.shape
        for p in range(S):
            v = min((p + 1) // 4, T)
            if v <= k:
                continue
            s = torch.sort(scores[p, :v], descending=True).values
            gap = float((s[k - 1] - s[k]) / max(abs(float(s[k - 1])), 1e-12))
            self.partial_queries += 1
            self.min_gap = min(self.min_gap, gap)


def run_case(name, gguf_path, f32_path, seq_len, seed, out_dir):
    g = GGUF(f32_path or gguf_path)
    cfg, model = load_model(g)
    V = cfg.vocab_size
    rng = np.random.RandomState(seed)
    tokens = rng.randint(0, V, size=seq_len).astype(np.int32)
    ids = torch.from_numpy(tokens.astype(np.int64))[None, :]
    gap = IndexerGap(cfg)
    hooks = []
    for layer in model.model.layers:
        comp = layer.self_attn.compressor
        if comp is not None and hasattr(comp, "indexer"):
            hooks.append(comp.indexer.scorer.register_forward_hook(gap.hook))
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits[0].float().numpy()
        for h in hooks:
            h.remove()
        # prefill + decode
        cache = DynamicCache(config=model.config)
        split = min(200, seq_len - 1)
        parts = [model(input_ids=ids[:, :split], past_key_values=cache, use_cache=True).logits[0]]
        for t in range(split, seq_len):
            parts.append(model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits[0])
        dec = torch.cat(parts).float().numpy()
        # irregular chunks
        cache = DynamicCache(config=model.config)
        sizes, parts, pos = [1, 7, 120, 3, 128, 41], [], 0
        i = 0
        while pos < seq_len:
            n = min(sizes[i % len(sizes)], seq_len - pos)
            parts.append(model(input_ids=ids[:, pos:pos + n], past_key_values=cache, use_cache=True).logits[0])
            pos += n
            i += 1
        chunked = torch.cat(parts).float().numpy()
    scale = max(1.0, float(np.max(np.abs(full))))
    d_dec = float(np.max(np.abs(dec - full)))
    d_chunk = float(np.max(np.abs(chunked - full)))
    ok = d_dec <= 1e-5 * scale * 10 and d_chunk <= 1e-5 * scale * 10
    same_argmax = bool(np.all(dec.argmax(-1) == full.argmax(-1)) and np.all(chunked.argmax(-1) == full.argmax(-1)))
    partial = gap.partial_queries > 0
    gap_ok = (not partial) or gap.min_gap >= 1e-4
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    tokens.tofile(os.path.join(d, "tokens.i32"))
    full.astype(np.float32).tofile(os.path.join(d, "logits.f32"))
    with open(gguf_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    meta = {
        "case": name,
        "gguf": os.path.basename(gguf_path),
        "gguf_sha256": sha,
        "oracle_input": "f32 copy (ds4-synth --dequantize)" if f32_path else "the gguf itself",
        "seq_len": seq_len,
        "token_seed": seed,
        "vocab": V,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32 (CPU)",
        "max_abs_logit": scale,
        "hf_prefill200_decode_vs_full": d_dec,
        "hf_chunked_vs_full": d_chunk,
        "hf_paths_same_argmax": same_argmax,
        "indexer_partial_queries": gap.partial_queries,
        "indexer_min_rel_gap": None if not partial else gap.min_gap,
        "layer_types": cfg.layer_types,
        "compress_rates": cfg.compress_rates,
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{name}: max|logit| {scale:.3f}  decode diff {d_dec:.2e}  chunked diff {d_chunk:.2e}  "
          f"same argmax {same_argmax}  partial queries {gap.partial_queries}  min gap {meta['indexer_min_rel_gap']}")
    return ok and gap_ok and same_argmax


def write_qat(out_dir, seed):
    """FP8/FP4/Hadamard reference values (see the module docstring)."""
    d = os.path.join(out_dir, "qat")
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(seed)
    # FP8: 64 blocks of 64: random scales, plus codes' midpoints and edge values
    x = (rng.randn(64, 64) * np.exp(rng.uniform(-8, 8, size=(64, 1)))).astype(np.float32)
    e4m3 = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()
    mids = ((e4m3[1:] + e4m3[:-1]) / 2).astype(np.float32)
    x[0, :] = 0.0
    x[1, :] = np.concatenate([mids[:32], -mids[32:64]])[:64]
    x[1, 0] = 448.0
    x[2, :] = np.concatenate([mids[64:96], -mids[94:126]])[:64]
    x[2, 0] = 448.0
    x[3, :] = 1e-6
    xt = torch.from_numpy(x)
    amax = xt.abs().amax(dim=1, keepdim=True).clamp(min=1e-4)
    scale = torch.pow(2.0, torch.ceil(torch.log2(amax / 448.0)))
    y = (xt / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale
    x.tofile(os.path.join(d, "fp8_in.f32"))
    y.numpy().astype(np.float32).tofile(os.path.join(d, "fp8_out.f32"))
    # FP4: 64 blocks of 32; nearest E2M1 value, ties to the even index
    x4 = (rng.randn(64, 32) * np.exp(rng.uniform(-6, 6, size=(64, 1)))).astype(np.float32)
    table = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)
    x4[0, :8] = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]) * (6.0 / 6.0)
    x4[0, 8:16] = -x4[0, :8]
    amax = np.maximum(np.abs(x4).max(axis=1, keepdims=True), 7.052966104933725e-38)
    sc4 = np.power(2.0, np.ceil(np.log2(amax.astype(np.float32) / np.float32(6.0)))).astype(np.float32)
    yy = np.clip(x4 / sc4, -6, 6).astype(np.float64)
    dist = np.abs(np.abs(yy)[..., None] - table)
    best = np.argmin(dist + (np.arange(8) % 2) * 1e-12, axis=-1)  # exact ties -> even index
    y4 = (np.sign(yy) * table[best] * sc4).astype(np.float32)
    x4.tofile(os.path.join(d, "fp4_in.f32"))
    y4.tofile(os.path.join(d, "fp4_out.f32"))
    # Hadamard 128 (Sylvester), scaled by 1/sqrt(128), in float64
    n = 128
    H = np.array([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)], dtype=np.float64)
    xh = rng.randn(16, n).astype(np.float32)
    yh = (xh.astype(np.float64) @ H.T / np.sqrt(n)).astype(np.float32)
    xh.tofile(os.path.join(d, "hadamard_in.f32"))
    yh.tofile(os.path.join(d, "hadamard_out.f32"))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"torch": torch.__version__, "seed": seed,
                   "fp8": "64 blocks x 64: x -> (x/s).clamp(+-448).to(float8_e4m3fn)*s, s = 2^ceil(log2(max(amax,1e-4)/448))",
                   "fp4": "64 blocks x 32: nearest of {0,.5,1,1.5,2,3,4,6} (ties to even index) * s, s = 2^ceil(log2(amax/6))",
                   "hadamard": "16 rows x 128: x @ H^T / sqrt(128), float64"}, f, indent=1)
    print("qat: fp8 / fp4 / hadamard written")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--case", action="append", default=[])
    ap.add_argument("--seq-len", type=int, default=320)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--qat", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    ok = True
    for spec in args.case:
        parts = spec.split(":")
        name, path = parts[0], parts[1]
        f32 = parts[2] if len(parts) > 2 else None
        ok &= run_case(name, path, f32, args.seq_len, args.seed, args.out)
    if args.qat:
        write_qat(args.out, args.seed)
    sys.exit(0 if ok else 5)


if __name__ == "__main__":
    main()
