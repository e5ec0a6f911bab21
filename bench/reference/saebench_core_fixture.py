"""Writes tests/data/saebench_core/expected.json: SAEBench core eval's own formula functions and output schema, for
SaeBenchCoreOutputTests.

  /usr/bin/python3 bench/reference/saebench_core_fixture.py \
      --saebench-git /work/.mirror/adamkarvonen+SAEBench/repo --out tests/data/saebench_core

SAEBench commit 8042bb3 (adamkarvonen/SAEBench), Debian's torch 1.13. From sae_bench/evals/core/main.py the functions
calculate_max_cosine_sim, get_featurewise_weight_based_metrics and calculate_misc_metrics are taken by their source (ast)
and run unchanged; the module's imports (sae_lens, transformer_lens, pydantic) are not needed by them and not installed.
The SAE is a stand-in object with W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc and cfg (d_sae, architecture_str).

Case "procedure" (expected.json "procedure"): SAEBench's own get_downstream_reconstruction_metrics, get_recons_loss and
get_sparsity_and_variance_metrics (main.py, taken by their source, run unchanged; einops.rearrange stubbed by a reshape)
on fixed data: 3 reconstruction batches then 2 sparsity/variance batches of 2 windows of 5 tokens (consecutive batches of
one stand-in activation store, as SAELens's store continues after reset_input_dataset), vocab 7, d_in 4, d_sae 6, with
special tokens 0 and 6 as ignore_tokens. Stand-ins: the model returns fixed logits (clean; then, in get_recons_loss's
order, with the SAE spliced and zero-ablated) with TransformerLens's per-token loss (-log_softmax at the next token), and the
cached activation x; the SAE's encode/decode return fixed f and x_hat. Everything saved (tokens, logits, x, f, x_hat) and
SAEBench's returned metrics, for SaeBenchCoreAccumulator to aggregate the same way.

Case "weights": d_in 6, d_sae 10, weights random (seed 0) with decoder rows 2 and 5 equal up to a factor 3 (max decoder
cosine 1 for both), decoder row 8 = −decoder row 1, encoder column 7 zero (F.normalize keeps it zero: cosine 0 with every
column) and encoder column 4 = encoder column 0 · 0.5. Densities chosen by hand (dead features, features on both sides
of 1% and 10%). expected.json (NaN written as null) holds the weights, the per-feature lists, the misc metrics, and the schema: for each
dataclass of eval_output.py / eval_config.py / base_eval_output.py, its fields in order with their annotations.
"""
import argparse, ast, json, math, os, subprocess, types
from typing import Any

import torch


def source(git, path):
    return subprocess.run(["git", "--git-dir", git, "show", f"HEAD:{path}"], check=True, capture_output=True, text=True).stdout


def functions(text, names):
    tree = ast.parse(text)
    ns = {"torch": torch, "Any": Any, "SAE": object, "HookedRootModule": object, "ActivationsStore": object,
          "Mapping": __import__("collections.abc").abc.Mapping}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            exec(compile(ast.Module(body=[node], type_ignores=[]), "main.py", "exec"), ns)
    return ns


def dataclass_fields(text):
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {"bases": [ast.unparse(b) for b in node.bases],
                              "fields": [[s.target.id, ast.unparse(s.annotation)] for s in node.body if isinstance(s, ast.AnnAssign)]}
    return out


def nan_to_none(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, list):
        return [nan_to_none(x) for x in v]
    if isinstance(v, dict):
        return {k: nan_to_none(x) for k, x in v.items()}
    return v


def run_procedure(ns):
    import torch.nn.functional as F
    ns.update(tqdm=lambda it, **k: it, partial=__import__("functools").partial,
              einops=types.SimpleNamespace(rearrange=lambda t, pattern: t.reshape(-1, t.shape[-1])))
    g = torch.Generator().manual_seed(1)
    bs, ctx, vocab, d_in, d_sae = 2, 5, 7, 4, 6
    n_rec, n_sv = 3, 2
    tokens = torch.randint(1, 6, (n_rec + n_sv, bs, ctx), generator=g)
    tokens[0, 0, 0] = 0; tokens[0, 1, 2] = 6; tokens[1, 0, 4] = 0; tokens[2, 1, 0] = 6; tokens[2, 1, 3] = 0
    tokens[3, 0, 0] = 0; tokens[3, 1, 1] = 6; tokens[4, 0, 3] = 0
    logits = torch.randn(n_rec, 3, bs, ctx, vocab, generator=g) * 2   # clean, SAE, zero-ablated
    x = torch.randn(n_sv, bs, ctx, d_in, generator=g) + 0.5
    f = torch.relu(torch.randn(n_sv, bs, ctx, d_sae, generator=g))
    x_hat = x + 0.3 * torch.randn(n_sv, bs, ctx, d_in, generator=g)
    ignore = {0, 6}

    class Store:
        context_size = ctx
        def __init__(self): self.i = 0
        def get_batch_tokens(self, n):
            assert n == bs
            self.i += 1
            return tokens[self.i - 1]
        def reset_input_dataset(self): pass   # SAELens: the token iterator continues (it is not rebuilt)

    def ce_per_token(lg, tk):   # TransformerLens lm_cross_entropy_loss(per_token=True)
        return -F.log_softmax(lg, dim=-1)[:, :-1].gather(-1, tk[:, 1:, None])[..., 0]

    class Model:
        def __init__(self): self.batch = -1; self.variant = 0
        def __call__(self, tk, return_type, loss_per_token):
            self.batch += 1; self.variant = 0
            lg = logits[self.batch, 0]
            return lg, ce_per_token(lg, tk)
        def run_with_hooks(self, tk, return_type, fwd_hooks, loss_per_token):
            self.variant += 1
            act = torch.randn(bs, ctx, d_in, generator=g)
            fwd_hooks[0][1](act, hook=None)   # SAEBench's replacement / ablation hook runs (its output is not used)
            lg = logits[self.batch, self.variant]
            return lg, ce_per_token(lg, tk)
        def run_with_cache(self, tk, prepend_bos, names_filter, stop_at_layer):
            self.batch += 1
            return None, {names_filter[0]: x[self.batch - n_rec]}

    class Sae:
        device = "cpu"
        cfg = types.SimpleNamespace(hook_name="blocks.0.hook_resid_pre", hook_head_index=None, d_sae=d_sae, hook_layer=0)
        def __init__(self, model): self.model = model
        def encode(self, a):
            b = self.model.batch - n_rec
            return f[b] if b >= 0 else torch.zeros(*a.shape[:-1], d_sae)
        def decode(self, acts):
            b = self.model.batch - n_rec
            return x_hat[b] if b >= 0 else torch.zeros(*acts.shape[:-1], d_in)

    model, store = Model(), Store()
    sae = Sae(model)
    rec = ns["get_downstream_reconstruction_metrics"](sae, model, store, compute_kl=True, compute_ce_loss=True, n_batches=n_rec,
                                                      eval_batch_size_prompts=bs, ignore_tokens=ignore,
                                                      exclude_special_tokens_from_reconstruction=True)
    store.reset_input_dataset()
    sv, feat = ns["get_sparsity_and_variance_metrics"](sae, model, store, n_batches=n_sv, compute_l2_norms=True,
                                                       compute_sparsity_metrics=True, compute_variance_metrics=True,
                                                       compute_featurewise_density_statistics=True,
                                                       eval_batch_size_prompts=bs, model_kwargs={}, ignore_tokens=ignore)
    return {"batch_size_prompts": bs, "n_eval_reconstruction_batches": n_rec, "n_eval_sparsity_variance_batches": n_sv,
            "ignore_tokens": sorted(ignore), "tokens": tokens.tolist(), "logits": logits.tolist(), "x": x.tolist(),
            "f": f.tolist(), "x_hat": x_hat.tolist(), "reconstruction_metrics": rec, "sparsity_variance_metrics": sv,
            "feature_metrics": feat}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--saebench-git", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    commit = subprocess.run(["git", "--git-dir", a.saebench_git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    main_py = source(a.saebench_git, "sae_bench/evals/core/main.py")
    ns = functions(main_py, {"calculate_max_cosine_sim", "get_featurewise_weight_based_metrics", "calculate_misc_metrics"})

    g = torch.Generator().manual_seed(0)
    d_in, d_sae = 6, 10
    W_enc = torch.randn(d_in, d_sae, generator=g)
    W_dec = torch.randn(d_sae, d_in, generator=g)
    b_enc = torch.randn(d_sae, generator=g)
    W_dec[5] = 3 * W_dec[2]
    W_dec[8] = -W_dec[1]
    W_enc[:, 7] = 0
    W_enc[:, 4] = 0.5 * W_enc[:, 0]
    sae = types.SimpleNamespace(W_enc=W_enc, W_dec=W_dec, b_enc=b_enc,
                                cfg=types.SimpleNamespace(d_sae=d_sae, architecture_str="standard"))
    weights = ns["get_featurewise_weight_based_metrics"](sae)
    density = [0.0, 0.005, 0.01, 0.02, 0.1, 0.15, 0.5, 0.0, 0.3, 0.0001]
    misc = ns["calculate_misc_metrics"](dict(weights, feature_density=density))
    # All features dead: the normalised frequencies take calculate_misc_metrics's zero branch.
    misc_dead = ns["calculate_misc_metrics"](dict(weights, feature_density=[0.0] * d_sae))

    procedure = run_procedure(functions(main_py, {"get_downstream_reconstruction_metrics", "get_recons_loss",
                                                  "get_sparsity_and_variance_metrics"}))

    schema = {}
    for path in ["sae_bench/evals/base_eval_output.py", "sae_bench/evals/core/eval_output.py", "sae_bench/evals/core/eval_config.py"]:
        schema.update(dataclass_fields(source(a.saebench_git, path)))

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(nan_to_none({
            "saebench_commit": commit, "torch": torch.__version__,
            "W_enc": W_enc.tolist(), "W_dec": W_dec.tolist(), "b_enc": b_enc.tolist(),
            "feature_density": density, "weight_based": weights, "misc": misc, "misc_all_dead": misc_dead,
            "procedure": procedure,
            "schema": schema,
        }), f, indent=1)


if __name__ == "__main__":
    main()
