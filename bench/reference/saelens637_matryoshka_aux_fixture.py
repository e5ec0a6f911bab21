"""Writes tests/data/recipes/saelens637_matryoshka_aux.json: one training_forward_pass of SAELens 6.37.6's
MatryoshkaBatchTopKTrainingSAE from fixed weights on one fixed batch with a fixed dead-latent mask, with
use_matryoshka_aux_loss False and True, for SaeLens637MatryoshkaAuxLossTests.

  git --git-dir=/work/.mirror/Zhangyiming00+SAELens/repo archive 69c4c62b0dc24e5ba23fc773a0286149514b4a23 sae_lens \
      | tar -x -C /tmp/saelens637
  /usr/bin/python3 bench/reference/saelens637_matryoshka_aux_fixture.py --saelens /tmp/saelens637 \
      --out tests/data/recipes/saelens637_matryoshka_aux.json

SAELens 6.37.6 (upstream 69c4c62b, here from the Zhangyiming00/SAELens mirror at that commit) and Debian's torch 1.13.
Its sae_lens/saes/{sae,jumprelu_sae,topk_sae,batchtopk_sae,matryoshka_batchtopk_sae}.py and sae_lens/constants.py run
unchanged; what they import but these code paths do not use is stubbed (HookPoint is the identity, as TransformerLens's
without hooks; the loaders, registry, util's dtype helpers, safetensors), by saelens_stubs.py.

Problem: d_in 8, d_sae 24, matryoshka_widths [4, 10, 24], k 2, batch 16 rows randn·2 + 0.5 (seed 0); W_dec rows random of
unit norm (so rescale_acts_by_decoder_norm is the identity in value), W_enc = W_decᵀ·0.8 + noise, biases small random;
dead latents 1, 2 (level 1), none in level 2, 12, 15, 20, 23 (level 3). SAELens's default aux_loss_coefficient 1.0.
Records the weights (SaeSharp's layout: W_enc [d, d_sae], W_dec [d_sae, d]), the feature activations and the losses.
"""
import argparse, json, os, sys, types

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from saelens_stubs import R, load_saelens as run_saelens_from, save_safetensors, stub  # noqa: E402,F401


def load_saelens(root):
    run_saelens_from(root, "6.37.6")
    import sae_lens.saes.sae as sae  # noqa: E402
    import sae_lens.saes.matryoshka_batchtopk_sae as matryoshka  # noqa: E402
    return sae, matryoshka


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    sae, matryoshka = load_saelens(a.saelens)
    d, f, n, widths = 8, 24, 16, [4, 10, 24]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g) * 2 + 0.5
    w_dec = torch.randn(f, d, generator=g)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    w_enc = w_dec.T * 0.8 + torch.randn(d, f, generator=g) * 0.1
    b_enc = torch.randn(f, generator=g) * 0.1
    b_dec = torch.randn(d, generator=g) * 0.1 + 0.3
    dead = torch.zeros(f, dtype=torch.bool)
    dead[[1, 2, 12, 15, 20, 23]] = True
    out = {"origin": "SAELens v6.37.6 (upstream 69c4c62b) MatryoshkaBatchTopKTrainingSAE.training_forward_pass, torch "
                     + torch.__version__ + ", written by bench/reference/saelens637_matryoshka_aux_fixture.py",
           "x": R(x.tolist()), "dead_mask": dead.int().tolist(), "matryoshka_widths": widths, "k": 2,
           "weights": {"W_enc": R(w_enc.tolist()), "W_dec": R(w_dec.tolist()), "b_enc": R(b_enc.tolist()),
                       "b_dec": R(b_dec.tolist())},
           "runs": {}}
    for flag in [False, True]:
        cfg = matryoshka.MatryoshkaBatchTopKTrainingSAEConfig(d_in=d, d_sae=f, k=2, matryoshka_widths=widths,
                                                             use_matryoshka_aux_loss=flag)
        m = matryoshka.MatryoshkaBatchTopKTrainingSAE(cfg)
        with torch.no_grad():
            m.W_enc.copy_(w_enc)
            m.W_dec.copy_(w_dec)
            m.b_dec.copy_(b_dec)
            m.b_enc.copy_(b_enc)
        coeffs = {k: (v.value if hasattr(v, "value") else v) for k, v in m.get_coefficients().items()}
        step = sae.TrainStepInput(sae_in=x, coefficients=coeffs, dead_neuron_mask=dead, n_training_steps=0,
                                  is_logging_step=False)
        o = m.training_forward_pass(step)
        rec = {"use_matryoshka_aux_loss": flag, "aux_loss_coefficient": cfg.aux_loss_coefficient,
               "feature_acts": R(o.feature_acts.detach().tolist()),
               "losses": {k: float(v) for k, v in o.losses.items()}, "loss": float(o.loss)}
        out["runs"][str(flag).lower()] = rec
        print(flag, rec["losses"], "loss", rec["loss"])
    with open(a.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
