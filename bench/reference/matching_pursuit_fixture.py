"""Writes tests/data/matching_pursuit/: SAELens 6.37.6's own matching-pursuit SAE run on small random inputs, for
MatchingPursuitSaeTests.

  git --git-dir=/work/.mirror/Zhangyiming00+SAELens/repo archive 69c4c62b0dc24e5ba23fc773a0286149514b4a23 sae_lens \
      | tar -x -C /tmp/saelens637
  /usr/bin/python3 bench/reference/matching_pursuit_fixture.py --saelens /tmp/saelens637 --out tests/data/matching_pursuit

SAELens 6.37.6 (upstream 69c4c62b, here from the Zhangyiming00/SAELens mirror at that commit) and Debian's torch 1.13.
Its sae_lens/saes/{sae,matching_pursuit_sae}.py and sae_lens/constants.py run unchanged; what they import but these code
paths do not use is stubbed by saelens_stubs.py (HookPoint is the identity, as TransformerLens's
without hooks), except safetensors' save_file, which writes the safetensors format here, so that SAELens's own
save_model writes the SAE folders.

Two cases, d_in 8, d_sae 24, 12 rows (seed 0); decoder rows random with norms between 0.6 and 1.4, b_dec small:
- "a": SAELens's defaults (residual_threshold 1e-2, max_iterations None → d_in, stop_on_duplicate_support True,
  apply_b_dec_to_input True); inputs mixtures of 3 decoder rows plus b_dec plus noise, one row all zero after centring
  (x = b_dec: it selects nothing).
- "b": residual_threshold 1.5, max_iterations 3, stop_on_duplicate_support False, apply_b_dec_to_input False; the same
  weights, inputs randn.
- "c": normalize_activations "layer_norm" (each row (x − μ)/(σ + 1e-5) before encoding, ŷ·σ + μ after decoding),
  max_iterations 5, the other fields SAELens's defaults; inputs 3·randn + 1 (case b's).
Each case: <case>/cfg.json + <case>/sae_weights.safetensors written by MatchingPursuitSAE.save_model (exactly SAELens's
keys and cfg), and reference_<case>.safetensors with x, feature_acts (MatchingPursuitSAE.encode), sae_out (its forward),
and from MatchingPursuitTrainingSAE.training_forward_pass (is_logging_step True) on the same weights: loss, the metrics
max_l0, min_l0, residual_norm, residual_threshold_converged_portion, and the gradients of the loss w.r.t. W_dec and b_dec.
"""
import argparse, json, os, struct, sys, types

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from saelens_stubs import R, load_saelens as run_saelens_from, save_safetensors, stub  # noqa: E402,F401


def load_saelens(root):
    run_saelens_from(root, "6.37.6", save_file=lambda t, p, metadata=None: save_safetensors(t, p, metadata, as_float32=True))
    import sae_lens.saes.sae as sae  # noqa: E402
    import sae_lens.saes.matching_pursuit_sae as mp  # noqa: E402
    return sae, mp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    sae, mp = load_saelens(a.saelens)
    d, f, n = 8, 24, 12
    g = torch.Generator().manual_seed(0)
    w_dec = torch.randn(f, d, generator=g)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * (0.6 + 0.8 * torch.rand(f, 1, generator=g))
    b_dec = torch.randn(d, generator=g) * 0.2
    coef = torch.rand(n, 3, generator=g) * 2 + 0.5
    picks = torch.randint(0, f, (n, 3), generator=g)
    x_a = (coef.unsqueeze(-1) * w_dec[picks]).sum(1) + b_dec + torch.randn(n, d, generator=g) * 0.05
    x_a[5] = b_dec
    x_b = torch.randn(n, d, generator=g)
    cases = {
        "a": (x_a, dict()),
        "b": (x_b, dict(residual_threshold=1.5, max_iterations=3, stop_on_duplicate_support=False,
                        apply_b_dec_to_input=False)),
        "c": (x_b * 3 + 1, dict(normalize_activations="layer_norm", max_iterations=5)),
    }
    os.makedirs(a.out, exist_ok=True)
    for name, (x, kw) in cases.items():
        inf = mp.MatchingPursuitSAE(mp.MatchingPursuitSAEConfig(d_in=d, d_sae=f, **kw))
        with torch.no_grad():
            inf.W_dec.copy_(w_dec)
            inf.b_dec.copy_(b_dec)
        keys = sorted(inf.state_dict().keys())
        inf.save_model(os.path.join(a.out, name))
        acts = inf.encode(x)
        out = inf(x)
        tr = mp.MatchingPursuitTrainingSAE(mp.MatchingPursuitTrainingSAEConfig(d_in=d, d_sae=f, **kw))
        with torch.no_grad():
            tr.W_dec.copy_(w_dec)
            tr.b_dec.copy_(b_dec)
        step = sae.TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0,
                                  is_logging_step=True)
        o = tr.training_forward_pass(step)
        o.loss.backward()
        ref = {"x": x, "feature_acts": acts, "sae_out": out, "train_feature_acts": o.feature_acts,
               "train_sae_out": o.sae_out, "loss": o.loss.reshape(1),
               "grad_W_dec": tr.W_dec.grad, "grad_b_dec": tr.b_dec.grad}
        for k, v in o.metrics.items():
            ref["metric_" + k] = v.detach().reshape(1)
        save_safetensors(ref, os.path.join(a.out, f"reference_{name}.safetensors"),
                         {"origin": "SAELens 6.37.6 (69c4c62b) MatchingPursuitSAE / MatchingPursuitTrainingSAE, torch "
                                    + torch.__version__ + ", bench/reference/matching_pursuit_fixture.py",
                          "state_dict_keys": ",".join(keys)})
        l0 = (acts != 0).sum(-1).tolist()
        print(name, "keys", keys, "l0", l0, "loss", float(o.loss),
              {k: float(v) for k, v in o.metrics.items()})


if __name__ == "__main__":
    main()
