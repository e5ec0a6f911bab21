"""Writes tests/data/hf_models/{olmo2, olmoe, olmoe-clip, olmo, olmo-clip, olmo3}: tiny random OLMo-2, OLMoE, OLMo (1) and
OLMo 3 checkpoints and their reference
forward, in the layout of hf_models_fixture.py (config.json, model.safetensors, reference.npz with the same keys), for
HfTransformersParityTests.

Unlike hf_models_fixture.py, this is NOT transformers' own code: the transformers repository snapshot (1.3 GB) was too
large to bring onto the machine (2026-12-05) and there is no PyPI, so the forward below is a line-by-line transcription,
in plain PyTorch, of transformers' modeling_olmo2.py (Olmo2RMSNorm, Olmo2Attention with eager_attention_forward,
Olmo2MLP, Olmo2DecoderLayer, Olmo2Model, Olmo2ForCausalLM) and modeling_olmoe.py (OlmoeRMSNorm, OlmoeAttention
eager, OlmoeSparseMoeBlock, OlmoeDecoderLayer), modeling_olmo.py (OlmoLayerNorm: F.layer_norm in float32 without weight
or bias, eps 1e-5; OlmoAttention with clip_qkv on q, k, v straight after the projections; OlmoDecoderLayer pre-norm) and
modeling_olmo3.py (Olmo2's block and whole-projection q/k norms; layer_types picking create_sliding_window_causal_mask,
key allowed when 0 <= q_idx - kv_idx < sliding_window counted in sequence positions, padding included; one rotary
embedding for every layer, as transformers 4.57 / 5.0 do with the default rope type), with LlamaRotaryEmbedding's default rope and the additive
finfo.min causal + padding mask of _prepare_4d_causal_attention_mask_with_cache_position. It is independent of
SaeSharp's C# code (other language, other structure: HF's per-expert loop, repeat_kv, additive mask), but written
by the same hand from the same reading, so it pins the reading of the HF code, not transformers itself: regenerate with
hf_models_fixture.py once a transformers tree is at hand. config.json is written with the keys Olmo2Config /
OlmoeConfig.to_dict() writes (no transformers_version); there is no config_transformers5.json.
Weights are drawn as in hf_models_fixture.py: matrices N(0, 0.2²), norm weights 1 + N(0, 0.2²) (q_norm/k_norm too),
embeddings N(0, 1); tokens as there. generate: greedy, 6 steps from tokens[:, :8] with row 0 left-padded by 3, each step
an uncached forward over the sequence so far (so gen_logits = gen_forward_logits up to float noise); SaeSharp's
KV-cache generation is compared with them.
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/olmo_fixture.py --out tests/data/hf_models
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
SEQ, GEN_PROMPT, GEN_NEW = 12, 8, 6

BASE = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
            hidden_act="silu", attention_bias=False, attention_dropout=0.0, initializer_range=0.02, rope_scaling=None,
            tie_word_embeddings=False, torch_dtype="float32", use_cache=True, pad_token_id=1, bos_token_id=None,
            eos_token_id=50279)
FAMILIES = {
    # OLMo-2 with grouped-query attention (as OLMo-2-0325-32B: k_norm is n_kv_heads·head_dim wide), rope_theta 5e5.
    "olmo2": dict(BASE, architectures=["Olmo2ForCausalLM"], model_type="olmo2", intermediate_size=64,
                  num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=500000.0),
    # OLMoE (as OLMoE-1B-7B-0924: MHA, norm_topk_prob false, no clip_qkv): 6 experts of width 24, top 3.
    "olmoe": dict(BASE, architectures=["OlmoeForCausalLM"], model_type="olmoe", intermediate_size=24,
                  num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0, clip_qkv=None, num_experts=6,
                  num_experts_per_tok=3, norm_topk_prob=False, output_router_logits=False, router_aux_loss_coef=0.01),
    # OLMoE with clip_qkv 0.5 (it bites: the normed q/k are ~1), GQA 4/2, norm_topk_prob true, top 2 of 4.
    "olmoe-clip": dict(BASE, architectures=["OlmoeForCausalLM"], model_type="olmoe", intermediate_size=24,
                       num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, clip_qkv=0.5, num_experts=4,
                       num_experts_per_tok=2, norm_topk_prob=True, output_router_logits=False, router_aux_loss_coef=0.01),
    # OLMo 1 (as OLMo-1B-hf: MHA, tied embeddings, no clip_qkv); no rms_norm_eps (OlmoLayerNorm's eps is fixed at 1e-5).
    "olmo": dict(BASE, architectures=["OlmoForCausalLM"], model_type="olmo", intermediate_size=64, num_key_value_heads=4,
                 rope_theta=10000.0, clip_qkv=None, tie_word_embeddings=True),
    # OLMo 1 with clip_qkv 0.4 (as OLMo-1B-0724-hf's 8.0, scaled to these tiny weights: it bites), GQA 4/2, untied.
    "olmo-clip": dict(BASE, architectures=["OlmoForCausalLM"], model_type="olmo", intermediate_size=64, num_key_value_heads=2,
                      rope_theta=10000.0, clip_qkv=0.4),
    # OLMo 3: GQA 4/2, a sliding layer (window 5, shorter than the 12-token forward and the 14-token generation) then a
    # full one.
    "olmo3": dict(BASE, architectures=["Olmo3ForCausalLM"], model_type="olmo3", intermediate_size=64, num_key_value_heads=2,
                  rms_norm_eps=1e-6, rope_theta=500000.0, sliding_window=5,
                  layer_types=["sliding_attention", "full_attention"]),
}


def params(c, g):
    d, h, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = d // h
    mt = c["model_type"]
    olmo1 = mt == "olmo"   # OlmoLayerNorm has no weights; no q/k norms
    p = {"model.embed_tokens.weight": torch.randn(c["vocab_size"], d, generator=g)}
    if not olmo1:
        p["model.norm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
    if not c["tie_word_embeddings"]:
        p["lm_head.weight"] = 0.2 * torch.randn(c["vocab_size"], d, generator=g)
    olmo2 = mt in ("olmo2", "olmo3")   # Olmo3's block and norms are Olmo2's
    dense = mt != "olmoe"
    for i in range(c["num_hidden_layers"]):
        L = f"model.layers.{i}."
        for name, shape in [("q_proj", (h * hd, d)), ("k_proj", (kv * hd, d)), ("v_proj", (kv * hd, d)), ("o_proj", (d, h * hd))]:
            p[L + f"self_attn.{name}.weight"] = 0.2 * torch.randn(*shape, generator=g)
        if not olmo1:
            p[L + "self_attn.q_norm.weight"] = 1 + 0.2 * torch.randn(h * hd, generator=g)
            p[L + "self_attn.k_norm.weight"] = 1 + 0.2 * torch.randn(kv * hd, generator=g)
        norms = [] if olmo1 else ["post_attention_layernorm", "post_feedforward_layernorm"] if olmo2 else ["input_layernorm", "post_attention_layernorm"]
        for n in norms:
            p[L + n + ".weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        m = c["intermediate_size"]
        experts = [f"mlp.experts.{e}." for e in range(c["num_experts"])] if not dense else ["mlp."]
        if not dense:
            p[L + "mlp.gate.weight"] = 0.2 * torch.randn(c["num_experts"], d, generator=g)
        for e in experts:
            p[L + e + "gate_proj.weight"] = 0.2 * torch.randn(m, d, generator=g)
            p[L + e + "up_proj.weight"] = 0.2 * torch.randn(m, d, generator=g)
            p[L + e + "down_proj.weight"] = 0.2 * torch.randn(d, m, generator=g)
    return p


def rms(x, w, eps, olmo2):
    dt = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (w * x).to(dt) if olmo2 else w * x.to(dt)   # Olmo2RMSNorm / OlmoeRMSNorm


def olmo_ln(x):
    """OlmoLayerNorm: F.layer_norm in float32, no weight or bias, eps 1e-5."""
    return F.layer_norm(x.to(torch.float32), (x.shape[-1],), None, None, eps=1e-5).to(x.dtype)


def rotate_half(x):
    return torch.cat((-x[..., x.shape[-1] // 2:], x[..., : x.shape[-1] // 2]), dim=-1)


def rope_cos_sin(theta, dim, positions):
    """The default rope's cos and sin [b, 1, s, dim] (HF *RotaryEmbedding.forward) for rotary width `dim`."""
    b = positions.shape[0]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = (inv_freq[None, :, None].expand(b, -1, 1) @ positions[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


def causal_mask(b, s, mask=None, window=None):
    """The additive [b, 1, s, s] mask: finfo.min above the diagonal and at padded keys; with `window`,
    create_sliding_window_causal_mask's too, where q_idx - kv_idx >= window (sequence indices)."""
    minv = torch.finfo(torch.float32).min
    causal = torch.full((s, s), minv).triu(1)[None, None].expand(b, 1, s, s).clone()
    if mask is not None:
        pad = causal + mask[:, None, None, :].float()
        causal = causal.masked_fill(pad == 0, minv)
    if window is not None:
        qi, ki = torch.arange(s)[:, None], torch.arange(s)[None, :]
        causal = causal.masked_fill((qi - ki >= window)[None, None], minv)
    return causal


def forward(c, p, tokens, mask=None, positions=None, gaps=None):
    """Returns (logits, hidden_states as HF's output_hidden_states)."""
    mt = c["model_type"]
    olmo1, olmo2 = mt == "olmo", mt in ("olmo2", "olmo3")
    d, h, kv, eps = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c.get("rms_norm_eps")
    hd = d // h
    b, s = tokens.shape
    if positions is None:
        positions = torch.arange(s)[None].expand(b, s)
    cos, sin = rope_cos_sin(c["rope_theta"], hd, positions)
    causal = causal_mask(b, s, mask)
    sliding = causal_mask(b, s, mask, c["sliding_window"]) if c.get("layer_types") else causal
    x = p["model.embed_tokens.weight"][tokens]
    hidden = []
    for i in range(c["num_hidden_layers"]):
        hidden.append(x)
        L = f"model.layers.{i}."
        lin = lambda t, n: t @ p[L + n + ".weight"].T
        attn_in = x if olmo2 else olmo_ln(x) if olmo1 else rms(x, p[L + "input_layernorm.weight"], eps, False)
        q, k, v = lin(attn_in, "self_attn.q_proj"), lin(attn_in, "self_attn.k_proj"), lin(attn_in, "self_attn.v_proj")
        if not olmo1:
            q = rms(q, p[L + "self_attn.q_norm.weight"], eps, olmo2)
            k = rms(k, p[L + "self_attn.k_norm.weight"], eps, olmo2)
        if c.get("clip_qkv") is not None:
            q, k, v = (t.clamp(min=-c["clip_qkv"], max=c["clip_qkv"]) for t in (q, k, v))
        q = q.view(b, s, h, hd).transpose(1, 2)
        k = k.view(b, s, kv, hd).transpose(1, 2)
        v = v.view(b, s, kv, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)   # repeat_kv
        v = v[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)
        layer_mask = sliding if c.get("layer_types") and c["layer_types"][i] == "sliding_attention" else causal
        w = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5 + layer_mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        a = torch.matmul(w, v).transpose(1, 2).reshape(b, s, d)
        a = lin(a, "self_attn.o_proj")
        if olmo2:
            x = x + rms(a, p[L + "post_attention_layernorm.weight"], eps, True)
            m = lin(F.silu(lin(x, "mlp.gate_proj")) * lin(x, "mlp.up_proj"), "mlp.down_proj")
            x = x + rms(m, p[L + "post_feedforward_layernorm.weight"], eps, True)
            continue
        x = x + a
        if olmo1:
            hs = olmo_ln(x)
            x = x + lin(F.silu(lin(hs, "mlp.gate_proj")) * lin(hs, "mlp.up_proj"), "mlp.down_proj")
            continue
        hs = rms(x, p[L + "post_attention_layernorm.weight"], eps, False).view(-1, d)
        router = hs @ p[L + "mlp.gate.weight"].T
        probs = F.softmax(router, dim=1, dtype=torch.float)
        rw, chosen = torch.topk(probs, c["num_experts_per_tok"], dim=-1)
        if gaps is not None:
            srt = probs.sort(-1, descending=True).values
            kk = c["num_experts_per_tok"]
            gaps.append((srt[:, kk - 1] - srt[:, kk]).min().item())
        if c["norm_topk_prob"]:
            rw /= rw.sum(dim=-1, keepdim=True)
        rw = rw.to(hs.dtype)
        out = torch.zeros_like(hs)
        expert_mask = F.one_hot(chosen, num_classes=c["num_experts"]).permute(2, 1, 0)
        for e in range(c["num_experts"]):
            idx, top_x = torch.where(expert_mask[e])
            E = L + f"mlp.experts.{e}."
            cur = hs[None, top_x].reshape(-1, d)
            y = (F.silu(cur @ p[E + "gate_proj.weight"].T) * (cur @ p[E + "up_proj.weight"].T)) @ p[E + "down_proj.weight"].T
            out.index_add_(0, top_x, (y * rw[top_x, idx, None]).to(hs.dtype))
        x = x + out.view(b, s, d)
    x = olmo_ln(x) if olmo1 else rms(x, p["model.norm.weight"], eps, olmo2)
    hidden.append(x)
    return x @ p["lm_head.weight" if not c["tie_word_embeddings"] else "model.embed_tokens.weight"].T, hidden


def write_folder(folder, config, weights, arrays, save_file):
    """One fixture folder in hf_models_fixture.py's layout: config.json, model.safetensors, reference.npz (emptied first)."""
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(weights, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    np.savez(os.path.join(folder, "reference.npz"), **arrays)


def safetensors_save_file(site):
    """safetensors.torch.save_file from hf_models_fixture.py's stand-in (no safetensors package on the machine), its
    files written to `site`."""
    import hf_models_fixture as hf
    os.makedirs(os.path.join(site, "safetensors"), exist_ok=True)
    with open(os.path.join(site, "safetensors", "__init__.py"), "w") as f:
        f.write(hf.SAFETENSORS_SHIM)
    with open(os.path.join(site, "safetensors", "torch.py"), "w") as f:
        f.write(hf.SAFETENSORS_TORCH_SHIM)
    sys.path.insert(0, site)
    from safetensors.torch import save_file
    return save_file


def reference_arrays(run, tokens):
    """The reference.npz arrays of every transcription fixture (the keys hf_models_fixture.py writes): logits and hidden
    states of `tokens` [2, SEQ], unpadded and padded (row 0 left-padded by 3, row 1 right-padded by 2), and greedy
    generation of GEN_NEW tokens after GEN_PROMPT (row 0 left-padded by 3), one uncached forward per step, with the
    forward of the whole generated sequence. run(tokens, mask, positions) -> (logits, hidden states); under no_grad."""
    with torch.no_grad():
        logits, hidden = run(tokens, None, None)
        mask = torch.ones(2, SEQ, dtype=torch.long)
        mask[0, :3] = 0
        mask[1, SEQ - 2:] = 0
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        plogits, phidden = run(tokens, mask, positions)
        gen_mask = torch.ones(2, GEN_PROMPT, dtype=torch.long)
        gen_mask[0, :3] = 0
        seq, m, steps = tokens[:, :GEN_PROMPT], gen_mask, []
        for _ in range(GEN_NEW):
            lg, _ = run(seq, m, (m.cumsum(-1) - 1).clamp(min=0))
            steps.append(lg[:, -1])
            seq = torch.cat([seq, lg[:, -1].argmax(-1, keepdim=True)], 1)
            m = torch.cat([m, torch.ones(2, 1, dtype=torch.long)], 1)
        gen_logits = torch.stack(steps, 1)
        whole, _ = run(seq, m, (m.cumsum(-1) - 1).clamp(min=0))
        gen_forward = whole[:, GEN_PROMPT - 1:-1]
    arrays = {"tokens": tokens.numpy(), "logits": logits.numpy(), "padded_mask": mask.numpy(), "padded_logits": plogits.numpy(),
              "gen_mask": gen_mask.numpy(), "gen_tokens": seq.numpy(), "gen_logits": gen_logits.numpy(),
              "gen_forward_logits": gen_forward.numpy()}
    for j, t in enumerate(hidden):
        arrays[f"hidden_{j}"] = t.numpy()
    for j, t in enumerate(phidden):
        arrays[f"padded_hidden_{j}"] = t.numpy()
    return arrays


def fixture_cli(default_site):
    """--out and --site of a transcription fixture: (args, safetensors save_file); torch on one thread."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--site", help="a folder where hf_models_fixture.py's prepare_site wrote the safetensors stand-in")
    a = ap.parse_args()
    torch.set_num_threads(1)
    return a, safetensors_save_file(a.site or default_site)


def summary(name, arrays):
    """'name: logits |max| ..., smallest generate top-2 gap ...' of reference_arrays' output."""
    logits, gen_logits = torch.from_numpy(arrays["logits"]), torch.from_numpy(arrays["gen_logits"])
    top2 = gen_logits.topk(2, dim=-1).values
    return (f"{name}: logits |max| {logits.abs().max().item():.3f}, smallest generate top-2 gap "
            f"{(top2[..., 0] - top2[..., 1]).min().item():.4f}")


def main():
    a, save_file = fixture_cli("/tmp/olmo_site")
    for i, (name, c) in enumerate(FAMILIES.items()):
        g = torch.Generator().manual_seed(2000 + i)
        p = params(c, g)
        tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(70 + i))
        gaps = []
        first = [True]

        def run(t, mask, positions):   # the router gaps of the unpadded forward only
            g, first[0] = (gaps if first[0] else None), False
            return forward(c, p, t, mask, positions, gaps=g)
        arrays = reference_arrays(run, tokens)
        write_folder(os.path.join(a.out, name), c, p, arrays, save_file)
        print(summary(name, arrays) + (f", smallest router gap between expert k and k+1 {min(gaps):.4f}" if gaps else ""))


if __name__ == "__main__":
    main()
