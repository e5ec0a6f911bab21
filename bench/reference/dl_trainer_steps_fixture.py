"""Writes tests/data/recipes/dl_<trainer>_steps.json: four steps of dictionary_learning's own trainers (TopKTrainer,
BatchTopKTrainer, MatryoshkaBatchTopKTrainer, JumpReluTrainer, GatedSAETrainer), run unchanged through their
update(step, x), on a fixed tiny problem, for DictionaryLearningTrainerStepTests. dictionary_learning is not vendored:
pass a checkout with --dl (its trainers are imported without the package, dictionary_learning_trainers.py's trick).

  /usr/bin/python3 bench/reference/dl_trainer_steps_fixture.py --dl /work/ref/dictionary_learning --out tests/data/recipes

Written with dictionary_learning 60ec6bf5264944d64a4ca271f45a29ebfb9d4946 (saprmarks/dictionary_learning, 2025-08-20)
and Debian's torch 1.13.0a0 (/usr/bin/python3), one thread.

Problem: d 8, batch 32, four batches of randn·2 + 0.5 (seed 0, one per step), lr 1e-3 with no lr warm-up (warmup_steps=0)
and no decay; trainer seeds 0. Settings changed from the trainers' defaults, all through their constructors or
attributes (the code runs unchanged):
  topk        d_sae 64, k 3; dead_feature_threshold 32 tokens (one batch; default 10M) so that AuxK runs from step 0;
              threshold_start_step 1 (the threshold EMA updates at steps 2, 3).
  batchtopk   as topk.
  matryoshka  d_sae 64, k 3, group_fractions [1/16, 1/16, 1/8, 1/4, 1/2] (widths 4, 8, 16, 32, 64), default group
              weights (1/5 each), as topk otherwise.
  jumprelu    d_sae 32, bandwidth 0.004, target_l0 8, sparsity_penalty 1, sparsity_warmup_steps 2, initial threshold
              θ_j = ε/4 below the first batch's pre-activation of latent j nearest 0.3 (default 0.001: with
              pre-activations O(1) almost none would fall in the kernel; so every latent has a kernel entry at step
              0). The seed of the data is the first from 0 on for which no pre-activation lies in [θ − ε/2, θ] at any step: there
              dictionary_learning's L0 kernel, applied to f rather than to the pre-activations, differs from the paper's
              (and SaeSharp's); see docs/recipes.md.
  gated       d_sae 32, l1_penalty 0.5, sparsity_warmup_steps 2.
The geometric-median b_dec of the TopK family (set by update() at step 0 from the first batch) is written into the
"initial" weights, computed by the trainer's own geometric_median, so the C# side starts from it.
Per step: the trainer's logged loss terms (from its loss(..., logging=True), with the counters and threshold restored
before update() runs), the dead-latent mask AuxK used (num_tokens_since_fired >= dead_feature_threshold after the
step's own firing update), the lr, the threshold buffer and the weights after the step. Tensors in SaeSharp's layout
(W_enc [d, d_sae], W_dec [d_sae, d]).
"""
import argparse, json, os, sys

import torch as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dictionary_learning_trainers import import_dictionary_learning  # noqa: E402

D, BATCH, STEPS, LR, BANDWIDTH = 8, 32, 4, 1e-3, 0.004


def R(v):
    """float32 values to 9 significant digits (enough to round-trip float32), to keep the fixtures small."""
    return [R(e) for e in v] if isinstance(v, list) else float(f"{v:.9g}")


def L(v):
    return R(v.detach().tolist())


def params(kind, ae):
    if kind in ("topk", "batchtopk"):
        return {"W_enc": L(ae.encoder.weight.T), "b_enc": L(ae.encoder.bias), "W_dec": L(ae.decoder.weight.T), "b_dec": L(ae.b_dec)}
    if kind == "matryoshka":
        return {"W_enc": L(ae.W_enc), "b_enc": L(ae.b_enc), "W_dec": L(ae.W_dec), "b_dec": L(ae.b_dec)}
    if kind == "jumprelu":
        return {"W_enc": L(ae.W_enc), "b_enc": L(ae.b_enc), "W_dec": L(ae.W_dec), "b_dec": L(ae.b_dec), "threshold": L(ae.threshold)}
    return {"W_enc": L(ae.encoder.weight.T), "b_gate": L(ae.gate_bias), "r_mag": L(ae.r_mag), "b_mag": L(ae.mag_bias),
            "W_dec": L(ae.decoder.weight.T), "b_dec": L(ae.decoder_bias)}


def make(tr, kind):
    common = dict(steps=10, activation_dim=D, layer=0, lm_name="fixture", lr=LR, warmup_steps=0, seed=0, device="cpu")
    if kind == "topk":
        trainer = tr.TopKTrainer(dict_size=64, k=3, threshold_start_step=1, **common)
    elif kind == "batchtopk":
        trainer = tr.BatchTopKTrainer(dict_size=64, k=3, threshold_start_step=1, **common)
    elif kind == "matryoshka":
        trainer = tr.MatryoshkaBatchTopKTrainer(dict_size=64, k=3, threshold_start_step=1,
                                                group_fractions=[1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2], **common)
    elif kind == "jumprelu":
        trainer = tr.JumpReluTrainer(dict_size=32, bandwidth=BANDWIDTH, target_l0=8.0, sparsity_penalty=1.0,
                                     sparsity_warmup_steps=2, **common)
    else:
        trainer = tr.GatedSAETrainer(dict_size=32, l1_penalty=0.5, sparsity_warmup_steps=2, **common)
    if kind in ("topk", "batchtopk", "matryoshka"):
        trainer.dead_feature_threshold = BATCH
    return trainer


def disputed_band(trainer, x):
    """Entries with pre-activation in [θ − ε/2, θ]: dictionary_learning's L0 kernel (on f) and the paper's (on pre) differ there."""
    ae = trainer.ae
    pre = x @ ae.W_enc + ae.b_enc
    u = (pre - ae.threshold) / trainer.bandwidth
    return int(((u >= -0.5) & (u <= 0)).sum()), int(((u > 0) & (u < 0.5)).sum())


def run(tr, kind, xs):
    trainer = make(tr, kind)
    if kind in ("topk", "batchtopk", "matryoshka"):
        median = trainer.geometric_median(xs[0]) if hasattr(trainer, "geometric_median") else \
            sys.modules[tr.TopKTrainer.__module__].geometric_median(xs[0])
        trainer.ae.b_dec.data = median.to(trainer.ae.b_dec.dtype)
    if kind == "jumprelu":
        # θ_j just below the first batch's pre-activation of latent j nearest 0.3 (θ_j − pre = −ε/4): every latent has an
        # entry in the kernel's upper half at step 0, so the straight-through threshold gradients are exercised.
        with t.no_grad():
            pre = xs[0] @ trainer.ae.W_enc + trainer.ae.b_enc
            nearest = (pre - 0.3).abs().argmin(dim=0)
            trainer.ae.threshold.copy_(pre[nearest, t.arange(pre.shape[1])] - BANDWIDTH / 4)
    out = {"trainer": type(trainer).__name__, "initial": params(kind, trainer.ae), "steps": []}
    for step in range(STEPS):
        x = xs[step]
        lr = trainer.optimizer.param_groups[0]["lr"]
        rec = {"step": step, "lr": lr}
        if kind == "jumprelu":
            rec["kernel_entries_below_and_above_threshold"] = disputed_band(trainer, x)
        # Loss terms from the trainer's own loss(); it updates the firing counters and threshold, restored for update().
        saved_counts = trainer.num_tokens_since_fired.clone() if hasattr(trainer, "num_tokens_since_fired") else None
        saved_threshold = trainer.ae.threshold.clone() if kind in ("topk", "batchtopk", "matryoshka") else None
        log = trainer.loss(x, step=step, logging=True)
        rec["losses"] = {k: float(v) for k, v in log.losses.items()}
        rec["l0"] = (log.f != 0).float().sum(-1).mean().item()
        if saved_counts is not None:
            trainer.num_tokens_since_fired.copy_(saved_counts)
        if saved_threshold is not None:
            trainer.ae.threshold = saved_threshold
        trainer.ae.zero_grad(set_to_none=True)
        trainer.optimizer.zero_grad()
        trainer.update(step, x)
        if kind in ("topk", "batchtopk", "matryoshka"):
            rec["dead_mask"] = (trainer.num_tokens_since_fired >= trainer.dead_feature_threshold).int().tolist()
            rec["dead_count"] = sum(rec["dead_mask"])
            rec["threshold_after"] = float(trainer.ae.threshold)
        if hasattr(trainer, "sparsity_warmup_fn"):
            rec["sparsity_scale"] = trainer.sparsity_warmup_fn(step)
        rec["after"] = params(kind, trainer.ae)
        out["steps"].append(rec)
    return out


def batches(seed):
    g = t.Generator().manual_seed(seed)
    return [t.randn(BATCH, D, generator=g) * 2 + 0.5 for _ in range(STEPS)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dl", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--only", nargs="*")
    a = p.parse_args()
    t.set_num_threads(1)
    tr, _ = import_dictionary_learning(a.dl)
    import dictionary_learning.trainers.top_k as top_k  # noqa: E402
    import dictionary_learning.trainers.batch_top_k as batch_top_k  # noqa: E402
    import dictionary_learning.trainers.jumprelu as jumprelu  # noqa: E402
    import dictionary_learning.trainers.gdm as gdm  # noqa: E402
    tr.TopKTrainer, tr.BatchTopKTrainer = top_k.TopKTrainer, batch_top_k.BatchTopKTrainer
    tr.JumpReluTrainer, tr.GatedSAETrainer = jumprelu.JumpReluTrainer, gdm.GatedSAETrainer
    for kind in a.only or ["topk", "batchtopk", "matryoshka", "jumprelu", "gated"]:
        seed = 0
        while True:
            xs = batches(seed)
            out = run(tr, kind, xs)
            if kind != "jumprelu" or all(s["kernel_entries_below_and_above_threshold"][0] == 0 for s in out["steps"]):
                break
            seed += 1
        out.update({"origin": f"dictionary_learning {out['trainer']} (saprmarks/dictionary_learning 60ec6bf), torch {t.__version__}, "
                              "written by bench/reference/dl_trainer_steps_fixture.py", "data_seed": seed, "lr": LR, "x": [L(x) for x in xs]})
        path = os.path.join(a.out, f"dl_{kind}_steps.json")
        with open(path, "w") as f:
            json.dump(out, f)
        print(f"{path}: seed {seed}, " + "; ".join(
            f"{s['losses']} dead {s.get('dead_count', '-')} thr {s.get('threshold_after', '-')} band {s.get('kernel_entries_below_and_above_threshold', '-')}"
            for s in out["steps"]))


if __name__ == "__main__":
    main()
