"""Writes tests/data/hf_models/bloom: a tiny random BLOOM checkpoint (BloomForCausalLM, the architecture of
bigscience/bloom-560m … bloom-7b1, bloom and bloomz) and its reference forward, in the layout of hf_models_fixture.py
(config.json, model.safetensors, reference.npz with the same keys, plus TransformerLens hook values of the unpadded
forward under hook_* keys), for HfTransformersParityTests and BloomTests.

Like opt_fixture.py, this is NOT transformers' own code: the transformers repository snapshot was too large to bring
onto the machine (2026-12-08), so the forward below is a line-by-line transcription, in plain PyTorch, of transformers'
modeling_bloom.py (4.4x, apply_residual_connection_post_layernorm=False, pretraining_tp=1): build_alibi_tensor (slopes
2^(-8/p)^(1..p) for p the largest power of two <= n_head, then 2^(-4/p)^(1, 3, 5, ...) for the remaining heads;
alibi = slope · ((cumsum(attention_mask) − 1) · attention_mask) over the key positions, padding and cache included),
BloomAttention (fused query_key_value whose output is [n_head, 3, head_dim] per token; scores = alibi + q·kᵀ/√head_dim
by baddbmm, the layer_number factors cancelling; masked_fill with finfo.min; softmax in float32; dense with bias),
BloomMLP (dense_h_to_4h → bloom_gelu_forward, the tanh GELU with 0.79788456 → dense_4h_to_h), BloomBlock
(input_layernorm → self_attention → + residual; post_attention_layernorm → mlp → + residual), BloomModel
(word_embeddings → word_embeddings_layernorm, h.{i}, ln_f) and BloomForCausalLM (lm_head tied to word_embeddings).
n_head is 6, not a power of two, so the extra-slope rule is exercised. config.json has the keys BloomConfig's
save_pretrained writes. The hook_* arrays are what TransformerLens names them (convert_bloom_weights: embed.ln is
word_embeddings_layernorm, so hook_embed is its output): hook_embed [b, s, d]; hook_q_{i}, hook_k_{i}, hook_v_{i},
hook_z_{i} [b, s, head, d_head]; hook_attn_scores_{i} [b, head, q, k] as TransformerLens's alibi adds it
(slope · (key − query position), the per-query constant slope · query position less than HF's alibi; masked entries at
finfo.min); hook_pattern_{i}; hook_attn_out_{i}, hook_resid_mid_{i}, hook_mlp_out_{i}; hook_mlp_pre_{i} /
hook_mlp_post_{i}; hook_ln1_{i} / hook_ln2_{i}; resid_pre is hidden_{i}. Weights: LayerNorm weights N(1, 0.2²) and
biases N(0, 0.2²), word embeddings N(0, 1), matrices and other biases N(0, 0.2²); tokens, padding and greedy generation as
olmo_fixture.reference_arrays (uncached forwards; the alibi positions come from the attention mask, as BLOOM's).
Run (Debian bookworm, python3-torch 1.13.1, python3-numpy):
  /usr/bin/python3 bench/reference/bloom_fixture.py --out tests/data/hf_models
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from olmo_fixture import SEQ, causal_mask, fixture_cli, reference_arrays, summary, write_folder  # noqa: E402

CONFIG = dict(apply_residual_connection_post_layernorm=False, architectures=["BloomForCausalLM"], attention_dropout=0.0,
              bos_token_id=1, eos_token_id=2, hidden_dropout=0.0, hidden_size=48, initializer_range=0.02,
              layer_norm_epsilon=1e-5, model_type="bloom", n_head=6, n_layer=3, pad_token_id=3, pretraining_tp=1,
              slow_but_exact=False, torch_dtype="float32", use_cache=True, vocab_size=128)


def alibi_slopes(n_head):
    """build_alibi_tensor's slopes [n_head]."""
    closest = 2 ** math.floor(math.log2(n_head))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != n_head:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        remaining = min(closest, n_head - closest)
        slopes = torch.cat([slopes, torch.pow(extra_base, torch.arange(1, 1 + 2 * remaining, 2, dtype=torch.int32))], 0)
    return slopes


def params(c, g):
    d, v = c["hidden_size"], c["vocab_size"]
    p = {"transformer.word_embeddings.weight": torch.randn(v, d, generator=g),
         "transformer.word_embeddings_layernorm.weight": 1 + 0.2 * torch.randn(d, generator=g),
         "transformer.word_embeddings_layernorm.bias": 0.2 * torch.randn(d, generator=g)}
    for i in range(c["n_layer"]):
        L = f"transformer.h.{i}."
        p[L + "input_layernorm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "input_layernorm.bias"] = 0.2 * torch.randn(d, generator=g)
        for name, shape in (("self_attention.query_key_value", (3 * d, d)), ("self_attention.dense", (d, d)),
                            ("mlp.dense_h_to_4h", (4 * d, d)), ("mlp.dense_4h_to_h", (d, 4 * d))):
            p[L + name + ".weight"] = 0.2 * torch.randn(*shape, generator=g)
            p[L + name + ".bias"] = 0.2 * torch.randn(shape[0], generator=g)
        p[L + "post_attention_layernorm.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
        p[L + "post_attention_layernorm.bias"] = 0.2 * torch.randn(d, generator=g)
    p["transformer.ln_f.weight"] = 1 + 0.2 * torch.randn(d, generator=g)
    p["transformer.ln_f.bias"] = 0.2 * torch.randn(d, generator=g)
    return p


def bloom_gelu_forward(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def forward(c, p, tokens, mask=None, positions=None, hooks=None):
    """Returns (logits, hidden_states as HF's output_hidden_states); fills `hooks` (a dict) with the hook_* arrays.
    `positions` is ignored: BLOOM's alibi reads the attention mask."""
    d, h, eps = c["hidden_size"], c["n_head"], c["layer_norm_epsilon"]
    hd = d // h
    b, s = tokens.shape
    attention_mask = mask if mask is not None else torch.ones(b, s, dtype=torch.long)
    slopes = alibi_slopes(h)
    key_pos = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]       # [b, 1, s]
    alibi = (slopes[..., None] * key_pos).reshape(b * h, 1, s).to(torch.float32)
    causal = causal_mask(b, s, mask)            # additive finfo.min; as a bool mask below
    masked = causal < 0
    keep = (lambda k, t: hooks.__setitem__(k, t.clone())) if hooks is not None else (lambda k, t: None)
    ln = lambda t, n: F.layer_norm(t, (d,), p[n + ".weight"], p[n + ".bias"], eps)
    x = ln(p["transformer.word_embeddings.weight"][tokens], "transformer.word_embeddings_layernorm")
    keep("hook_embed", x)
    hidden = []
    for i in range(c["n_layer"]):
        hidden.append(x)
        L = f"transformer.h.{i}."
        lin = lambda t, n: t @ p[L + n + ".weight"].T + p[L + n + ".bias"]
        hs = ln(x, L + "input_layernorm")
        keep(f"hook_ln1_{i}", hs)
        residual = x
        fused = lin(hs, "self_attention.query_key_value").reshape(b, s, h, 3 * hd)
        q, k, v = torch.split(fused, hd, dim=-1)          # [b, s, h, hd] each
        keep(f"hook_q_{i}", q)
        keep(f"hook_k_{i}", k)
        keep(f"hook_v_{i}", v)
        layer_number = max(1, i)
        inv_norm, beta = 1.0 / (math.sqrt(hd) * layer_number), 1.0 / layer_number
        scores = torch.baddbmm(alibi, q.transpose(1, 2).reshape(b * h, s, hd), k.permute(0, 2, 3, 1).reshape(b * h, hd, s),
                               beta=beta, alpha=inv_norm).view(b, h, s, s)
        w = torch.masked_fill(scores.float() * layer_number, masked, torch.finfo(torch.float32).min)
        probs = F.softmax(w, dim=-1, dtype=torch.float32)
        # TransformerLens's scores: slope · (key − query position); the query's position as the mask counts it.
        q_pos = ((attention_mask.cumsum(-1) - 1) * attention_mask)[:, None, :, None]
        keep(f"hook_attn_scores_{i}", torch.masked_fill(w - slopes[None, :, None, None] * q_pos, masked,
                                                         torch.finfo(torch.float32).min))
        keep(f"hook_pattern_{i}", probs)
        ctx = torch.bmm(probs.view(b * h, s, s), v.transpose(1, 2).reshape(b * h, s, hd))
        ctx = ctx.view(b, h, s, hd).permute(0, 2, 1, 3)
        keep(f"hook_z_{i}", ctx)
        attn_out = lin(ctx.reshape(b, s, d), "self_attention.dense")
        keep(f"hook_attn_out_{i}", attn_out)
        x = residual + attn_out
        keep(f"hook_resid_mid_{i}", x)
        hs = ln(x, L + "post_attention_layernorm")
        keep(f"hook_ln2_{i}", hs)
        pre = lin(hs, "mlp.dense_h_to_4h")
        post = bloom_gelu_forward(pre)
        keep(f"hook_mlp_pre_{i}", pre)
        keep(f"hook_mlp_post_{i}", post)
        ff = lin(post, "mlp.dense_4h_to_h")
        keep(f"hook_mlp_out_{i}", ff)
        x = x + ff
    x = ln(x, "transformer.ln_f")
    hidden.append(x)
    return x @ p["transformer.word_embeddings.weight"].T, hidden


def main():
    a, save_file = fixture_cli("/tmp/bloom_site")
    c = CONFIG
    p = params(c, torch.Generator().manual_seed(3500))
    tokens = torch.randint(0, c["vocab_size"], (2, SEQ), generator=torch.Generator().manual_seed(95))
    arrays = reference_arrays(lambda t, m, pos: forward(c, p, t, m, pos), tokens)
    hooks = {}
    with torch.no_grad():
        forward(c, p, tokens, hooks=hooks)
    arrays.update({k: t.numpy() for k, t in hooks.items()})
    arrays["alibi_slopes"] = alibi_slopes(c["n_head"]).numpy()
    write_folder(os.path.join(a.out, "bloom"), c, p, arrays, save_file)
    print(summary("bloom", arrays))


if __name__ == "__main__":
    main()
