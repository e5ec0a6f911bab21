"""Writes tests/data/hf_models/phi: a tiny random Phi checkpoint (PhiForCausalLM, the architecture of microsoft/phi-1,
phi-1_5 and phi-2) and its reference forward, in the layout of hf_models_fixture.py (config.json, model.safetensors,
reference.npz with the same keys, plus TransformerLens hook values of the unpadded forward under hook_* keys), for
HfTransformersParityTests and PhiTests.

Like phi3_fixture.py, this is NOT transformers' own code: the transformers repository snapshot was too large to bring
onto the machine (2026-12-07), so the forward below is a line-by-line transcription, in plain PyTorch, of transformers'
modeling_phi.py (4.48 and later): PhiAttention (q_proj, k_proj, v_proj with bias, viewed [b, s, heads, head_dim];
rotary_ndims = int(head_dim · partial_rotary_factor) dims of each head rotated with rotate_half, the rest passed
through; repeat_kv; scores × head_dim^-½ plus the additive causal mask; softmax in float32; dense with bias),
PhiMLP (fc1, NewGELUActivation "gelu_new", fc2, all with bias), PhiDecoderLayer (one input_layernorm, nn.LayerNorm with
bias and layer_norm_eps, read by both self_attn and mlp; hidden = attn_outputs + feed_forward_hidden_states + residual),
PhiModel (embed_tokens, PhiRotaryEmbedding's default rope over rotary_ndims, final_layernorm) and PhiForCausalLM
(lm_head with bias, untied). qk_layernorm is false, as in every microsoft/phi checkpoint. config.json is written as
PhiConfig.to_dict() does (transformers 4.4x key names; num_key_value_heads null as in phi-2's file, i.e. MHA).
The hook_* arrays are what TransformerLens names them in its parallel_attn_mlp block (ln2 tied to ln1, as its
convert_phi_weights): hook_q_{i}/hook_k_{i} before rotary and hook_rot_q_{i}/hook_rot_k_{i} after, [b, s, head, d_head];
hook_pattern_{i} [b, head, q, k]; hook_z_{i} [b, s, head, d_head]; hook_attn_out_{i}, hook_mlp_out_{i}; mlp_pre_{i} /
mlp_post_{i} (fc1's output and gelu_new of it); ln1_{i} (input_layernorm's output); resid_post is hidden_{i+1}.
Weights: LayerNorm weights N(1, 0.2²) and biases N(0, 0.2²), embeddings N(0, 1), matrices and other biases N(0, 0.2²);
tokens, padding and greedy generation as olmo_fixture.reference_arrays (uncached forwards).
tests/data/hf_models/phi-qk_layernorm is the same model with qk_layernorm true: PhiAttention's q_layernorm and
k_layernorm (nn.LayerNorm(head_dim, eps=layer_norm_eps), weight and bias) applied to q and k viewed per head, after
hook_q / hook_k (as SaeSharp's Qwen3 q_norm/k_norm; TransformerLens has no phi qk_layernorm) and before rotary.
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/phi_fixture.py --out tests/data/hf_models
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from olmo_fixture import SEQ, causal_mask, fixture_cli, reference_arrays, rope_cos_sin, rotate_half, summary, write_folder  # noqa: E402

CONFIG = dict(architectures=["PhiForCausalLM"], attention_dropout=0.0, bos_token_id=None, embd_pdrop=0.0,
              eos_token_id=None, hidden_act="gelu_new", hidden_size=32, initializer_range=0.02, intermediate_size=64,
              layer_norm_eps=1e-5, max_position_embeddings=64, model_type="phi", num_attention_heads=4,
              num_hidden_layers=3, num_key_value_heads=None, partial_rotary_factor=0.5, qk_layernorm=False,
              resid_pdrop=0.0, rope_scaling=None, rope_theta=10000.0, tie_word_embeddings=False, torch_dtype="float32",
              use_cache=True, vocab_size=128)


def params(c, g):
    d, v, m, h = c["hidden_size"], c["vocab_size"], c["intermediate_size"], c["num_attention_heads"]
    kv = c["num_key_value_heads"] or h
    hd = d // h
    p = {"model.embed_tokens.weight": torch.randn(v, d, generator=g)}
    for i in range(c["num_hidden_layers"]):
        L = f"model.layers.{i}."
        p[L + "input_layernorm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "input_layernorm.bias"] = 0.2 * torch.randn(d, generator=g)
        for name, rows in (("q_proj", h * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
            p[L + f"self_attn.{name}.weight"] = 0.2 * torch.randn(rows, d, generator=g)
            p[L + f"self_attn.{name}.bias"] = 0.2 * torch.randn(rows, generator=g)
        p[L + "self_attn.dense.weight"] = 0.2 * torch.randn(d, h * hd, generator=g)
        p[L + "self_attn.dense.bias"] = 0.2 * torch.randn(d, generator=g)
        p[L + "mlp.fc1.weight"] = 0.2 * torch.randn(m, d, generator=g)
        p[L + "mlp.fc1.bias"] = 0.2 * torch.randn(m, generator=g)
        p[L + "mlp.fc2.weight"] = 0.2 * torch.randn(d, m, generator=g)
        p[L + "mlp.fc2.bias"] = 0.2 * torch.randn(d, generator=g)
        if c["qk_layernorm"]:
            for name in ("q_layernorm", "k_layernorm"):
                p[L + f"self_attn.{name}.weight"] = 1 + 0.2 * torch.randn(hd, generator=g)
                p[L + f"self_attn.{name}.bias"] = 0.2 * torch.randn(hd, generator=g)
    p["model.final_layernorm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
    p["model.final_layernorm.bias"] = 0.2 * torch.randn(d, generator=g)
    p["lm_head.weight"] = 0.2 * torch.randn(v, d, generator=g)
    p["lm_head.bias"] = 0.2 * torch.randn(v, generator=g)
    return p


def gelu_new(x):   # transformers NewGELUActivation
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def forward(c, p, tokens, mask=None, positions=None, hooks=None):
    """Returns (logits, hidden_states as HF's output_hidden_states); fills `hooks` (a dict) with the hook_* arrays."""
    d, h, eps = c["hidden_size"], c["num_attention_heads"], c["layer_norm_eps"]
    kv = c["num_key_value_heads"] or h
    hd = d // h
    b, s = tokens.shape
    if positions is None:
        positions = torch.arange(s)[None].expand(b, s)
    rot = int(hd * c["partial_rotary_factor"])
    cos, sin = rope_cos_sin(c["rope_theta"], rot, positions)
    causal = causal_mask(b, s, mask)
    x = p["model.embed_tokens.weight"][tokens]
    hidden = []
    keep = (lambda k, t: hooks.__setitem__(k, t.clone())) if hooks is not None else (lambda k, t: None)

    def rope(t):   # PhiAttention: rotate the first rotary_ndims dims of each head, pass the rest
        r, rest = t[..., :rot], t[..., rot:]
        return torch.cat([r * cos + rotate_half(r) * sin, rest], dim=-1)
    for i in range(c["num_hidden_layers"]):
        hidden.append(x)
        L = f"model.layers.{i}."
        lin = lambda t, n: t @ p[L + n + ".weight"].T + p[L + n + ".bias"]
        residual = x
        hs = F.layer_norm(x, (d,), p[L + "input_layernorm.weight"], p[L + "input_layernorm.bias"], eps)
        keep(f"hook_ln1_{i}", hs)
        q = lin(hs, "self_attn.q_proj").view(b, s, -1, hd).transpose(1, 2)
        k = lin(hs, "self_attn.k_proj").view(b, s, -1, hd).transpose(1, 2)
        v = lin(hs, "self_attn.v_proj").view(b, s, -1, hd).transpose(1, 2)
        keep(f"hook_q_{i}", q.transpose(1, 2))
        keep(f"hook_k_{i}", k.transpose(1, 2))
        keep(f"hook_v_{i}", v.transpose(1, 2))
        if c["qk_layernorm"]:   # PhiAttention: q_layernorm / k_layernorm over head_dim, before rotary
            q = F.layer_norm(q, (hd,), p[L + "self_attn.q_layernorm.weight"], p[L + "self_attn.q_layernorm.bias"], eps)
            k = F.layer_norm(k, (hd,), p[L + "self_attn.k_layernorm.weight"], p[L + "self_attn.k_layernorm.bias"], eps)
        q, k = rope(q), rope(k)
        keep(f"hook_rot_q_{i}", q.transpose(1, 2))
        keep(f"hook_rot_k_{i}", k.transpose(1, 2))
        k = k[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)   # repeat_kv
        v = v[:, :, None].expand(b, kv, h // kv, s, hd).reshape(b, h, s, hd)
        w = torch.matmul(q, k.transpose(2, 3)) * hd ** -0.5 + causal
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        keep(f"hook_pattern_{i}", w)
        a = torch.matmul(w, v).transpose(1, 2)
        keep(f"hook_z_{i}", a)
        attn_out = lin(a.reshape(b, s, -1), "self_attn.dense")
        keep(f"hook_attn_out_{i}", attn_out)
        pre = lin(hs, "mlp.fc1")
        post = gelu_new(pre)
        keep(f"hook_mlp_pre_{i}", pre)
        keep(f"hook_mlp_post_{i}", post)
        ff = lin(post, "mlp.fc2")
        keep(f"hook_mlp_out_{i}", ff)
        x = attn_out + ff + residual
    x = F.layer_norm(x, (d,), p["model.final_layernorm.weight"], p["model.final_layernorm.bias"], eps)
    hidden.append(x)
    return x @ p["lm_head.weight"].T + p["lm_head.bias"], hidden


def main():
    a, save_file = fixture_cli("/tmp/phi_site")
    c = CONFIG
    p = params(c, torch.Generator().manual_seed(3200))
    tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(92))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    hooks = {}
    with torch.no_grad():
        forward(c, p, tokens, hooks=hooks)
    arrays.update({k: t.numpy() for k, t in hooks.items()})
    write_folder(os.path.join(a.out, "phi"), c, p, arrays, save_file)
    print(summary("phi", arrays))
    c = dict(CONFIG, qk_layernorm=True)
    p = params(c, torch.Generator().manual_seed(3201))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    hooks = {}
    with torch.no_grad():
        forward(c, p, tokens, hooks=hooks)
    arrays.update({k: t.numpy() for k, t in hooks.items()})
    write_folder(os.path.join(a.out, "phi-qk_layernorm"), c, p, arrays, save_file)
    print(summary("phi-qk_layernorm", arrays))


if __name__ == "__main__":
    main()
