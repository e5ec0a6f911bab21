"""Writes tests/data/recipes/april_step.json: three steps of dictionary_learning's
StandardTrainerAprilUpdate on one fixed batch, term by term (the issue #15 step comparison), for
StandardTrainerAprilUpdateStepTests. dictionary_learning is not vendored: pass a checkout with --dl.

  /usr/bin/python3 bench/reference/april_step_fixture.py --dl /work/ref/dictionary_learning \
      --out tests/data/recipes/april_step.json

Run: d 8, d_sae 16, batch 6 rows (randn·2 + 0.5), seed 0, lr 1e-3 with no lr warm-up (SaeSharp's warm-up is
lr·(s+1)/W, dictionary_learning's lr·s/W: its first step runs at lr 0, so the fixture leaves it out), sparsity
warm-up 2 steps (both step/W), l1_penalty 0.5, gradient norm clipped to 1. Records the initial weights, and per step
the loss terms, the total gradient norm before clipping, the per-parameter gradients, the lr, and the weights after
the step, plus Adam's state at the end. Tensors in SaeSharp's layout (W_enc [d, d_sae], W_dec [d_sae, d]).
"""
import argparse, json, os, sys

import torch as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dictionary_learning_trainers import import_dictionary_learning  # noqa: E402


def params(ae):
    return {"W_enc": ae.encoder.weight.detach().T.tolist(), "b_enc": ae.encoder.bias.detach().tolist(),
            "W_dec": ae.decoder.weight.detach().T.tolist(), "b_dec": ae.bias.detach().tolist()}


def grads(ae):
    return {"W_enc": ae.encoder.weight.grad.T.tolist(), "b_enc": ae.encoder.bias.grad.tolist(),
            "W_dec": ae.decoder.weight.grad.T.tolist(), "b_dec": ae.bias.grad.tolist()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dl", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    t.set_num_threads(1)
    tr, _ = import_dictionary_learning(a.dl)
    t.manual_seed(0)
    x = t.randn(6, 8) * 2 + 0.5
    steps = 3
    trainer = tr.StandardTrainerAprilUpdate(steps=10, activation_dim=8, dict_size=16, layer=0, lm_name="fixture", lr=1e-3,
                                            l1_penalty=0.5, warmup_steps=0, sparsity_warmup_steps=2, seed=0, device="cpu")
    out = {"origin": "dictionary_learning StandardTrainerAprilUpdate (saprmarks/dictionary_learning, trainers/standard.py), "
                     "torch " + t.__version__ + ", written by bench/reference/april_step_fixture.py",
           "l1_penalty": 0.5, "lr": 1e-3, "sparsity_warmup_steps": 2, "max_grad_norm": 1.0, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
           "x": x.tolist(), "initial": params(trainer.ae), "steps": []}
    for step in range(steps):
        lr = trainer.optimizer.param_groups[0]["lr"]
        log = trainer.loss(x, step=step, logging=True)
        # The trainer's own update, split open to read the gradients before clipping.
        trainer.optimizer.zero_grad()
        loss = trainer.loss(x, step=step)
        loss.backward()
        g = grads(trainer.ae)
        norm = t.nn.utils.clip_grad_norm_(trainer.ae.parameters(), 1.0).item()
        trainer.optimizer.step()
        trainer.scheduler.step()
        out["steps"].append({"step": step, "lr": lr, "sparsity_scale": trainer.sparsity_warmup_fn(step),
                             "mse_loss": log.losses["mse_loss"], "l1_loss": log.losses["sparsity_loss"], "loss": log.losses["loss"],
                             "l0": (log.f != 0).float().sum(-1).mean().item(),
                             "grad_norm_before_clip": norm, "grad": g, "after": params(trainer.ae),
                             "decoder_row_norms_after": trainer.ae.decoder.weight.detach().norm(dim=0).tolist()})
    state = trainer.optimizer.state
    out["adam_exp_avg_sq_norm"] = {n: state[q]["exp_avg_sq"].norm().item() for n, q in
                                   [("W_enc", trainer.ae.encoder.weight), ("b_enc", trainer.ae.encoder.bias),
                                    ("W_dec", trainer.ae.decoder.weight), ("b_dec", trainer.ae.bias)]}
    out["adam_exp_avg_norm"] = {n: state[q]["exp_avg"].norm().item() for n, q in
                                [("W_enc", trainer.ae.encoder.weight), ("b_enc", trainer.ae.encoder.bias),
                                 ("W_dec", trainer.ae.decoder.weight), ("b_dec", trainer.ae.bias)]}
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(f"wrote {a.out}: {steps} steps, losses " + ", ".join(f"{s['loss']:.4f}" for s in out["steps"]))


if __name__ == "__main__":
    main()
