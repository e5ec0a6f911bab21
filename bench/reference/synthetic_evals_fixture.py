"""Writes tests/data/synthetic_evals/reference.json: a small fixed input and what SAELens 6.37.6's SynthSAEBench metric
functions (sae_lens/synthetic/evals.py at commit 69c4c62b0dc24e5ba23fc773a0286149514b4a23) and SciPy's
linear_sum_assignment return on it. SyntheticEvalsPeerTests compares SaeSharp's implementation with it.

The functions are run unchanged: their source is read from that commit with `git show`, and only the definitions
under test (plus sae_lens.util.cosine_similarities) are extracted with `ast` and executed, so that sae_lens's
torch-2-only imports (SAE, ActivationGenerator, ...) are not needed. Run with Debian bookworm's python3-torch 1.13.1
and python3-scipy 1.10.1 from the repository root:
    /usr/bin/python3 bench/reference/synthetic_evals_fixture.py --saelens-git /work/.mirror/Zhangyiming00+SAELens/repo
"""
import argparse
import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

COMMIT = "69c4c62b0dc24e5ba23fc773a0286149514b4a23"
WANTED = {
    "cosine_similarities", "mean_correlation_coefficient", "feature_uniqueness", "ClassificationMetrics",
    "L0Calculator", "DeadLatentsCalculator", "ShrinkageCalculator", "ExplainedVarianceCalculator",
    "ClassificationMetricsCalculator", "SyntheticDataEvalResult",
}

p = argparse.ArgumentParser()
p.add_argument("--saelens-git", required=True)
p.add_argument("--out", default="tests/data/synthetic_evals/reference.json")
args = p.parse_args()


def source(path):
    return subprocess.run(["git", f"--git-dir={args.saelens_git}", "show", f"{COMMIT}:{path}"],
                          check=True, capture_output=True, text=True).stdout


ns = {"torch": torch, "linear_sum_assignment": linear_sum_assignment, "Any": object}
exec("from dataclasses import asdict, dataclass, fields", ns)
for path in ["sae_lens/util.py", "sae_lens/synthetic/evals.py"]:
    tree = ast.parse(source(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in WANTED:
            exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), ns)

g = torch.Generator().manual_seed(1234)
d, n_features, d_sae, rows = 6, 10, 12, 64
gt = torch.randn(n_features, d, generator=g)
gt = gt / gt.norm(dim=1, keepdim=True)
# Decoder: noisy, sign-flipped, permuted copies of some true features plus random rows (two near the same feature).
perm = torch.randperm(n_features, generator=g)
w_dec = torch.randn(d_sae, d, generator=g)
for i in range(8):
    w_dec[i] = (-1) ** i * 2.0 * gt[perm[i]] + 0.3 * torch.randn(d, generator=g)
w_dec[8] = gt[perm[0]] + 0.2 * torch.randn(d, generator=g)
fires = torch.rand(rows, n_features, generator=g) < 0.3
feature_acts = torch.rand(rows, n_features, generator=g) * fires
x = feature_acts @ gt
latents = torch.relu(x @ w_dec.T / 4 + 0.1 * torch.randn(rows, d_sae, generator=g) - 0.05)
latents[:, 11] = 0  # a dead latent
x_hat = latents @ w_dec
x[5] = 0  # a row with no features: skipped by shrinkage
x_hat[5] = 0.01

calc = {
    "true_l0": ns["L0Calculator"](), "sae_l0": ns["L0Calculator"](), "dead": ns["DeadLatentsCalculator"](d_sae),
    "shrink": ns["ShrinkageCalculator"](), "ev": ns["ExplainedVarianceCalculator"](d),
    "cls": ns["ClassificationMetricsCalculator"](w_dec, gt),
}
for s in (slice(0, 40), slice(40, rows)):  # two batches, as SaeSharp streams them
    calc["true_l0"].add_batch(feature_acts[s])
    calc["sae_l0"].add_batch(latents[s])
    calc["dead"].add_batch(latents[s])
    calc["shrink"].add_batch(x_hat[s], x[s])
    calc["ev"].add_batch(x_hat[s], x[s])
    calc["cls"].add_batch(latents[s], feature_acts[s])
result = ns["SyntheticDataEvalResult"](
    true_l0=calc["true_l0"].compute(), sae_l0=calc["sae_l0"].compute(), dead_latents=calc["dead"].compute(),
    shrinkage=calc["shrink"].compute(), explained_variance=calc["ev"].compute(),
    mcc=ns["mean_correlation_coefficient"](w_dec, gt), uniqueness=ns["feature_uniqueness"](w_dec, gt),
    classification=calc["cls"].compute())

cost = np.round(np.random.default_rng(7).random((5, 8)) * 10) / 10  # rectangular, with ties
r, c = linear_sum_assignment(cost)
rt, ct = linear_sum_assignment(cost.T)

out = {
    "commit": COMMIT, "torch": torch.__version__,
    "gt_features": gt.tolist(), "w_dec": w_dec.tolist(), "feature_acts": feature_acts.tolist(),
    "x": x.tolist(), "x_hat": x_hat.tolist(), "latents": latents.tolist(), "batch_rows": [40, rows - 40],
    "best_matches": calc["cls"].best_matches.tolist(),
    "expected": result.to_log_dict(),
    "assignment": {"cost": cost.tolist(), "rows": r.tolist(), "cols": c.tolist(), "total": float(cost[r, c].sum()),
                   "rows_t": rt.tolist(), "cols_t": ct.tolist(), "total_t": float(cost.T[rt, ct].sum())},
}
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out["expected"], indent=1))
