"""Writes tests/data/synthetic_model/: small SAELens 6.37.6 SyntheticModels (the SynthSAEBench generator,
sae_lens/synthetic/ at commit 69c4c62b0dc24e5ba23fc773a0286149514b4a23) saved with SyntheticModel.save(), and
statistics of many rows SAELens samples from them, for SyntheticModelTests.

  git --git-dir=/work/.mirror/Zhangyiming00+SAELens/repo archive 69c4c62b0dc24e5ba23fc773a0286149514b4a23 sae_lens \
      | tar -x -C /tmp/saelens637
  /usr/bin/python3 bench/reference/synthetic_model_fixture.py --saelens /tmp/saelens637 --out tests/data/synthetic_model

Debian bookworm's python3-torch 1.13. sae_lens/synthetic/{synthetic_model,activation_generator,feature_dictionary,
firing_probabilities,firing_magnitudes,correlation,registry}.py and hierarchy/*.py run unchanged; what they import but
these code paths do not use is stubbed: sae_lens (its logger), sae_lens.util (str_to_dtype and temporary_seed, copied),
huggingface_hub (from_pretrained only), and safetensors.torch, which is replaced by a writer and reader of the format
(tensors ordered as safetensors orders them: by dtype size, then name). sae_lens/synthetic/__init__.py is not run (it
imports the SAE classes for evals.py).

Each model is built from its config, saved, loaded back with SyntheticModel.load_from_disk, and the loaded model's
sample_with_features draws ROWS rows in batches of 10,000 (torch.manual_seed(SEED)). Recorded per model in stats.json:
the deterministic vectors SAELens derives when loading (firing probabilities, thresholds √2·erfinv(1−2p), mean and std
magnitudes), per-feature firing rate and the mean and standard deviation of the magnitude when firing, the Pearson
correlation of the firing indicators of chosen pairs, the hierarchy violations (0), and hidden − (acts·W + b).

With --check-saved DIR (no --out), it checks instead that SAELens reads what SaeSharp's SyntheticModel.Save writes. For
each NAME, DIR/NAME/loaded is SaeSharp's save of SAELens's folder and DIR/NAME/generated SaeSharp's save of the model
SaeSharp generated from the config alone:

  for n in plain correlated hierarchy hierarchy_rescale; do
    sae synth --from tests/data/synthetic_model/$n --save-model DIR/$n/loaded
    mkdir -p DIR/cfg/$n && cp tests/data/synthetic_model/$n/synthetic_model_config.json DIR/cfg/$n/
    sae synth --from DIR/cfg/$n --save-model DIR/$n/generated
  done
  /usr/bin/python3 bench/reference/synthetic_model_fixture.py --saelens /tmp/saelens637 --check-saved DIR

SAELens's SyntheticModel.load_from_disk loads each folder and the fixture's; compared: the config (dataclass
equality, after from_dict), the hierarchy (Hierarchy.__eq__), feature_vectors, bias, firing_probabilities,
correlation_factor and correlation_diag, what the activation generator derives (mean and std magnitudes, copula
thresholds), and 5,000 rows sample_with_features draws under torch.manual_seed(SEED). `loaded` must equal the fixture
bit for bit, rows included; `generated` must have the same config and hierarchy, tensors within the float rounding
SyntheticModelTests allows for generation (probabilities 2 ulp, bias 1 ulp, orthogonalised vectors 1e-5), and the
same firing features in SAELens's rows (hence exact equality where generation was bit-exact).
Result (2026-12-05, torch 1.13.1, SaeSharp branch synthsave): all 8 folders OK. The four `loaded` equal SAELens's
models bit for bit, and SAELens samples bit-identical rows from them. The four `generated` have SAELens's config and
hierarchy, firing probabilities within 1 ulp, every other tensor bit-exact except correlated's orthogonalised
feature_vectors (474 ulp, max |diff| < 1e-5); SAELens's rows from them are bit-identical for plain, hierarchy and
hierarchy_rescale, and fire the same features for correlated. (safetensors is not installed for this Python: the
stubbed load_file above reads the files, so the format itself is checked by SaeSharp's tests, which find SaeSharp's
weights files byte-equal to the fixture's.)
"""
import argparse, json, math, os, struct, sys, types
from contextlib import contextmanager

import torch

ROWS = 200_000
BATCH = 10_000
SEED = 1234

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}
_FROM = {v: k for k, v in _DTYPES.items()}


def save_file(tensors, filename, metadata=None):
    items = sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in items:
        t = t.detach().contiguous().cpu()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_file(filename, device="cpu"):
    with open(filename, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = bytearray(raw[8 + n + a:8 + n + b])
        t = torch.frombuffer(buf, dtype=torch.uint8) if b > a else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(_FROM[info["dtype"]]).reshape(info["shape"]).clone()
    return out


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load_saelens(root):
    import logging
    pkg = stub("sae_lens", __version__="6.37.6", logger=logging.getLogger("sae_lens"))
    pkg.__path__ = [os.path.join(root, "sae_lens")]
    syn = stub("sae_lens.synthetic")
    syn.__path__ = [os.path.join(root, "sae_lens", "synthetic")]
    dtype_map = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}

    def str_to_dtype(d):
        return d if isinstance(d, torch.dtype) else dtype_map[d]

    @contextmanager
    def temporary_seed(seed):  # sae_lens.util.temporary_seed, unchanged
        if seed is None:
            yield
            return
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            yield
    stub("sae_lens.util", str_to_dtype=str_to_dtype, temporary_seed=temporary_seed)
    stub("huggingface_hub", hf_hub_download=None)
    stub("huggingface_hub.utils", EntryNotFoundError=Exception)
    stub("safetensors")
    stub("safetensors.torch", save_file=save_file, load_file=load_file)
    import sae_lens.synthetic.synthetic_model as sm  # noqa: E402
    return sm


def R(v):
    if isinstance(v, list):
        return [R(e) for e in v]
    return v if isinstance(v, int) else float(f"{v:.9g}")


def models(sm):
    from sae_lens.synthetic.firing_probabilities import ZipfianFiringProbabilityConfig, LinearFiringProbabilityConfig
    from sae_lens.synthetic.firing_magnitudes import (LinearMagnitudeConfig, ExponentialMagnitudeConfig,
                                                      FoldedNormalMagnitudeConfig)
    from sae_lens.synthetic.hierarchy import HierarchyConfig
    C = sm.SyntheticModelConfig
    return {
        # Independent firing, constant std, default bias of norm 1, random unit vectors (no orthogonalisation).
        "plain": C(num_features=64, hidden_dim=16, seed=1,
                   firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.3, min_prob=0.01),
                   std_firing_magnitudes=0.2, mean_firing_magnitudes=1.0),
        # Low-rank Gaussian-copula correlation, per-feature magnitudes, orthogonalised vectors, bias of norm 0.5.
        "correlated": C(num_features=64, hidden_dim=16, seed=2,
                        firing_probability=LinearFiringProbabilityConfig(max_prob=0.25, min_prob=0.02),
                        correlation=sm.LowRankCorrelationConfig(rank=4, correlation_scale=0.35),
                        orthogonalization=sm.OrthogonalizationConfig(num_steps=50, lr=0.01),
                        std_firing_magnitudes=LinearMagnitudeConfig(start=0.5, end=0.1),
                        mean_firing_magnitudes=ExponentialMagnitudeConfig(start=2.0, end=0.5), bias=0.5),
        # Hierarchy (4 trees, 3 children per parent, depth 2, half the parents with mutually exclusive children),
        # compensated probabilities, folded-normal means (seeded), no bias.
        "hierarchy": C(num_features=64, hidden_dim=16, seed=3,
                       firing_probability=ZipfianFiringProbabilityConfig(exponent=0.7, max_prob=0.4, min_prob=0.05),
                       hierarchy=HierarchyConfig(total_root_nodes=4, branching_factor=3, max_depth=2,
                                                 mutually_exclusive_portion=0.5, compensate_probabilities=True),
                       std_firing_magnitudes=0.1,
                       mean_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=1.5, std=0.3, min_value=0.5),
                       bias=False),
        # Hierarchy with children scaled by their parent, random branching, mutual exclusion everywhere, and correlation.
        "hierarchy_rescale": C(num_features=64, hidden_dim=16, seed=4,
                               firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.35,
                                                                                 min_prob=0.05),
                               hierarchy=HierarchyConfig(total_root_nodes=3, branching_factor=(2, 4), max_depth=3,
                                                         mutually_exclusive_portion=1.0,
                                                         scale_children_by_parent=True),
                               correlation=sm.LowRankCorrelationConfig(rank=3, correlation_scale=0.3),
                               std_firing_magnitudes=0.3,
                               mean_firing_magnitudes=LinearMagnitudeConfig(start=1.5, end=0.8)),
    }


def tree_edges(hierarchy):
    """(parent, child) feature pairs and mutually exclusive sibling groups of a hierarchy."""
    edges, groups = [], []

    def walk(node, parent):
        here = node.feature_index if node.feature_index is not None else parent
        if node.feature_index is not None and parent is not None:
            edges.append((parent, node.feature_index))
        if node.mutually_exclusive_children:
            groups.append([c.feature_index for c in node.children if c.feature_index is not None])
        for c in node.children:
            walk(c, here)
    for r in hierarchy.roots:
        walk(r, None)
    return edges, groups


def check_saved(sm, saved, data):
    """SAELens's load_from_disk on SaeSharp-saved folders, compared with SAELens's own (see the docstring)."""
    def ulps(a, b):
        ia, ib = a.contiguous().view(torch.int32).long(), b.contiguous().view(torch.int32).long()
        return int((ia - ib).abs().max()) if a.numel() else 0

    failures = 0
    for name in ["plain", "correlated", "hierarchy", "hierarchy_rescale"]:
        ref = sm.SyntheticModel.load_from_disk(os.path.join(data, name))
        for kind in ["loaded", "generated"]:
            d = os.path.join(saved, name, kind)
            got = sm.SyntheticModel.load_from_disk(d)
            problems = []
            if sorted(os.listdir(d)) != sorted(f for f in os.listdir(os.path.join(data, name)) if f != "stats.json"):
                problems.append(f"files {sorted(os.listdir(d))}")
            if got.cfg != ref.cfg:
                problems.append(f"config {got.cfg} != {ref.cfg}")
            if (got.hierarchy is None) != (ref.hierarchy is None) or (got.hierarchy is not None and got.hierarchy != ref.hierarchy):
                problems.append("hierarchy differs")
            ga, ra = got.activation_generator, ref.activation_generator
            tensors = {
                "feature_vectors": (got.feature_dict.feature_vectors.data, ref.feature_dict.feature_vectors.data),
                "bias": (got.feature_dict.bias.data, ref.feature_dict.bias.data),
                "firing_probabilities": (ga.firing_probabilities, ra.firing_probabilities),
                "mean_firing_magnitudes": (ga.mean_firing_magnitudes, ra.mean_firing_magnitudes),
                "std_firing_magnitudes": (ga.std_firing_magnitudes, ra.std_firing_magnitudes),
            }
            if (got.correlation_matrix is None) != (ref.correlation_matrix is None):
                problems.append("correlation presence differs")
            elif ref.correlation_matrix is not None:
                tensors["correlation_factor"] = (got.correlation_matrix.correlation_factor, ref.correlation_matrix.correlation_factor)
                tensors["correlation_diag"] = (got.correlation_matrix.correlation_diag, ref.correlation_matrix.correlation_diag)
                tensors["thresholds"] = (ga.correlation_thresholds, ra.correlation_thresholds)
            worst = {}
            for t, (a, b) in tensors.items():
                if a.dtype != b.dtype or a.shape != b.shape:
                    problems.append(f"{t}: {a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}")
                    continue
                u, diff = ulps(a, b), (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
                worst[t] = (u, diff)
                if kind == "loaded" or ref.cfg.orthogonalization is None or t != "feature_vectors":
                    allowed = 0 if kind == "loaded" else {"firing_probabilities": 2, "bias": 1, "thresholds": 64}.get(t, 0)
                    if u > allowed:
                        problems.append(f"{t}: {u} ulp (max |diff| {diff:.3g})")
                elif diff > 1e-5:
                    problems.append(f"{t}: max |diff| {diff:.3g}")
            torch.manual_seed(SEED)
            gh, gacts = got.sample_with_features(5000)
            torch.manual_seed(SEED)
            rh, racts = ref.sample_with_features(5000)
            same_firing = bool(torch.equal(gacts > 0, racts > 0))
            rows_exact = bool(torch.equal(gacts, racts) and torch.equal(gh, rh))
            if kind == "loaded" and not rows_exact:
                problems.append("sampled rows differ")
            if kind == "generated" and not same_firing:
                problems.append("sampled rows fire different features")
            failures += bool(problems)
            summary = ", ".join(f"{t} {u}ulp" for t, (u, _) in worst.items() if u)
            print(f"{name}/{kind}: {'OK' if not problems else 'FAIL ' + '; '.join(problems)}"
                  f" (rows {'bit-identical' if rows_exact else 'same firing features' if same_firing else 'differ'}"
                  f"{'; ' + summary if summary else ''})")
    print("all OK" if failures == 0 else f"{failures} folder(s) FAILED")
    return failures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--out", default="tests/data/synthetic_model")
    p.add_argument("--check-saved")
    p.add_argument("--data", default="tests/data/synthetic_model")
    args = p.parse_args()
    sm = load_saelens(args.saelens)
    if args.check_saved:
        sys.exit(1 if check_saved(sm, args.check_saved, args.data) else 0)
    for name, cfg in models(sm).items():
        d = os.path.join(args.out, name)
        sm.SyntheticModel(cfg).save(d)
        model = sm.SyntheticModel.load_from_disk(d)
        gen = model.activation_generator
        n = cfg.num_features
        torch.manual_seed(SEED)
        fires = torch.zeros(n, dtype=torch.float64)
        s1 = torch.zeros(n, dtype=torch.float64)
        s2 = torch.zeros(n, dtype=torch.float64)
        both = torch.zeros(n, n, dtype=torch.float64)
        max_err = 0.0
        edges, groups = tree_edges(model.hierarchy) if model.hierarchy is not None else ([], [])
        child_without_parent = me_conflicts = 0
        for _ in range(ROWS // BATCH):
            hidden, acts = model.sample_with_features(BATCH)
            f = (acts > 0).double()
            a = acts.double()
            fires += f.sum(0)
            s1 += a.sum(0)
            s2 += (a * a).sum(0)
            both += f.T @ f
            ref = acts.double() @ model.feature_dict.feature_vectors.double() + model.feature_dict.bias.double()
            max_err = max(max_err, (hidden.double() - ref).abs().max().item())
            for par, ch in edges:
                child_without_parent += int(((acts[:, ch] > 0) & (acts[:, par] <= 0)).sum())
            for g in groups:
                me_conflicts += int(((acts[:, g] > 0).sum(1) > 1).sum())
        rate = fires / ROWS
        mean = s1 / fires.clamp(min=1)
        var = (s2 / fires.clamp(min=1) - mean ** 2).clamp(min=0) * fires / (fires - 1).clamp(min=1)
        cov = both / ROWS - rate[:, None] * rate[None, :]
        sd = (rate * (1 - rate)).sqrt()
        corr = cov / (sd[:, None] * sd[None, :]).clamp(min=1e-12)
        # Pairs: the five most positively and five most negatively correlated among features that fire often enough.
        ok = rate > 0.02
        cand = [(corr[i, j].item(), i, j) for i in range(n) for j in range(i + 1, n) if ok[i] and ok[j]]
        cand.sort()
        pairs = cand[:5] + cand[-5:]
        stats = {
            "rows": ROWS, "batch": BATCH, "torch_seed": SEED,
            "firing_probabilities": R(gen.firing_probabilities.tolist()),
            "config_firing_probabilities": R(cfg.firing_probability.generate(n, seed=cfg.seed).tolist()),
            "thresholds": R(gen.correlation_thresholds.tolist()) if gen.correlation_thresholds is not None else None,
            "mean_firing_magnitudes": R(gen.mean_firing_magnitudes.tolist()),
            "std_firing_magnitudes": R(gen.std_firing_magnitudes.tolist()),
            "firing_rate": R(rate.tolist()),
            "magnitude_mean": R(mean.tolist()),
            "magnitude_std": R(var.sqrt().tolist()),
            "pairs": [{"i": i, "j": j, "firing_correlation": R(c), "both_rate": R(both[i, j].item() / ROWS)}
                      for c, i, j in pairs],
            "hierarchy_edges": len(edges), "mutually_exclusive_groups": len(groups),
            "child_without_parent": child_without_parent, "mutually_exclusive_conflicts": me_conflicts,
            "max_abs_hidden_minus_acts_w_plus_b": R(max_err),
        }
        with open(os.path.join(d, "stats.json"), "w") as f:
            json.dump(stats, f, indent=1)
        print(name, "files:", sorted(os.listdir(d)), "edges", len(edges), "ME groups", len(groups),
              "mean rate", round(rate.mean().item(), 4), "max err", max_err)


if __name__ == "__main__":
    main()
