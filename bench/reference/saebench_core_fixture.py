"""Writes tests/data/saebench_core/expected.json: SAEBench core eval's own formula functions and output schema, for
SaeBenchCoreOutputTests.

  /usr/bin/python3 bench/reference/saebench_core_fixture.py \
      --saebench-git /work/.mirror/adamkarvonen+SAEBench/repo --out tests/data/saebench_core

SAEBench commit 8042bb3 (adamkarvonen/SAEBench), Debian's torch 1.13. From sae_bench/evals/core/main.py the functions
calculate_max_cosine_sim, get_featurewise_weight_based_metrics and calculate_misc_metrics are taken by their source (ast)
and run unchanged; the module's imports (sae_lens, transformer_lens, pydantic) are not needed by them and not installed.
The SAE is a stand-in object with W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc and cfg (d_sae, architecture_str).

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
    ns = {"torch": torch, "Any": Any, "SAE": object}
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

    schema = {}
    for path in ["sae_bench/evals/base_eval_output.py", "sae_bench/evals/core/eval_output.py", "sae_bench/evals/core/eval_config.py"]:
        schema.update(dataclass_fields(source(a.saebench_git, path)))

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(nan_to_none({
            "saebench_commit": commit, "torch": torch.__version__,
            "W_enc": W_enc.tolist(), "W_dec": W_dec.tolist(), "b_enc": b_enc.tolist(),
            "feature_density": density, "weight_based": weights, "misc": misc, "misc_all_dead": misc_dead,
            "schema": schema,
        }), f, indent=1)


if __name__ == "__main__":
    main()
