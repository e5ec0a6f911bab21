"""Writes tests/data/hf_models/opt: a tiny random OPT checkpoint (OPTForCausalLM, the architecture of facebook/opt-125m
… opt-66b) and its reference forward, in the layout of hf_models_fixture.py (config.json, model.safetensors,
reference.npz with the same keys, plus TransformerLens hook values of the unpadded forward under hook_* keys), for
HfTransformersParityTests and OptTests.

Like phi_fixture.py, this is NOT transformers' own code: the transformers repository snapshot was too large to bring
onto the machine (2026-12-07), so the forward below is a line-by-line transcription, in plain PyTorch, of transformers'
modeling_opt.py (4.4x, do_layer_norm_before=True, word_embed_proj_dim == hidden_size, enable_bias):
OPTLearnedPositionalEmbedding (max_position_embeddings + 2 rows; positions = cumsum(attention_mask) · attention_mask − 1,
read at row position + 2, so a padding token reads row 1), OPTAttention (q_proj(x) · head_dim^-½, k_proj, v_proj with
bias; q @ kᵀ plus the additive causal/padding mask; softmax; out_proj with bias), OPTDecoderLayer
(self_attn_layer_norm → self_attn → + residual; final_layer_norm → fc1 → relu → fc2 → + residual), OPTDecoder
(embed_tokens + embed_positions, final_layer_norm) and OPTForCausalLM (lm_head tied to embed_tokens, no bias).
config.json is written as OPTConfig.to_dict() does. The hook_* arrays are what TransformerLens names them
(convert_opt_weights: W_pos = embed_positions[2:]): hook_embed, hook_pos_embed [b, s, d]; hook_q_{i} (q_proj's output,
before the scaling), hook_k_{i}, hook_v_{i}, hook_z_{i} [b, s, head, d_head]; hook_pattern_{i} [b, head, q, k];
hook_attn_out_{i}, hook_resid_mid_{i}, hook_mlp_out_{i}; hook_mlp_pre_{i} / hook_mlp_post_{i} (fc1's output and its
relu); hook_ln1_{i} / hook_ln2_{i} (self_attn_layer_norm's and final_layer_norm's outputs); resid_pre is hidden_{i}.
Weights: LayerNorm weights N(1, 0.2²) and biases N(0, 0.2²), embeddings N(0, 1), position rows N(0, 0.5²), matrices
and other biases N(0, 0.2²); tokens, padding and greedy generation as olmo_fixture.reference_arrays (uncached forwards;
the positions come from the attention mask, as OPT computes them).
tests/data/hf_models/opt-350m is facebook/opt-350m's layout: do_layer_norm_before false (OPTDecoderLayer's post-norm
branch: self_attn_layer_norm after the attention's residual add, final_layer_norm after the MLP's; OPTDecoder has no
final_layer_norm then) and word_embed_proj_dim 16 ≠ hidden_size (embed_tokens [vocab, 16]; project_in [32, 16] after
it, project_out [16, 32] after the last layer, both without bias; lm_head tied to embed_tokens). Its hook_ln1_{i} /
hook_ln2_{i} are the post-norms' outputs (= resid_mid / resid_post), hook_embed embed_tokens' output (16 wide, before project_in, as TransformerLens's OPT bridge), hook_ln_final
project_out's output.
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/opt_fixture.py --out tests/data/hf_models
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from olmo_fixture import SEQ, causal_mask, fixture_cli, reference_arrays, summary, write_folder  # noqa: E402

CONFIG = dict(_remove_final_layer_norm=False, activation_dropout=0.0, activation_function="relu",
              architectures=["OPTForCausalLM"], attention_dropout=0.0, bos_token_id=2, do_layer_norm_before=True,
              dropout=0.0, enable_bias=True, eos_token_id=2, ffn_dim=96, hidden_size=32, init_std=0.02,
              layer_norm_elementwise_affine=True, layerdrop=0.0, max_position_embeddings=64, model_type="opt",
              num_attention_heads=4, num_hidden_layers=3, pad_token_id=1, torch_dtype="float32", use_cache=True,
              vocab_size=128, word_embed_proj_dim=32)
OFFSET = 2


def params(c, g):
    d, v, m, we = c["hidden_size"], c["vocab_size"], c["ffn_dim"], c["word_embed_proj_dim"]
    p = {"model.decoder.embed_tokens.weight": torch.randn(v, we, generator=g),
         "model.decoder.embed_positions.weight": 0.5 * torch.randn(c["max_position_embeddings"] + OFFSET, d, generator=g)}
    for i in range(c["num_hidden_layers"]):
        L = f"model.decoder.layers.{i}."
        for name, shape in (("self_attn.k_proj", (d, d)), ("self_attn.v_proj", (d, d)), ("self_attn.q_proj", (d, d)),
                            ("self_attn.out_proj", (d, d))):
            p[L + name + ".weight"] = 0.2 * torch.randn(*shape, generator=g)
            p[L + name + ".bias"] = 0.2 * torch.randn(shape[0], generator=g)
        p[L + "self_attn_layer_norm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "self_attn_layer_norm.bias"] = 0.2 * torch.randn(d, generator=g)
        p[L + "fc1.weight"] = 0.2 * torch.randn(m, d, generator=g)
        p[L + "fc1.bias"] = 0.2 * torch.randn(m, generator=g)
        p[L + "fc2.weight"] = 0.2 * torch.randn(d, m, generator=g)
        p[L + "fc2.bias"] = 0.2 * torch.randn(d, generator=g)
        p[L + "final_layer_norm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "final_layer_norm.bias"] = 0.2 * torch.randn(d, generator=g)
    if c["do_layer_norm_before"]:   # OPTDecoder: final_layer_norm only then
        p["model.decoder.final_layer_norm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p["model.decoder.final_layer_norm.bias"] = 0.2 * torch.randn(d, generator=g)
    if we != d:   # project_in / project_out, nn.Linear without bias
        p["model.decoder.project_in.weight"] = 0.2 * torch.randn(d, we, generator=g)
        p["model.decoder.project_out.weight"] = 0.2 * torch.randn(we, d, generator=g)
    return p


def forward(c, p, tokens, mask=None, positions=None, hooks=None):
    """Returns (logits, hidden_states as HF's output_hidden_states); fills `hooks` (a dict) with the hook_* arrays.
    `positions` is ignored: OPT computes them from the attention mask."""
    d, h = c["hidden_size"], c["num_attention_heads"]
    hd = d // h
    scaling = hd ** -0.5
    b, s = tokens.shape
    attention_mask = mask if mask is not None else torch.ones(b, s, dtype=torch.long)
    position_ids = (torch.cumsum(attention_mask, dim=1) * attention_mask - 1).long()   # OPTLearnedPositionalEmbedding
    causal = causal_mask(b, s, mask)
    keep = (lambda k, t: hooks.__setitem__(k, t.clone())) if hooks is not None else (lambda k, t: None)
    inputs_embeds = p["model.decoder.embed_tokens.weight"][tokens]
    pos_embeds = p["model.decoder.embed_positions.weight"][position_ids + OFFSET]
    keep("hook_embed", inputs_embeds)   # TransformerLens's bridge: embed_tokens' output, before project_in
    if "model.decoder.project_in.weight" in p:
        inputs_embeds = inputs_embeds @ p["model.decoder.project_in.weight"].T
    keep("hook_pos_embed", pos_embeds)
    pre_norm = c["do_layer_norm_before"]
    x = inputs_embeds + pos_embeds
    hidden = []
    for i in range(c["num_hidden_layers"]):
        hidden.append(x)
        L = f"model.decoder.layers.{i}."
        lin = lambda t, n: t @ p[L + n + ".weight"].T + p[L + n + ".bias"]
        ln = lambda t, n: F.layer_norm(t, (d,), p[L + n + ".weight"], p[L + n + ".bias"], 1e-5)
        residual = x
        hs = ln(x, "self_attn_layer_norm") if pre_norm else x
        if pre_norm:
            keep(f"hook_ln1_{i}", hs)
        q_proj = lin(hs, "self_attn.q_proj")
        keep(f"hook_q_{i}", q_proj.view(b, s, h, hd))
        q = (q_proj * scaling).view(b, s, h, hd).transpose(1, 2)
        k = lin(hs, "self_attn.k_proj").view(b, s, h, hd).transpose(1, 2)
        v = lin(hs, "self_attn.v_proj").view(b, s, h, hd).transpose(1, 2)
        keep(f"hook_k_{i}", k.transpose(1, 2))
        keep(f"hook_v_{i}", v.transpose(1, 2))
        w = torch.matmul(q, k.transpose(2, 3)) + causal
        w = F.softmax(w, dim=-1)
        keep(f"hook_pattern_{i}", w)
        a = torch.matmul(w, v).transpose(1, 2)
        keep(f"hook_z_{i}", a)
        attn_out = lin(a.reshape(b, s, d), "self_attn.out_proj")
        keep(f"hook_attn_out_{i}", attn_out)
        x = residual + attn_out
        if not pre_norm:
            x = ln(x, "self_attn_layer_norm")
            keep(f"hook_ln1_{i}", x)
        keep(f"hook_resid_mid_{i}", x)
        residual = x
        hs = ln(x, "final_layer_norm") if pre_norm else x
        if pre_norm:
            keep(f"hook_ln2_{i}", hs)
        pre = lin(hs, "fc1")
        post = F.relu(pre)
        keep(f"hook_mlp_pre_{i}", pre)
        keep(f"hook_mlp_post_{i}", post)
        ff = lin(post, "fc2")
        keep(f"hook_mlp_out_{i}", ff)
        x = residual + ff
        if not pre_norm:
            x = ln(x, "final_layer_norm")
            keep(f"hook_ln2_{i}", x)
    if pre_norm:
        x = F.layer_norm(x, (d,), p["model.decoder.final_layer_norm.weight"], p["model.decoder.final_layer_norm.bias"], 1e-5)
    if "model.decoder.project_out.weight" in p:
        x = x @ p["model.decoder.project_out.weight"].T
        keep("hook_ln_final", x)
    hidden.append(x)
    return x @ p["model.decoder.embed_tokens.weight"].T, hidden


def main():
    a, save_file = fixture_cli("/tmp/opt_site")
    c = CONFIG
    p = params(c, torch.Generator().manual_seed(3400))
    tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(94))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    hooks = {}
    with torch.no_grad():
        forward(c, p, tokens, hooks=hooks)
    arrays.update({k: t.numpy() for k, t in hooks.items()})
    write_folder(os.path.join(a.out, "opt"), c, p, arrays, save_file)
    print(summary("opt", arrays))
    c = dict(CONFIG, do_layer_norm_before=False, word_embed_proj_dim=16)
    p = params(c, torch.Generator().manual_seed(3401))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    hooks = {}
    with torch.no_grad():
        forward(c, p, tokens, hooks=hooks)
    arrays.update({k: t.numpy() for k, t in hooks.items()})
    write_folder(os.path.join(a.out, "opt-350m"), c, p, arrays, save_file)
    print(summary("opt-350m", arrays))


if __name__ == "__main__":
    main()
