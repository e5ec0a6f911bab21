"""Writes tests/data/hf_models/phi3: a tiny random Phi-3 checkpoint (Phi3ForCausalLM, the architecture of
microsoft/Phi-3-mini-4k-instruct, Phi-3-medium and Phi-4-mini) and its reference forward, in the layout of
hf_models_fixture.py (config.json, model.safetensors, reference.npz with the same keys), for HfTransformersParityTests.

Like gpt_neo_fixture.py, this is NOT transformers' own code: the transformers repository snapshot was too large to
bring onto the machine (2026-12-07), so the forward below is a line-by-line transcription, in plain PyTorch, of
transformers' modeling_phi3.py (main, 2026): Phi3Attention (one qkv_proj without bias, rows [q; k; v] of
num_attention_heads·head_dim, num_key_value_heads·head_dim, num_key_value_heads·head_dim; rotary on the first
int(head_dim · partial_rotary_factor) dims of each head, the rest passed through; repeat_kv; scores × head_dim^-½;
softmax in float32; o_proj without bias), Phi3MLP (gate_up_proj without bias, chunk(2) into gate then up,
up · silu(gate), down_proj), Phi3RMSNorm (float32 normalisation, weight × x cast back), Phi3DecoderLayer (pre-norms,
residual adds), Phi3Model (create_sliding_window_causal_mask on every layer when sliding_window is set: a key is seen
when 0 <= q_idx - kv_idx < sliding_window in sequence indices, padding included) and Phi3ForCausalLM (lm_head, untied
here as in the Phi-3 checkpoints). The config sets partial_rotary_factor 0.75 (as Phi-4-mini does), grouped-query
attention (as Phi-3-medium and Phi-4-mini) and a sliding_window shorter than the 12-token sequence (Phi-3-mini: 2047),
so each is exercised. config.json is written as Phi3Config.to_dict() does (transformers 4.4x key names).
Weights are drawn as hf_models_fixture.py's redraw does: RMSNorm weights N(1, 0.2²), embeddings N(0, 1), matrices
N(0, 0.2²); tokens, padding and greedy generation as olmo_fixture.reference_arrays (uncached forwards).
tests/data/hf_models/phi3-longrope is the same model with rope_scaling {"type": "longrope", short_factor, long_factor}
(Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini) and a tiny original_max_position_embeddings of 10 (max_position_embeddings
64: factor 6.4), transcribing _compute_longrope_parameters (inv_freq = 1 / (ext_factors · θ^(arange(0, dim, 2) / dim))
in float32, short_factor or long_factor; attention_factor √(1 + ln(factor) / ln(original)) multiplying cos and sin) and
longrope_frequency_update (the long factors when max(position_ids) + 1 > original_max_position_embeddings, per forward).
Its 12-token forward is past 10 (long factors), its padded forward (positions up to 9) and short_logits (the first 8
tokens) within (short factors). Its generation arrays, uncached forwards, are not a KV-cache reference across the switch
(transformers' cached keys keep the factors they were rotated with), so only the forwards are compared (Phi3Tests).
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/phi3_fixture.py --out tests/data/hf_models
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from olmo_fixture import SEQ, causal_mask, fixture_cli, reference_arrays, rope_cos_sin, rotate_half, summary, write_folder  # noqa: E402

CONFIG = dict(architectures=["Phi3ForCausalLM"], attention_bias=False, attention_dropout=0.0, bos_token_id=1,
              embd_pdrop=0.0, eos_token_id=32000, hidden_act="silu", hidden_size=32, initializer_range=0.02,
              intermediate_size=48, max_position_embeddings=64, model_type="phi3", num_attention_heads=4,
              num_hidden_layers=3, num_key_value_heads=2, original_max_position_embeddings=64,
              pad_token_id=32000, partial_rotary_factor=0.75, resid_pdrop=0.0, rms_norm_eps=1e-5, rope_scaling=None,
              rope_theta=10000.0, sliding_window=6, tie_word_embeddings=False, torch_dtype="float32", use_cache=True,
              vocab_size=128)


def params(c, g):
    d, v, m = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    h, kv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = d // h
    p = {"model.embed_tokens.weight": torch.randn(v, d, generator=g)}
    for i in range(c["num_hidden_layers"]):
        L = f"model.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm"):
            p[L + n + ".weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "self_attn.qkv_proj.weight"] = 0.2 * torch.randn((h + 2 * kv) * hd, d, generator=g)
        p[L + "self_attn.o_proj.weight"] = 0.2 * torch.randn(d, h * hd, generator=g)
        p[L + "mlp.gate_up_proj.weight"] = 0.2 * torch.randn(2 * m, d, generator=g)
        p[L + "mlp.down_proj.weight"] = 0.2 * torch.randn(d, m, generator=g)
    p["model.norm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
    p["lm_head.weight"] = 0.2 * torch.randn(v, d, generator=g)
    return p


LONGROPE = dict(CONFIG, original_max_position_embeddings=10,
                rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 2.1], "long_factor": [1.5, 4.0, 9.0]})


def longrope_cos_sin(c, dim, positions):
    """_compute_longrope_parameters + longrope_frequency_update + the rotary forward: cos, sin [b, 1, s, dim]."""
    original = c["original_max_position_embeddings"]
    factor = c["max_position_embeddings"] / original
    attention_factor = c["rope_scaling"].get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    seq_len = int(positions.max()) + 1
    ext = torch.tensor(c["rope_scaling"]["long_factor" if seq_len > original else "short_factor"], dtype=torch.float32)
    inv_freq = 1.0 / (ext * c["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    b = positions.shape[0]
    freqs = (inv_freq[None, :, None].expand(b, -1, 1) @ positions[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * attention_factor)[:, None], (emb.sin() * attention_factor)[:, None]


def rms(x, w, eps):   # Phi3RMSNorm
    dt = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dt)


def forward(c, p, tokens, mask=None, positions=None):
    """Returns (logits, hidden_states as HF's output_hidden_states)."""
    d, h, kv, eps = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["rms_norm_eps"]
    hd = d // h
    b, s = tokens.shape
    if positions is None:
        positions = torch.arange(s)[None].expand(b, s)
    dim = int(hd * c.get("partial_rotary_factor", 1.0))
    longrope = (c.get("rope_scaling") or {}).get("type") in ("longrope", "su")
    cos, sin = longrope_cos_sin(c, dim, positions) if longrope else rope_cos_sin(c["rope_theta"], dim, positions)
    causal = causal_mask(b, s, mask, c.get("sliding_window"))
    x = p["model.embed_tokens.weight"][tokens]
    hidden = []

    def rope(t):   # apply_rotary_pos_emb: rotate the first `dim` dims, pass the rest
        r, keep = t[..., :dim], t[..., dim:]
        return torch.cat([r * cos + rotate_half(r) * sin, keep], dim=-1)
    for i in range(c["num_hidden_layers"]):
        hidden.append(x)
        L = f"model.layers.{i}."
        lin = lambda t, n: t @ p[L + n + ".weight"].T
        a_in = rms(x, p[L + "input_layernorm.weight"], eps)
        qkv = lin(a_in, "self_attn.qkv_proj")
        qp = h * hd
        q = qkv[..., :qp].reshape(b, s, -1, hd).transpose(1, 2)
        k = qkv[..., qp: qp + kv * hd].reshape(b, s, -1, hd).transpose(1, 2)
        v = qkv[..., qp + kv * hd:].reshape(b, s, -1, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)   # repeat_kv
        v = v[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)
        w = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5 + causal
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        a = torch.matmul(w, v).transpose(1, 2).reshape(b, s, -1)
        x = x + lin(a, "self_attn.o_proj")
        gate, up = lin(rms(x, p[L + "post_attention_layernorm.weight"], eps), "mlp.gate_up_proj").chunk(2, dim=-1)
        x = x + lin(up * F.silu(gate), "mlp.down_proj")
    x = rms(x, p["model.norm.weight"], eps)
    hidden.append(x)
    return x @ p["lm_head.weight"].T, hidden


def main():
    a, save_file = fixture_cli("/tmp/phi3_site")
    c = CONFIG
    p = params(c, torch.Generator().manual_seed(3100))
    tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(91))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    write_folder(os.path.join(a.out, "phi3"), c, p, arrays, save_file)
    print(summary("phi3", arrays))
    c = LONGROPE
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    with torch.no_grad():
        arrays["short_logits"] = forward(c, p, tokens[:, :8])[0].numpy()
    write_folder(os.path.join(a.out, "phi3-longrope"), c, p, arrays, save_file)
    print(summary("phi3-longrope", arrays))


if __name__ == "__main__":
    main()
