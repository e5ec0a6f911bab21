"""Writes tests/data/hf_models/{gpt_oss, gpt_oss-mxfp4}: one tiny random gpt-oss model (GptOssForCausalLM) in the two
layouts SaeSharp loads -- experts as float32 gate_up_proj/down_proj (gpt_oss) and packed in MXFP4 as the hub checkpoint
stores them (*_blocks uint8 nibbles + *_scales uint8 exponents, gpt_oss-mxfp4) -- with its reference forward in the
layout of hf_models_fixture.py (config.json, model.safetensors, reference.npz with the same keys), for
HfTransformersParityTests; and tests/data/rope_yarn_cases.json, transformers 5's _compute_yarn_parameters on a few
rope_scaling dicts, for YarnRopeTests.

As olmo_fixture.py, this is NOT transformers' own code (its tree is too large to bring onto this machine): the forward is
a line-by-line transcription in plain PyTorch of transformers' modeling_gpt_oss.py (GptOssRMSNorm, GptOssTopKRouter,
GptOssExperts' inference branch, GptOssAttention with eager_attention_forward and its sinks, GptOssDecoderLayer,
GptOssModel with create_causal_mask / create_sliding_window_causal_mask as additive finfo.min masks), of
modeling_rope_utils._compute_yarn_parameters (transformers 5: factor as given, truncate, mscale) and, verbatim, of
integrations/mxfp4.py's FP4_VALUES and convert_moe_packed_tensors. So it pins that reading of the HF code, not
transformers itself.
The expert weights are DEFINED by random MXFP4 blocks and scales: the float folder holds their dequantisation by
convert_moe_packed_tensors (exact: every FP4 value times a power of two is a float32), so both folders are one model
and share one reference. Other weights: matrices N(0, 0.2^2), biases N(0, 0.1^2), sinks N(0, 1), norm weights
1 + N(0, 0.2^2), embeddings N(0, 1). swiglu_limit is 1.5 (not 7) so the clamps bite on these small weights.
sliding_window 4 on the even layers, so generation (8 prompt tokens + 6) runs past it.
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/gpt_oss_fixture.py --out tests/data
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
SEQ, GEN_PROMPT, GEN_NEW = 12, 8, 6

CONFIG = dict(architectures=["GptOssForCausalLM"], model_type="gpt_oss", vocab_size=128, hidden_size=32,
              intermediate_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              num_local_experts=4, num_experts_per_tok=2, experts_per_token=2, sliding_window=4,
              layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
              max_position_embeddings=131072, initial_context_length=4096, rms_norm_eps=1e-5, rope_theta=150000.0,
              rope_scaling={"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                            "rope_type": "yarn", "truncate": False},
              swiglu_limit=1.5, attention_bias=True, attention_dropout=0.0, hidden_act="silu", initializer_range=0.02,
              tie_word_embeddings=False, torch_dtype="float32", use_cache=True, router_aux_loss_coef=0.9,
              output_router_logits=False, pad_token_id=1, eos_token_id=2)
MXFP4 = dict(quantization_config={"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                              "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"})

# --- integrations/mxfp4.py, verbatim (device moves dropped) ---
FP4_VALUES = [
    +0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
]


def convert_moe_packed_tensors(blocks, scales, *, dtype=torch.bfloat16, rows_per_chunk=32768 * 1024):
    scales = scales.to(torch.int32) - 127
    assert blocks.shape[:-1] == scales.shape, f"{blocks.shape[:-1]=} does not match {scales.shape=}"
    lut = torch.tensor(FP4_VALUES, dtype=dtype, device=blocks.device)
    *prefix_shape, G, B = blocks.shape
    rows_total = math.prod(prefix_shape) * G
    blocks = blocks.reshape(rows_total, B)
    scales = scales.reshape(rows_total, 1)
    out = torch.empty(rows_total, B * 2, dtype=dtype, device=blocks.device)
    for r0 in range(0, rows_total, rows_per_chunk):
        r1 = min(r0 + rows_per_chunk, rows_total)
        blk = blocks[r0:r1]
        exp = scales[r0:r1]
        idx_lo = (blk & 0x0F).to(torch.long)
        idx_hi = (blk >> 4).to(torch.long)
        sub = out[r0:r1]
        sub[:, 0::2] = lut[idx_lo]
        sub[:, 1::2] = lut[idx_hi]
        torch.ldexp(sub, exp, out=sub)
    out = out.reshape(*prefix_shape, G, B * 2).view(*prefix_shape, G * B * 2)
    return out.transpose(1, 2).contiguous()


# --- modeling_rope_utils._compute_yarn_parameters (transformers 5) ---
def yarn(rope, dim, base, max_position_embeddings):
    factor = rope.get("factor")
    attention_factor = rope.get("attention_factor")
    mscale = rope.get("mscale")
    mscale_all_dim = rope.get("mscale_all_dim")
    original_max_position_embeddings = rope.get("original_max_position_embeddings") or max_position_embeddings
    if factor is None:
        factor = max_position_embeddings / original_max_position_embeddings

    def get_mscale(scale, mscale=1):
        if scale <= 1:
            return 1.0
        return 0.1 * mscale * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = rope.get("beta_fast") or 32
    beta_slow = rope.get("beta_slow") or 1

    def find_correction_dim(num_rotations, dim, base, max_position_embeddings):
        return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    def find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings, truncate):
        low = find_correction_dim(low_rot, dim, base, max_position_embeddings)
        high = find_correction_dim(high_rot, dim, base, max_position_embeddings)
        if truncate:
            low = math.floor(low)
            high = math.ceil(high)
        return max(low, 0), min(high, dim - 1)

    def linear_ramp_factor(min, max, dim):
        if min == max:
            max += 0.001
        linear_func = (torch.arange(dim, dtype=torch.float32) - min) / (max - min)
        return torch.clamp(linear_func, 0, 1)

    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    truncate = rope.get("truncate", True)
    low, high = find_correction_range(beta_fast, beta_slow, dim, base, original_max_position_embeddings, truncate)
    inv_freq_extrapolation_factor = 1 - linear_ramp_factor(low, high, dim // 2).to(dtype=torch.float)
    inv_freq = (inv_freq_interpolation * (1 - inv_freq_extrapolation_factor)
                + inv_freq_extrapolation * inv_freq_extrapolation_factor)
    return inv_freq, attention_factor


YARN_CASES = [  # (rope_scaling, head_dim, rope_theta, max_position_embeddings)
    (CONFIG["rope_scaling"], 64, 150000.0, 131072),                                               # gpt-oss-20b
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 128, 1000000.0, 131072),  # Qwen3 long context
    ({"type": "yarn", "factor": 8.0}, 32, 10000.0, 2048),                                         # truncate default, no original
    ({"rope_type": "yarn", "factor": 40.0, "mscale": 1.0, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1,
      "original_max_position_embeddings": 4096}, 64, 10000.0, 163840),                           # DeepSeek-style mscale ratio
    ({"rope_type": "yarn", "factor": 16.0, "attention_factor": 1.25, "beta_fast": 8.0, "beta_slow": 2.0,
      "original_max_position_embeddings": 1024, "truncate": True}, 48, 500000.0, 16384),          # explicit attention factor
    ({"rope_type": "yarn", "original_max_position_embeddings": 512}, 16, 10000.0, 4096),           # factor from the ratio
]


def params(c, g):
    d, h, kv, hd, E, I = (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"],
                          c["num_local_experts"], c["intermediate_size"])
    p = {"model.embed_tokens.weight": torch.randn(c["vocab_size"], d, generator=g),
         "model.norm.weight": 1 + 0.2 * torch.randn(d, generator=g), "lm_head.weight": 0.2 * torch.randn(c["vocab_size"], d, generator=g)}
    packed = {}
    for i in range(c["num_hidden_layers"]):
        L = f"model.layers.{i}."
        for name, shape in [("q_proj", (h * hd, d)), ("k_proj", (kv * hd, d)), ("v_proj", (kv * hd, d)), ("o_proj", (d, h * hd))]:
            p[L + f"self_attn.{name}.weight"] = 0.2 * torch.randn(*shape, generator=g)
            p[L + f"self_attn.{name}.bias"] = 0.1 * torch.randn(shape[0], generator=g)
        p[L + "self_attn.sinks"] = torch.randn(h, generator=g)
        for n in ["input_layernorm", "post_attention_layernorm"]:
            p[L + n + ".weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "mlp.router.weight"] = 0.2 * torch.randn(E, d, generator=g)
        p[L + "mlp.router.bias"] = 0.1 * torch.randn(E, generator=g)
        # MXFP4 as the hub stores it: rows of the transposed weight, groups of 32 values, 16 bytes of two nibbles each.
        for name, rows, cols in [("gate_up_proj", 2 * I, d), ("down_proj", d, I)]:
            blocks = torch.randint(0, 256, (E, rows, cols // 32, 16), generator=g, dtype=torch.int64).to(torch.uint8)
            scales = torch.randint(127 - 5, 127 - 2, (E, rows, cols // 32), generator=g, dtype=torch.int64).to(torch.uint8)
            packed[L + f"mlp.experts.{name}_blocks"] = blocks
            packed[L + f"mlp.experts.{name}_scales"] = scales
            p[L + f"mlp.experts.{name}"] = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
            p[L + f"mlp.experts.{name}_bias"] = 0.1 * torch.randn(E, rows, generator=g)
            # the bf16 dequantisation HF does by default gives the same numbers
            assert torch.equal(convert_moe_packed_tensors(blocks, scales).float(), p[L + f"mlp.experts.{name}"])
    return p, packed


def rms(x, w, eps):   # GptOssRMSNorm: weight times the float32 normalised x, then cast
    dt = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (w * x).to(dt)


def rotary(x, cos, sin):   # _apply_rotary_emb
    first_half, second_half = torch.chunk(x, 2, dim=-1)
    return torch.cat((first_half * cos - second_half * sin, second_half * cos + first_half * sin), dim=-1)


def forward(c, p, tokens, mask=None, positions=None):
    """Returns (logits, hidden_states as HF's output_hidden_states)."""
    d, h, kv, hd, eps = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
    E, k_top, I, limit, alpha = c["num_local_experts"], c["num_experts_per_tok"], c["intermediate_size"], c["swiglu_limit"], 1.702
    b, s = tokens.shape
    if positions is None:
        positions = torch.arange(s)[None].expand(b, s)
    inv_freq, scaling = yarn(c["rope_scaling"], hd, c["rope_theta"], c["max_position_embeddings"])
    freqs = (inv_freq[None, :, None].float().expand(b, -1, 1) @ positions[:, None, :].float()).transpose(1, 2)
    cos, sin = (freqs.cos() * scaling)[:, None], (freqs.sin() * scaling)[:, None]
    minv = torch.finfo(torch.float32).min
    qi, ki = torch.arange(s)[:, None], torch.arange(s)[None, :]
    masks = {}
    for kind in ["full_attention", "sliding_attention"]:
        allowed = ki <= qi
        if kind == "sliding_attention":
            allowed = allowed & (ki > qi - c["sliding_window"])
        allowed = allowed[None, None].expand(b, 1, s, s)
        if mask is not None:
            allowed = allowed & mask[:, None, None, :].bool()
        masks[kind] = torch.zeros(b, 1, s, s).masked_fill(~allowed, minv)
    x = p["model.embed_tokens.weight"][tokens]
    hidden = []
    for i in range(c["num_hidden_layers"]):
        hidden.append(x)
        L = f"model.layers.{i}."
        lin = lambda t, n: t @ p[L + n + ".weight"].T + p[L + n + ".bias"]
        a_in = rms(x, p[L + "input_layernorm.weight"], eps)
        q = lin(a_in, "self_attn.q_proj").view(b, s, h, hd).transpose(1, 2)
        k = lin(a_in, "self_attn.k_proj").view(b, s, kv, hd).transpose(1, 2)
        v = lin(a_in, "self_attn.v_proj").view(b, s, kv, hd).transpose(1, 2)
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        k = k[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)   # repeat_kv
        v = v[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)
        w = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5 + masks[c["layer_types"][i]]
        sinks = p[L + "self_attn.sinks"].reshape(1, -1, 1, 1).expand(b, -1, s, -1)
        combined = torch.cat([w, sinks], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        probs = F.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1]
        a = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h * hd)
        x = x + lin(a, "self_attn.o_proj")
        hs = rms(x, p[L + "post_attention_layernorm.weight"], eps).reshape(-1, d)
        # GptOssTopKRouter
        logits = F.linear(hs, p[L + "mlp.router.weight"], p[L + "mlp.router.bias"])
        top_value, top_index = torch.topk(logits, k_top, dim=-1)
        top_value = F.softmax(top_value, dim=1, dtype=top_value.dtype)
        scores = torch.zeros_like(logits).scatter_(1, top_index, top_value)
        # GptOssExperts, inference branch
        X = hs.repeat(E, 1).view(E, -1, d)
        gate_up = torch.bmm(X, p[L + "mlp.experts.gate_up_proj"]) + p[L + "mlp.experts.gate_up_proj_bias"][..., None, :]
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        gate = gate.clamp(min=None, max=limit)
        up = up.clamp(min=-limit, max=limit)
        glu = gate * torch.sigmoid(gate * alpha)
        nxt = torch.bmm((up + 1) * glu, p[L + "mlp.experts.down_proj"]) + p[L + "mlp.experts.down_proj_bias"][..., None, :]
        nxt = nxt.view(E, b, -1, d) * scores.transpose(0, 1).view(E, b, -1)[..., None]
        x = x + nxt.sum(dim=0)
    x = rms(x, p["model.norm.weight"], eps)
    hidden.append(x)
    return x @ p["lm_head.weight"].T, hidden


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="tests/data")
    ap.add_argument("--site", help="a folder where hf_models_fixture.py's prepare_site wrote the safetensors stand-in")
    a = ap.parse_args()
    from olmo_fixture import reference_arrays, safetensors_save_file, write_folder   # shared with the OLMo folders
    save_file = safetensors_save_file(a.site or "/tmp/gptoss_site")
    torch.set_num_threads(1)
    c = CONFIG
    p, packed = params(c, torch.Generator().manual_seed(3000))
    tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(90))
    arrays = reference_arrays(lambda t, mask, positions: forward(c, p, t, mask, positions), tokens)
    logits, gen_logits = torch.from_numpy(arrays["logits"]), torch.from_numpy(arrays["gen_logits"])
    mx = {k: v for k, v in p.items() if not (k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj"))}
    mx.update(packed)
    cfg_mx = dict(c, **MXFP4)
    del cfg_mx["layer_types"]   # GptOssConfig's default: sliding on even layers, as written in the float folder
    for name, cfg, weights in [("gpt_oss", c, p), ("gpt_oss-mxfp4", cfg_mx, mx)]:
        write_folder(os.path.join(a.out, "hf_models", name), cfg, weights, arrays, save_file)
    top2 = gen_logits.topk(2, dim=-1).values
    print(f"gpt_oss: logits |max| {logits.abs().max().item():.3f}, smallest generate top-2 gap "
          f"{(top2[..., 0] - top2[..., 1]).min().item():.4f}")
    cases = []
    for rope, hd, theta, maxpos in YARN_CASES:
        inv, att = yarn(rope, hd, theta, maxpos)
        cases.append({"rope_scaling": rope, "head_dim": hd, "rope_theta": theta, "max_position_embeddings": maxpos,
                      "inv_freq": inv.tolist(), "attention_factor": att})
    with open(os.path.join(a.out, "rope_yarn_cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
