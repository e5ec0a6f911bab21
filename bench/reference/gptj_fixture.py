"""Writes tests/data/hf_models/gptj: a tiny random GPT-J checkpoint (GPTJForCausalLM, the architecture of
EleutherAI/gpt-j-6B) and its reference forward, in the layout of hf_models_fixture.py (config.json, model.safetensors,
reference.npz with the same keys, plus TransformerLens hook values of the unpadded forward under hook_* keys), for
HfTransformersParityTests and GptJTests.

Like phi_fixture.py, this is NOT transformers' own code: the transformers repository snapshot was too large to bring
onto the machine (2026-12-07), so the forward below is a line-by-line transcription, in plain PyTorch, of transformers'
modeling_gptj.py: create_sinusoidal_positions (inv_freq = 1 / 10000^(arange(0, rotary_dim, 2) / rotary_dim), the
[n_positions, rotary_dim] table of sin then cos, gathered at position_ids), apply_rotary_pos_emb (sin and cos
repeat_interleave'd by 2) with rotate_every_two (x[..., ::2], x[..., 1::2] -> stack((-x2, x1), -1).flatten(-2)) on the
first rotary_dim dims of each head of q and k, the rest passed through; GPTJAttention (q_proj, k_proj, v_proj, out_proj
without bias; scores in float32, masked, divided by sqrt(head_dim), plus the additive mask; softmax; attn @ v),
GPTJMLP (fc_in, NewGELUActivation "gelu_new", fc_out, with bias), GPTJBlock (one ln_1 read by attn and mlp;
hidden = attn_output + feed_forward_hidden_states + residual), GPTJModel (wte, ln_f) and GPTJForCausalLM (lm_head with
bias, untied). config.json is written as GPTJConfig.to_dict() does (n_inner null: 4 · n_embd).
The hook_* arrays are what TransformerLens names them in its parallel_attn_mlp block (ln2 tied to ln1, as its
convert_gptj_weights; rotary_adjacent_pairs): hook_q_{i}/hook_k_{i} before rotary and hook_rot_q_{i}/hook_rot_k_{i}
after, [b, s, head, d_head]; hook_pattern_{i} [b, head, q, k]; hook_z_{i} [b, s, head, d_head]; hook_attn_out_{i},
hook_mlp_out_{i}; mlp_pre_{i} / mlp_post_{i} (fc_in's output and gelu_new of it); ln1_{i} (ln_1's output); resid_post
is hidden_{i+1}.
Weights: LayerNorm weights N(1, 0.2²) and biases N(0, 0.2²), embeddings N(0, 1), matrices and other biases N(0, 0.2²);
tokens, padding and greedy generation as olmo_fixture.reference_arrays (uncached forwards).
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/gptj_fixture.py --out tests/data/hf_models
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from olmo_fixture import SEQ, causal_mask, fixture_cli, reference_arrays, summary, write_folder  # noqa: E402
from phi_fixture import gelu_new  # noqa: E402

CONFIG = dict(activation_function="gelu_new", architectures=["GPTJForCausalLM"], attn_pdrop=0.0, bos_token_id=50256,
              embd_pdrop=0.0, eos_token_id=50256, initializer_range=0.02, layer_norm_epsilon=1e-5, model_type="gptj",
              n_embd=32, n_head=4, n_inner=None, n_layer=3, n_positions=64, resid_pdrop=0.0, rotary_dim=4,
              tie_word_embeddings=False, torch_dtype="float32", use_cache=True, vocab_size=128)


def params(c, g):
    d, v = c["n_embd"], c["vocab_size"]
    m = c["n_inner"] or 4 * d
    p = {"transformer.wte.weight": torch.randn(v, d, generator=g)}
    for i in range(c["n_layer"]):
        L = f"transformer.h.{i}."
        p[L + "ln_1.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "ln_1.bias"] = 0.2 * torch.randn(d, generator=g)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            p[L + f"attn.{name}.weight"] = 0.2 * torch.randn(d, d, generator=g)
        p[L + "mlp.fc_in.weight"] = 0.2 * torch.randn(m, d, generator=g)
        p[L + "mlp.fc_in.bias"] = 0.2 * torch.randn(m, generator=g)
        p[L + "mlp.fc_out.weight"] = 0.2 * torch.randn(d, m, generator=g)
        p[L + "mlp.fc_out.bias"] = 0.2 * torch.randn(d, generator=g)
    p["transformer.ln_f.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
    p["transformer.ln_f.bias"] = 0.2 * torch.randn(d, generator=g)
    p["lm_head.weight"] = 0.2 * torch.randn(v, d, generator=g)
    p["lm_head.bias"] = 0.2 * torch.randn(v, generator=g)
    return p


def create_sinusoidal_positions(num_pos, dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2) / dim))
    sinusoid_inp = torch.einsum("i , j -> i j", torch.arange(num_pos, dtype=torch.float), inv_freq).float()
    return torch.cat((torch.sin(sinusoid_inp), torch.cos(sinusoid_inp)), dim=1)


def rotate_every_two(x):
    x1 = x[:, :, :, ::2]
    x2 = x[:, :, :, 1::2]
    x = torch.stack((-x2, x1), dim=-1)
    return x.flatten(-2)


def apply_rotary_pos_emb(tensor, sin, cos):
    sin = torch.repeat_interleave(sin[:, :, None, :], 2, 3)
    cos = torch.repeat_interleave(cos[:, :, None, :], 2, 3)
    return (tensor * cos) + (rotate_every_two(tensor) * sin)


def forward(c, p, tokens, mask=None, positions=None, hooks=None):
    """Returns (logits, hidden_states as HF's output_hidden_states); fills `hooks` (a dict) with the hook_* arrays."""
    d, h, eps, rot = c["n_embd"], c["n_head"], c["layer_norm_epsilon"], c["rotary_dim"]
    hd = d // h
    b, s = tokens.shape
    if positions is None:
        positions = torch.arange(s)[None].expand(b, s)
    embed_positions = create_sinusoidal_positions(c["n_positions"], rot)
    sincos = embed_positions[positions]                     # [b, s, rot]
    sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
    causal = causal_mask(b, s, mask)
    x = p["transformer.wte.weight"][tokens]
    hidden = []
    keep = (lambda k, t: hooks.__setitem__(k, t.clone())) if hooks is not None else (lambda k, t: None)
    for i in range(c["n_layer"]):
        hidden.append(x)
        L = f"transformer.h.{i}."
        lin = lambda t, n: t @ p[L + n + ".weight"].T + (p[L + n + ".bias"] if L + n + ".bias" in p else 0)
        residual = x
        hs = F.layer_norm(x, (d,), p[L + "ln_1.weight"], p[L + "ln_1.bias"], eps)
        keep(f"hook_ln1_{i}", hs)
        q = lin(hs, "attn.q_proj").view(b, s, h, hd)       # _split_heads(..., rotary=True): [b, s, head, hd]
        k = lin(hs, "attn.k_proj").view(b, s, h, hd)
        v = lin(hs, "attn.v_proj").view(b, s, h, hd).permute(0, 2, 1, 3)
        keep(f"hook_q_{i}", q)
        keep(f"hook_k_{i}", k)
        keep(f"hook_v_{i}", v.transpose(1, 2))
        k_rot, k_pass = k[:, :, :, :rot], k[:, :, :, rot:]
        q_rot, q_pass = q[:, :, :, :rot], q[:, :, :, rot:]
        k = torch.cat([apply_rotary_pos_emb(k_rot, sin, cos), k_pass], dim=-1)
        q = torch.cat([apply_rotary_pos_emb(q_rot, sin, cos), q_pass], dim=-1)
        keep(f"hook_rot_q_{i}", q)
        keep(f"hook_rot_k_{i}", k)
        q, k = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3)
        w = torch.matmul(q.to(torch.float32), k.to(torch.float32).transpose(-1, -2))
        w = w / torch.sqrt(torch.tensor(hd, dtype=torch.float32)) + causal
        w = F.softmax(w, dim=-1).to(v.dtype)
        keep(f"hook_pattern_{i}", w)
        a = torch.matmul(w, v).permute(0, 2, 1, 3)
        keep(f"hook_z_{i}", a)
        attn_out = lin(a.reshape(b, s, d), "attn.out_proj")
        keep(f"hook_attn_out_{i}", attn_out)
        pre = lin(hs, "mlp.fc_in")
        post = gelu_new(pre)
        keep(f"hook_mlp_pre_{i}", pre)
        keep(f"hook_mlp_post_{i}", post)
        ff = lin(post, "mlp.fc_out")
        keep(f"hook_mlp_out_{i}", ff)
        x = attn_out + ff + residual
    x = F.layer_norm(x, (d,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
    hidden.append(x)
    return x @ p["lm_head.weight"].T + p["lm_head.bias"], hidden


def main():
    a, save_file = fixture_cli("/tmp/gptj_site")
    c = CONFIG
    p = params(c, torch.Generator().manual_seed(3300))
    tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(93))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    hooks = {}
    with torch.no_grad():
        forward(c, p, tokens, hooks=hooks)
    arrays.update({k: t.numpy() for k, t in hooks.items()})
    write_folder(os.path.join(a.out, "gptj"), c, p, arrays, save_file)
    print(summary("gptj", arrays))


if __name__ == "__main__":
    main()
