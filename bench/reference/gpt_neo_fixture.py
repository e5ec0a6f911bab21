"""Writes tests/data/hf_models/gpt_neo: a tiny random GPT-Neo checkpoint (GPTNeoForCausalLM, the architecture of
roneneldan/TinyStories-* and EleutherAI/gpt-neo-*) and its reference forward, in the layout of hf_models_fixture.py
(config.json, model.safetensors, reference.npz with the same keys), for HfTransformersParityTests.

Like olmo_fixture.py, this is NOT transformers' own code: the transformers repository snapshot (1.3 GB) was again too
large to bring onto the machine (2026-12-07), so the forward below is a line-by-line transcription, in plain PyTorch,
of transformers' modeling_gpt_neo.py (4.47): GPTNeoSelfAttention (q_proj, k_proj, v_proj without bias, out_proj with
bias; query and key in float32, attn_weights = q·kᵀ with NO 1/√head_dim scaling; torch.where(self.bias[...], w,
finfo.min) where the `bias` buffer is tril(ones) for "global" layers and tril(ones) ^ tril(ones, -window_size) for
"local" ones, i.e. a key is seen when 0 <= q_idx - kv_idx < window_size in sequence positions, padding included; then
the 4-D additive causal + padding mask of _prepare_4d_causal_attention_mask_with_cache_position added; softmax),
GPTNeoMLP (c_fc, gelu_new, c_proj as nn.Linear), GPTNeoBlock (ln_1, attn, residual, ln_2, mlp, residual),
GPTNeoModel (wte + wpe(position_ids), ln_f) and GPTNeoForCausalLM (lm_head tied to wte). GPTNeoConfig's
expand_attention_types_params turns attention_types [[["global", "local"], 1], [["local"], 1]] into attention_layers
["global", "local", "local"]; config.json carries both, as GPTNeoConfig.to_dict() writes them (no transformers_version).
It pins that reading of the HF code, not transformers itself: regenerate with hf_models_fixture.py once a transformers
tree is at hand. Weights are drawn as hf_models_fixture.py's redraw does: LayerNorm weights N(1, 0.2²) and biases
N(0, 0.1²), other biases N(0, 0.1²), wte and wpe N(0, 1), matrices N(0, 0.2²); tokens, padding and greedy generation
as olmo_fixture.reference_arrays (uncached forwards).
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/gpt_neo_fixture.py --out tests/data/hf_models
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from olmo_fixture import SEQ, fixture_cli, reference_arrays, summary, write_folder  # noqa: E402

ATTENTION_TYPES = [[["global", "local"], 1], [["local"], 1]]
CONFIG = dict(activation_function="gelu_new", architectures=["GPTNeoForCausalLM"], attention_dropout=0.0,
              attention_layers=["global", "local", "local"], attention_types=ATTENTION_TYPES, bos_token_id=50256,
              classifier_dropout=0.1, embed_dropout=0.0, eos_token_id=50256, hidden_size=32, initializer_range=0.02,
              intermediate_size=None, layer_norm_epsilon=1e-5, max_position_embeddings=64, model_type="gpt_neo",
              num_heads=4, num_layers=3, resid_dropout=0.0, summary_activation=None, summary_first_dropout=0.1,
              summary_proj_to_labels=True, summary_type="cls_index", summary_use_proj=True, torch_dtype="float32",
              use_cache=True, vocab_size=128, window_size=5)


def params(c, g):
    d, v = c["hidden_size"], c["vocab_size"]
    m = c["intermediate_size"] or 4 * d
    p = {"transformer.wte.weight": torch.randn(v, d, generator=g),
         "transformer.wpe.weight": torch.randn(c["max_position_embeddings"], d, generator=g)}
    for i in range(c["num_layers"]):
        L = f"transformer.h.{i}."
        for n in ("ln_1", "ln_2"):
            p[L + n + ".weight"] = 1 + 0.2 * torch.randn(d, generator=g)
            p[L + n + ".bias"] = 0.1 * torch.randn(d, generator=g)
        for n in ("k_proj", "v_proj", "q_proj"):
            p[L + f"attn.attention.{n}.weight"] = 0.2 * torch.randn(d, d, generator=g)
        p[L + "attn.attention.out_proj.weight"] = 0.2 * torch.randn(d, d, generator=g)
        p[L + "attn.attention.out_proj.bias"] = 0.1 * torch.randn(d, generator=g)
        p[L + "mlp.c_fc.weight"] = 0.2 * torch.randn(m, d, generator=g)
        p[L + "mlp.c_fc.bias"] = 0.1 * torch.randn(m, generator=g)
        p[L + "mlp.c_proj.weight"] = 0.2 * torch.randn(d, m, generator=g)
        p[L + "mlp.c_proj.bias"] = 0.1 * torch.randn(d, generator=g)
    p["transformer.ln_f.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
    p["transformer.ln_f.bias"] = 0.1 * torch.randn(d, generator=g)
    return p


def gelu_new(x):
    """transformers' NewGELUActivation."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def forward(c, p, tokens, mask=None, positions=None):
    """Returns (logits, hidden_states as HF's output_hidden_states)."""
    d, h, eps = c["hidden_size"], c["num_heads"], c["layer_norm_epsilon"]
    hd = d // h
    b, s = tokens.shape
    if positions is None:
        positions = torch.arange(s)[None].expand(b, s)
    minv = torch.finfo(torch.float32).min
    # _prepare_4d_causal_attention_mask_with_cache_position: finfo.min above the diagonal and at padded keys.
    causal4d = torch.full((s, s), minv).triu(1)[None, None].expand(b, 1, s, s).clone()
    if mask is not None:
        pad = causal4d + mask[:, None, None, :].float()
        causal4d = causal4d.masked_fill(pad == 0, minv)
    ones = torch.tril(torch.ones((c["max_position_embeddings"],) * 2, dtype=torch.bool))
    buffers = {"global": ones, "local": ones ^ torch.tril(ones, -c["window_size"])}
    x = p["transformer.wte.weight"][tokens] + p["transformer.wpe.weight"][positions]
    hidden = []
    for i in range(c["num_layers"]):
        hidden.append(x)
        L = f"transformer.h.{i}."
        lin = lambda t, n, bias=True: F.linear(t, p[L + n + ".weight"], p[L + n + ".bias"] if bias else None)
        ln = lambda t, n: F.layer_norm(t, (d,), p[L + n + ".weight"], p[L + n + ".bias"], eps)
        a_in = ln(x, "ln_1")
        split = lambda t: t.view(b, s, h, hd).permute(0, 2, 1, 3)
        q = split(lin(a_in, "attn.attention.q_proj", False)).to(torch.float32)
        k = split(lin(a_in, "attn.attention.k_proj", False)).to(torch.float32)
        v = split(lin(a_in, "attn.attention.v_proj", False))
        w = torch.matmul(q, k.transpose(-1, -2))
        ql = kl = s   # no cache: self.bias[:, :, key_length - query_length : key_length, :key_length]
        causal = buffers[c["attention_layers"][i]][None, None, kl - ql: kl, :kl]
        w = torch.where(causal, w, torch.tensor(minv, dtype=w.dtype))
        w = w + causal4d[:, :, :, :s]
        w = F.softmax(w, dim=-1).to(v.dtype)
        a = torch.matmul(w, v).permute(0, 2, 1, 3).contiguous().view(b, s, d)
        x = x + lin(a, "attn.attention.out_proj")
        x = x + lin(gelu_new(lin(ln(x, "ln_2"), "mlp.c_fc")), "mlp.c_proj")
    x = F.layer_norm(x, (d,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
    hidden.append(x)
    return x @ p["transformer.wte.weight"].T, hidden


def main():
    a, save_file = fixture_cli("/tmp/gpt_neo_site")
    c = CONFIG
    p = params(c, torch.Generator().manual_seed(3000))
    tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(90))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    write_folder(os.path.join(a.out, "gpt_neo"), c, p, arrays, save_file)
    print(summary("gpt_neo", arrays))


if __name__ == "__main__":
    main()
