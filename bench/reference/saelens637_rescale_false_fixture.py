"""Writes tests/data/recipes/saelens637_rescale_false.json: one training step of SAELens 6.37.6's TopK family
(TopKTrainingSAE, BatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAE) with rescale_acts_by_decoder_norm False, from
fixed weights whose decoder rows have unequal norms, for RescaleActsByDecoderNormTests.

  git --git-dir=/work/.mirror/Zhangyiming00+SAELens/repo archive 69c4c62b0dc24e5ba23fc773a0286149514b4a23 sae_lens \
      | tar -x -C /tmp/saelens637
  /usr/bin/python3 bench/reference/saelens637_rescale_false_fixture.py --saelens /tmp/saelens637 \
      --out tests/data/recipes/saelens637_rescale_false.json

SAELens 6.37.6 (upstream 69c4c62b) and Debian's torch 1.13; its sae_lens/saes/*.py run unchanged with saelens_stubs.py.
The step is SAELens's SAETrainer._train_step without the scaler: training_forward_pass, loss.backward(),
clip_grad_norm_(parameters, 1.0), Adam(lr 1e-3, betas (0.9, 0.999)).step() (no decoder-norm constraint anywhere).

Problem: d_in 8, d_sae 24, k 3, batch 32 rows randn·2 + 0.5 (seed 0); W_dec rows random with norms 0.3 + 1.7·u (so
that rescaling by them would select other latents), W_enc = W_decᵀ·0.8 + noise, biases small random; matryoshka widths
[6, 12, 24]. No dead-neuron mask: SAELens's AuxK differs from SaeSharp's by design (docs/recipes.md), so the step is the
reconstruction loss alone. Records per architecture the feature activations, the loss, every parameter's gradient
(before clipping), the weights after the step (SaeSharp's layout: W_enc [d, d_sae], W_dec [d_sae, d]); and, for topk,
the feature activations with rescale True on the same weights (they differ: the rescale changes the selection).
"""
import argparse, json, os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from saelens_stubs import R, load_saelens as run_saelens_from  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    run_saelens_from(a.saelens, "6.37.6")
    import sae_lens.saes.sae as sae  # noqa: E402
    import sae_lens.saes.topk_sae as topk  # noqa: E402
    import sae_lens.saes.batchtopk_sae as batchtopk  # noqa: E402
    import sae_lens.saes.matryoshka_batchtopk_sae as matryoshka  # noqa: E402
    d, f, n, k, widths, lr = 8, 24, 32, 3, [6, 12, 24], 1e-3
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g) * 2 + 0.5
    w_dec = torch.randn(f, d, generator=g)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * (0.3 + 1.7 * torch.rand(f, 1, generator=g))
    w_enc = w_dec.T * 0.8 + torch.randn(d, f, generator=g) * 0.1
    b_enc = torch.randn(f, generator=g) * 0.1
    b_dec = torch.randn(d, generator=g) * 0.1 + 0.3
    weights = {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec}
    specs = {
        "topk": (topk.TopKTrainingSAE, topk.TopKTrainingSAEConfig, {}),
        "batchtopk": (batchtopk.BatchTopKTrainingSAE, batchtopk.BatchTopKTrainingSAEConfig, {}),
        "matryoshka_batchtopk": (matryoshka.MatryoshkaBatchTopKTrainingSAE, matryoshka.MatryoshkaBatchTopKTrainingSAEConfig,
                                 {"matryoshka_widths": widths}),
    }
    out = {"origin": "SAELens v6.37.6 (upstream 69c4c62b) training_forward_pass + SAETrainer's clip and Adam step, torch "
                     + torch.__version__ + ", written by bench/reference/saelens637_rescale_false_fixture.py",
           "x": R(x.tolist()), "k": k, "matryoshka_widths": widths, "lr": lr,
           "weights": {kk: R(v.tolist()) for kk, v in weights.items()}, "saes": {}}

    def build(cls, cfg_cls, kw, rescale):
        cfg = cfg_cls(d_in=d, d_sae=f, k=k, rescale_acts_by_decoder_norm=rescale, **kw)
        m = cls(cfg)
        with torch.no_grad():
            for kk, v in weights.items():
                getattr(m, kk).copy_(v)
        return m

    for name, (cls, cfg_cls, kw) in specs.items():
        m = build(cls, cfg_cls, kw, False)
        coeffs = {kk: (v.value if hasattr(v, "value") else v) for kk, v in m.get_coefficients().items()}
        step = sae.TrainStepInput(sae_in=x, coefficients=coeffs, dead_neuron_mask=None, n_training_steps=0,
                                  is_logging_step=False)
        opt = torch.optim.Adam(m.parameters(), lr=lr, betas=(0.9, 0.999))
        o = m.training_forward_pass(step)
        o.loss.backward()
        params = dict(m.named_parameters())
        grad = {kk: R(v.grad.tolist()) for kk, v in params.items()}
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        rec = {"rescale_acts_by_decoder_norm": m.cfg.rescale_acts_by_decoder_norm,
               "feature_acts": R(o.feature_acts.detach().tolist()),
               "losses": {kk: float(v) for kk, v in o.losses.items()}, "loss": float(o.loss), "grad": grad,
               "after": {kk: R(v.detach().tolist()) for kk, v in params.items()}}
        if name == "topk":
            t = build(cls, cfg_cls, kw, True)
            rec["feature_acts_rescale_true"] = R(t.encode(x).detach().tolist())
        out["saes"][name] = rec
        print(name, rec["losses"], "loss", rec["loss"])
    with open(a.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
