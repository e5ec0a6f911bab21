"""Writes tests/data/hf_models/{deepseek_v3, deepseek_v3-fp8, deepseek_v3-yarn, deepseek_v2, deepseek_v2-group, deepseek_v2-bias}: two tiny random DeepSeek-V3 models
(DeepseekV3ForCausalLM), the first also in FP8 as the hub stores DeepSeek-V3 (deepseek_v3-fp8: its linear weights
float8_e4m3fn bytes with block-wise float32 weight_scale_inv, quantization_config fp8 with 8x8 blocks; the float folder
holds their dequantisation fp8 · scale, exact in float32, so both folders are one model and share one reference), with
their reference forward in the layout of hf_models_fixture.py (config.json, model.safetensors, reference.npz with the
same keys) for HfTransformersParityTests, plus "hook:<name>" arrays of the unpadded forward for DeepseekV3Tests.

As olmo_fixture.py and gpt_oss_fixture.py, this is NOT transformers' own code (its tree is too large to bring onto this
machine): the forward is a line-by-line transcription in plain PyTorch of transformers' modeling_deepseek_v3.py
(DeepseekV3RMSNorm, DeepseekV3RotaryEmbedding, DeepseekV3MLP, DeepseekV3TopkRouter.get_topk_indices / forward,
DeepseekV3MoE.moe, apply_rotary_pos_emb and apply_rotary_pos_emb_interleave, yarn_get_mscale, DeepseekV3Attention with
eager_attention_forward, DeepseekV3DecoderLayer, DeepseekV3Model with an additive finfo.min causal/padding mask) and of
modeling_rope_utils._compute_yarn_parameters (gpt_oss_fixture.yarn). So it pins that reading of the HF code, not
transformers itself.
deepseek_v3: q_lora_rank 20, rope_interleave true, 3 layers with first_k_dense_replace 1, 8 routed experts in n_group 2
(topk_group 1), 2 per token, norm_topk_prob, routed_scaling_factor 2.5, one shared expert, the default rope, and one MTP
layer's weights (model.layers.3.*, num_nextn_predict_layers 1) that the forward ignores, as transformers does.
deepseek_v3-yarn: q_lora_rank null (q_proj), rope_interleave false, YaRN rope_scaling (factor 4, mscale 1, mscale_all_dim
0.8: cos/sin times the mscale ratio, the softmax scale times mscale(0.8)^2), 8 experts in n_group 4 (topk_group 2), 3 per
token, norm_topk_prob false, two shared experts.
Weights: matrices N(0, 0.2^2) (the routers 0.5), norm weights 1 + N(0, 0.2^2), embeddings N(0, 1),
e_score_correction_bias N(0, 0.1^2).

DeepSeek-V2 (model_type deepseek_v2, DeepseekV2ForCausalLM): the same forward with the places where transformers'
modeling_deepseek_v2.py differs (read at main 0233e509, plus PR #47435 merged 2026-07-20, which gave DeepseekV2Attention
the softmax scale times mscale(factor, mscale_all_dim)^2 that DeepSeek's own modeling_deepseek.py has): DeepseekV2Moe's
router (softmax over every expert in float32; topk_method greedy: the top k; group_limited_greedy: groups ranked by
their best score, the topk_group best kept, the others' scores set to 0, then the top k; the weights times
routed_scaling_factor, never renormalised; no e_score_correction_bias), apply_rotary_emb (each adjacent pair of the rotary
dims rotated as one complex number, left in place), no MTP layers.
deepseek_v2: DeepSeek-V2-Lite's shape in small: q_lora_rank null, greedy, first_k_dense_replace 1, 8 experts, 2 per
token, routed_scaling_factor 1.0, two shared experts, the default rope.
deepseek_v2-group: DeepSeek-V2's: q_lora_rank 20, group_limited_greedy with n_group 4, topk_group 2, 3 per token,
routed_scaling_factor 2.0, one shared expert, no dense layer (first_k_dense_replace 0), YaRN with
mscale = mscale_all_dim = 0.707 as DeepSeek-V2's config (cos/sin unscaled, the softmax scale times mscale(40, 0.707)^2).
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/deepseek_fixture.py --out tests/data
  (--only deepseek_v2 deepseek_v2-group writes those folders only; the V2 folders were added that way)
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
SEQ = 12

BASE = dict(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", vocab_size=128, hidden_size=32,
            intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
            n_shared_experts=1, n_routed_experts=8, routed_scaling_factor=2.5, kv_lora_rank=12, q_lora_rank=20,
            qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=8, n_group=2, topk_group=1, num_experts_per_tok=2,
            first_k_dense_replace=1, norm_topk_prob=True, hidden_act="silu", max_position_embeddings=256,
            rms_norm_eps=1e-6, rope_theta=10000.0, rope_interleave=True, attention_bias=False, attention_dropout=0.0,
            tie_word_embeddings=False, torch_dtype="float32", num_nextn_predict_layers=1, topk_method="noaux_tc",
            scoring_func="sigmoid", moe_layer_freq=1, ep_size=1, bos_token_id=0, eos_token_id=1, use_cache=True)
# DeepSeek-V3's quantization_config, with 8x8 blocks (the hub's are 128x128) so these small matrices span several,
# partial ones at the edges included.
FP8 = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [8, 8]}
V2_BASE = dict(architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2", vocab_size=128, hidden_size=32,
               intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
               n_shared_experts=2, n_routed_experts=8, routed_scaling_factor=1.0, kv_lora_rank=12, q_lora_rank=None,
               qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=8, n_group=1, topk_group=1, num_experts_per_tok=2,
               first_k_dense_replace=1, norm_topk_prob=False, hidden_act="silu", max_position_embeddings=256,
               rms_norm_eps=1e-6, rope_theta=10000.0, attention_bias=False, attention_dropout=0.0, tie_word_embeddings=False,
               torch_dtype="float32", topk_method="greedy", scoring_func="softmax", moe_layer_freq=1, aux_loss_alpha=0.001,
               seq_aux=True, bos_token_id=0, eos_token_id=1, use_cache=True)
FAMILIES = {
    "deepseek_v3": BASE,
    "deepseek_v3-yarn": dict(BASE, q_lora_rank=None, rope_interleave=False, n_group=4, topk_group=2, num_experts_per_tok=3,
                             norm_topk_prob=False, n_shared_experts=2, num_nextn_predict_layers=0, rope_theta=1000.0,
                             rope_scaling={"type": "yarn", "factor": 4.0, "mscale": 1.0, "mscale_all_dim": 0.8, "beta_fast": 32,
                                           "beta_slow": 1, "original_max_position_embeddings": 64}),
    "deepseek_v2": V2_BASE,
    "deepseek_v2-group": dict(V2_BASE, q_lora_rank=20, topk_method="group_limited_greedy", n_group=4, topk_group=2,
                              num_experts_per_tok=3, routed_scaling_factor=2.0, n_shared_experts=1, first_k_dense_replace=0,
                              rope_theta=1000.0,
                              rope_scaling={"type": "yarn", "factor": 40.0, "mscale": 0.707, "mscale_all_dim": 0.707,
                                            "beta_fast": 32, "beta_slow": 1, "original_max_position_embeddings": 64}),
    # The three settings transformers reads differently from DeepSeek's own modeling_deepseek.py: mlp_bias (biases on the
    # dense MLP and the shared experts, DeepseekV2MLP; none on the routed experts or the router), norm_topk_prob and
    # moe_layer_freq (kept by DeepseekV2Config, never read by modeling_deepseek_v2.py: no renormalisation, every layer
    # from first_k_dense_replace on a MoE). Layer 1 routes 3 of 8 experts, so a renormalisation would change the logits.
    "deepseek_v2-bias": dict(V2_BASE, mlp_bias=True, norm_topk_prob=True, moe_layer_freq=2, num_experts_per_tok=3,
                             routed_scaling_factor=1.5),
}


def params(c, g):
    d, h, E = c["hidden_size"], c["num_attention_heads"], c["n_routed_experts"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    r = lambda *shape, s=0.2: s * torch.randn(*shape, generator=g)
    p = {"model.embed_tokens.weight": torch.randn(c["vocab_size"], d, generator=g),
         "model.norm.weight": 1 + r(d), "lm_head.weight": r(c["vocab_size"], d)}
    for i in range(c["num_hidden_layers"] + c.get("num_nextn_predict_layers", 0)):
        L = f"model.layers.{i}."
        if c["q_lora_rank"] is None:
            p[L + "self_attn.q_proj.weight"] = r(h * qk, d)
        else:
            p[L + "self_attn.q_a_proj.weight"] = r(c["q_lora_rank"], d)
            p[L + "self_attn.q_a_layernorm.weight"] = 1 + r(c["q_lora_rank"])
            p[L + "self_attn.q_b_proj.weight"] = r(h * qk, c["q_lora_rank"])
        p[L + "self_attn.kv_a_proj_with_mqa.weight"] = r(c["kv_lora_rank"] + c["qk_rope_head_dim"], d)
        p[L + "self_attn.kv_a_layernorm.weight"] = 1 + r(c["kv_lora_rank"])
        p[L + "self_attn.kv_b_proj.weight"] = r(h * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        p[L + "self_attn.o_proj.weight"] = r(d, h * c["v_head_dim"])
        for n in ["input_layernorm", "post_attention_layernorm"]:
            p[L + n + ".weight"] = 1 + r(d)

        def mlp(prefix, width, bias=False):
            p[prefix + "gate_proj.weight"] = r(width, d)
            p[prefix + "up_proj.weight"] = r(width, d)
            p[prefix + "down_proj.weight"] = r(d, width)
            if bias:   # DeepseekV2MLP with config.mlp_bias
                p[prefix + "gate_proj.bias"] = r(width)
                p[prefix + "up_proj.bias"] = r(width)
                p[prefix + "down_proj.bias"] = r(d)
        bias = c.get("mlp_bias", False)
        if i < c["first_k_dense_replace"]:
            mlp(L + "mlp.", c["intermediate_size"], bias)
        else:
            p[L + "mlp.gate.weight"] = r(E, d, s=0.5)
            if c["model_type"] == "deepseek_v3":
                p[L + "mlp.gate.e_score_correction_bias"] = r(E, s=0.1)
            for e in range(E):
                mlp(L + f"mlp.experts.{e}.", c["moe_intermediate_size"])
            mlp(L + "mlp.shared_experts.", c["moe_intermediate_size"] * c["n_shared_experts"], bias)
        if i >= c["num_hidden_layers"]:   # an MTP layer's own weights (DeepSeek-V3's layer 61)
            for n in ["enorm", "hnorm", "shared_head.norm"]:
                p[L + n + ".weight"] = 1 + r(d)
            p[L + "eh_proj.weight"] = r(d, 2 * d)
    return p


# --- FP8 (float8_e4m3fn) with block-wise weight_scale_inv, as DeepSeek-V3's hub checkpoints store their linear layers ---
def e4m3fn_values():
    """The 256 float8_e4m3fn values by bit pattern (sign, 4 exponent bits with bias 7, 3 mantissa bits; exponent 0 is
    subnormal, 0x7f/0xff NaN, no infinities), written out here from the format's definition."""
    v = []
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        e, m = (b >> 3) & 0xF, b & 7
        if e == 15 and m == 7:
            v.append(float("nan"))
        elif e == 0:
            v.append(sign * m / 8 * 2.0 ** -6)
        else:
            v.append(sign * (1 + m / 8) * 2.0 ** (e - 7))
    return torch.tensor(v, dtype=torch.float32)


def fp8_quantise(c, p, g, block):
    """Makes every linear weight of the layers (attention projections, dense and expert MLPs; not the router) the
    dequantisation of random e4m3 bytes times a [ceil(out/b0), ceil(in/b1)] grid of weight_scale_inv: W = fp8 · scale,
    as DeepSeek's weight_dequant. Returns the packed form {key: uint8 bytes, key_scale_inv: float32}."""
    lut, packed = e4m3fn_values(), {}
    for k in sorted(p):
        if not (k.startswith("model.layers.") and k.endswith("proj.weight") or k.endswith("proj_with_mqa.weight")):
            continue
        if int(k.split(".")[2]) >= c["num_hidden_layers"]:
            continue
        out, inp = p[k].shape
        sign = torch.randint(0, 2, (out, inp), generator=g) << 7
        exp = torch.randint(4, 9, (out, inp), generator=g) << 3
        man = torch.randint(0, 8, (out, inp), generator=g)
        code = (sign | exp | man).to(torch.uint8)
        scale = 0.04 + 0.08 * torch.rand(-(-out // block[0]), -(-inp // block[1]), generator=g)
        full = scale.repeat_interleave(block[0], 0)[:out].repeat_interleave(block[1], 1)[:, :inp]
        p[k] = lut[code.long()] * full
        packed[k] = code
        packed[k + "_scale_inv"] = scale
    return packed


def save_fp8_folder(folder, config, p, packed, arrays):
    """Writes config.json, reference.npz and model.safetensors with the packed weights stored as F8_E4M3 (torch 1.13 has
    no float8 dtype, so the file is written here by hand in the safetensors layout)."""
    import json
    import struct
    from olmo_fixture import write_folder
    write_folder(folder, config, {}, arrays, lambda *a, **k: None)
    tensors = dict(p)
    tensors.update(packed)
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    names = {torch.float32: "F32", torch.uint8: "F8_E4M3"}
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def rms(x, w, eps):   # DeepseekV3RMSNorm
    dt = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dt)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q, k, cos, sin, interleave):   # apply_rotary_pos_emb(_interleave), unsqueeze_dim 1
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    if interleave:
        b, h, s, d = q.shape
        q = q.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
        b, h, s, d = k.shape
        k = k.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def yarn_get_mscale(scale=1, mscale=1):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def linear(x, p, name):   # nn.Linear, with its bias when the checkpoint has one (DeepseekV2MLP with mlp_bias)
    b = p.get(name + ".bias")
    return F.linear(x, p[name + ".weight"], b)


def mlp(x, p, prefix):   # DeepseekV3MLP / DeepseekV2MLP
    return linear(F.silu(linear(x, p, prefix + "gate_proj")) * linear(x, p, prefix + "up_proj"), p, prefix + "down_proj")


def router(c, p, L, hs, hooks):   # DeepseekV3TopkRouter.forward and get_topk_indices
    E, G, K = c["n_routed_experts"], c["n_group"], c["num_experts_per_tok"]
    hs = hs.view(-1, c["hidden_size"])
    scores = F.linear(hs.type(torch.float32), p[L + "mlp.gate.weight"].type(torch.float32)).sigmoid()
    choice = scores.view(-1, E) + p[L + "mlp.gate.e_score_correction_bias"].unsqueeze(0)
    group_scores = choice.view(-1, G, E // G).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=c["topk_group"], dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
    choice = choice.masked_fill(~score_mask.bool(), 0.0)
    topk_indices = torch.topk(choice, k=K, dim=-1, sorted=False)[1]
    if hooks is not None:   # how far the k-th choice is from the next: ties would make the routing ambiguous
        top = choice.topk(K + 1, dim=-1).values
        hooks["_gap"] = min(hooks.get("_gap", 1e9), (top[:, K - 1] - top[:, K]).min().item())
    topk_weights = scores.gather(1, topk_indices)
    if c["norm_topk_prob"]:
        denominator = topk_weights.sum(dim=-1, keepdim=True) + 1e-20
        topk_weights /= denominator
    topk_weights = topk_weights * c["routed_scaling_factor"]
    return scores, topk_indices, topk_weights


def router_v2(c, p, L, hs, hooks):   # DeepseekV2Moe.forward's router logits and route_tokens_to_experts
    E, G, K = c["n_routed_experts"], c["n_group"], c["num_experts_per_tok"]
    router_logits = F.linear(hs.type(torch.float32), p[L + "mlp.gate.weight"].type(torch.float32))
    router_logits = router_logits.view(-1, E)
    scores = router_logits.softmax(dim=-1, dtype=torch.float32)
    n = scores.shape[0]
    if c["topk_method"] == "greedy":
        choice = scores
        topk_weight, topk_idx = torch.topk(scores, k=K, dim=-1, sorted=False)
    else:   # group_limited_greedy
        group_scores = scores.view(n, G, -1).max(dim=-1).values
        group_idx = torch.topk(group_scores, k=c["topk_group"], dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(n, G, E // G).reshape(n, -1)
        choice = scores.masked_fill(~score_mask.bool(), 0.0)
        topk_weight, topk_idx = torch.topk(choice, k=K, dim=-1, sorted=False)
    if hooks is not None:   # how far the k-th choice is from the next
        top = choice.topk(K + 1, dim=-1).values
        hooks["_gap"] = min(hooks.get("_gap", 1e9), (top[:, K - 1] - top[:, K]).min().item())
    topk_weight = topk_weight * c["routed_scaling_factor"]
    return scores, topk_idx, topk_weight


def moe(c, p, L, hs, hooks):   # DeepseekV3MoE.forward and .moe (DeepseekV2Moe.forward and DeepseekV2Experts: the same sums)
    residuals, shape = hs, hs.shape
    route = router_v2 if c["model_type"] == "deepseek_v2" else router
    scores, topk_indices, topk_weights = route(c, p, L, hs, hooks)
    hs = hs.view(-1, hs.shape[-1])
    final = torch.zeros_like(hs, dtype=topk_weights.dtype)
    expert_mask = F.one_hot(topk_indices, num_classes=c["n_routed_experts"]).permute(2, 0, 1)
    for e in range(c["n_routed_experts"]):
        token_indices, weight_indices = torch.where(expert_mask[e])
        if token_indices.numel() > 0:
            w = topk_weights[token_indices, weight_indices]
            out = mlp(hs[token_indices], p, L + f"mlp.experts.{e}.")
            final.index_add_(0, token_indices, out * w.unsqueeze(-1))
    out = final.type(hs.dtype).view(*shape) + mlp(residuals, p, L + "mlp.shared_experts.")
    if hooks is not None:
        b, s = shape[0], shape[1]
        hooks["mlp.hook_expert_weights"] = scores.view(b, s, -1)
        hooks["mlp.hook_expert_indices"] = topk_indices.view(b, s, -1).sort(-1).values   # as a set per token
        g = linear(residuals, p, L + "mlp.shared_experts.gate_proj")
        hooks["mlp.shared_expert.hook_post"] = F.silu(g) * linear(residuals, p, L + "mlp.shared_experts.up_proj")
        e = int(topk_indices.view(-1)[0])   # the expert the first token chose first: its hook_post, zero where not routed
        routed = (topk_indices == e).any(-1).view(b, s, 1).float()
        xe = residuals
        post = F.silu(xe @ p[L + f"mlp.experts.{e}.gate_proj.weight"].T) * (xe @ p[L + f"mlp.experts.{e}.up_proj.weight"].T)
        hooks[f"mlp.experts.{e}.hook_post"] = post * routed
    return out


def apply_rotary_emb(xq, xk, cos, sin):   # DeepSeek-V2: pairs as complex numbers times freqs_cis (= cos + i sin)
    half = cos.shape[-1] // 2
    freqs_cis = torch.complex(cos[..., :half], sin[..., :half]).unsqueeze(1)
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3).type_as(xq)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3).type_as(xk)
    return xq_out, xk_out


def forward(c, p, tokens, mask=None, positions=None, hooks=None):
    """Returns (logits, hidden_states as HF's output_hidden_states); fills hooks (layer 1's) when given."""
    d, h, eps = c["hidden_size"], c["num_attention_heads"], c["rms_norm_eps"]
    nope, rope, vd, kvr = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    qk = nope + rope
    b, s = tokens.shape
    if positions is None:
        positions = torch.arange(s)[None].expand(b, s)
    rs = c.get("rope_scaling")
    if rs is None:   # default rope on qk_rope_head_dim (config.head_dim)
        inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, rope, 2, dtype=torch.int64).float() / rope))
        attention_scaling = 1.0
    else:
        from gpt_oss_fixture import yarn
        inv_freq, attention_scaling = yarn(rs, rope, c["rope_theta"], c["max_position_embeddings"])
    freqs = (inv_freq[None, :, None].float().expand(b, -1, 1) @ positions[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos() * attention_scaling, emb.sin() * attention_scaling
    scaling = qk ** (-0.5)
    if rs is not None:
        mscale_all_dim = rs.get("mscale_all_dim", 0)
        if mscale_all_dim:
            mscale = yarn_get_mscale(rs["factor"], mscale_all_dim)
            scaling = scaling * mscale * mscale
    minv = torch.finfo(torch.float32).min
    qi, ki = torch.arange(s)[:, None], torch.arange(s)[None, :]
    allowed = (ki <= qi)[None, None].expand(b, 1, s, s)
    if mask is not None:
        allowed = allowed & mask[:, None, None, :].bool()
    causal = torch.zeros(b, 1, s, s).masked_fill(~allowed, minv)
    x = p["model.embed_tokens.weight"][tokens]
    hidden = []
    for i in range(c["num_hidden_layers"]):   # the MTP layers past num_hidden_layers are not run
        hidden.append(x)
        L = f"model.layers.{i}."
        hk = hooks if (hooks is not None and i == 1) else None
        a_in = rms(x, p[L + "input_layernorm.weight"], eps)
        if c["q_lora_rank"] is None:
            q = a_in @ p[L + "self_attn.q_proj.weight"].T
        else:
            q_lat = rms(a_in @ p[L + "self_attn.q_a_proj.weight"].T, p[L + "self_attn.q_a_layernorm.weight"], 1e-6)
            q = q_lat @ p[L + "self_attn.q_b_proj.weight"].T
            if hk is not None:
                hk["attn.hook_q_latent"] = q_lat
        q = q.view(b, s, -1, qk).transpose(1, 2)
        q_pass, q_rot = torch.split(q, [nope, rope], dim=-1)
        compressed = a_in @ p[L + "self_attn.kv_a_proj_with_mqa.weight"].T
        k_pass, k_rot = torch.split(compressed, [kvr, rope], dim=-1)
        kv_lat = rms(k_pass, p[L + "self_attn.kv_a_layernorm.weight"], 1e-6)
        k_pass = (kv_lat @ p[L + "self_attn.kv_b_proj.weight"].T).view(b, s, -1, nope + vd).transpose(1, 2)
        k_pass, v = torch.split(k_pass, [nope, vd], dim=-1)
        k_rot = k_rot.view(b, 1, s, rope)
        if hk is not None:
            hk["attn.hook_kv_latent"] = kv_lat
            hk["attn.hook_q"] = q.transpose(1, 2)
            hk["attn.hook_k"] = torch.cat((k_pass, k_rot.expand(*k_pass.shape[:-1], -1)), -1).transpose(1, 2)
            hk["attn.hook_v"] = v.transpose(1, 2)
        if c["model_type"] == "deepseek_v2":
            q_rot, k_rot = apply_rotary_emb(q_rot, k_rot, cos, sin)
        else:
            q_rot, k_rot = apply_rotary(q_rot, k_rot, cos, sin, c["rope_interleave"])
        k_rot = k_rot.expand(*k_pass.shape[:-1], -1)
        query = torch.cat((q_pass, q_rot), dim=-1)
        key = torch.cat((k_pass, k_rot), dim=-1)
        w = torch.matmul(query, key.transpose(2, 3)) * scaling + causal   # eager_attention_forward (no repeat: kv heads = heads)
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
        a = torch.matmul(w, v).transpose(1, 2).contiguous()
        if hk is not None:
            hk["attn.hook_rot_q"] = query.transpose(1, 2)
            hk["attn.hook_rot_k"] = key.transpose(1, 2)
            hk["attn.hook_pattern"] = w
            hk["attn.hook_z"] = a
        x = x + a.reshape(b, s, -1) @ p[L + "self_attn.o_proj.weight"].T
        m_in = rms(x, p[L + "post_attention_layernorm.weight"], eps)
        m_out = mlp(m_in, p, L + "mlp.") if i < c["first_k_dense_replace"] else moe(c, p, L, m_in, hk)
        if hk is not None:
            hk["hook_mlp_out"] = m_out
        x = x + m_out
    x = rms(x, p["model.norm.weight"], eps)
    hidden.append(x)
    return x @ p["lm_head.weight"].T, hidden


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="tests/data")
    ap.add_argument("--site", help="a folder where hf_models_fixture.py's prepare_site wrote the safetensors stand-in")
    ap.add_argument("--only", nargs="*", help="these folders only (the others are left as they are)")
    a = ap.parse_args()
    from olmo_fixture import reference_arrays, safetensors_save_file, write_folder   # shared with the OLMo folders
    save_file = safetensors_save_file(a.site or "/tmp/deepseek_site")
    torch.set_num_threads(1)
    for j, (name, c) in enumerate(FAMILIES.items()):
        p = params(c, torch.Generator().manual_seed(4000 + j))
        if a.only and name not in a.only:
            continue
        packed = fp8_quantise(c, p, torch.Generator().manual_seed(5000), FP8["weight_block_size"]) if name == "deepseek_v3" else None
        tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(110 + j))
        hooks, first = {}, [True]

        def run(t, mask, positions):   # the hooks of the unpadded forward only
            hk, first[0] = (hooks if first[0] else None), False
            return forward(c, p, t, mask, positions, hooks=hk)
        arrays = reference_arrays(run, tokens)
        gap = hooks.pop("_gap")
        for k, v in hooks.items():
            arrays[f"hook:blocks.1.{k}"] = v.detach().numpy()
        write_folder(os.path.join(a.out, "hf_models", name), c, p, arrays, save_file)
        if packed is not None:   # the same model as the hub stores DeepSeek-V3: FP8 linear weights with block scales
            fp8_p = {k: v for k, v in p.items() if k not in packed}
            save_fp8_folder(os.path.join(a.out, "hf_models", name + "-fp8"), dict(c, quantization_config=FP8), fp8_p, packed, arrays)
        logits, gen_logits = torch.from_numpy(arrays["logits"]), torch.from_numpy(arrays["gen_logits"])
        top2 = gen_logits.topk(2, dim=-1).values
        print(f"{name}: logits |max| {logits.abs().max().item():.3f}, smallest generate top-2 gap "
              f"{(top2[..., 0] - top2[..., 1]).min().item():.4f}, smallest layer-1 routing gap {gap:.4f}")


if __name__ == "__main__":
    main()
