"""Writes tests/data/recipes/saelens_training_forward.json: one training_forward_pass + backward of SAELens 6.18's
TrainingSAE classes (standard, gated, jumprelu, topk, batchtopk) from fixed weights on one fixed batch, with SAELens's
default coefficients, for SaeLensTrainingForwardTests.

  git --git-dir=/work/.mirror/jbloomAus+SAELens/repo archive HEAD | tar -x -C /tmp/saelens
  /usr/bin/python3 bench/reference/saelens_training_forward_fixture.py --saelens /tmp/saelens \
      --out tests/data/recipes/saelens_training_forward.json

Written with SAELens v6.18.0 (jbloomAus/SAELens 91ca16ccd0684e4dd6323cd4f23ded734339ec54) and Debian's torch 1.13.0a0.
SAELens's sae_lens/saes/{sae,standard_sae,gated_sae,jumprelu_sae,topk_sae,batchtopk_sae}.py run unchanged; what they
import but these code paths do not use is stubbed (HookPoint is the identity, as TransformerLens's without hooks; the
loaders, registry, util, safetensors, jaxtyping; saelens_stubs.py). One bridge: SAELens's autograd Functions (JumpReLU, Step) use PyTorch
2's forward/setup_context split, which 1.13 lacks; the script wraps each in a 1.13 Function whose forward calls SAELens's
forward and setup_context and whose backward is SAELens's backward.

Problem: d_in 8, d_sae 32, batch 32 rows randn·2 + 0.5 (seed 0); W_dec rows random of unit norm (so SAELens's TopK
rescale_acts_by_decoder_norm is the identity in value), W_enc = W_decᵀ·0.8 + noise, biases small random; gated's
r_mag, b_gate, b_mag random; jumprelu's log_threshold = log(0.01 + 0.1·u) (SAELens's init is log 0.01). TopK k 3,
BatchTopK k 3; the dead-neuron mask (for TopK's AuxK) marks latents 0-9 dead. Coefficients: SAELens's defaults (l1 1,
l0 1, aux_loss_coefficient 1, bandwidth 0.05), no warm-up (n_training_steps 0, coefficient at its value). Records the
weights, the loss terms, and every parameter's gradient (SaeSharp's layout: W_enc [d, d_sae], W_dec [d_sae, d]);
BatchTopK also its topk_threshold after the pass.
"""
import argparse, json, math, os, sys, types

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from saelens_stubs import R, load_saelens as run_saelens_from, save_safetensors, stub  # noqa: E402,F401


def load_saelens(root):
    run_saelens_from(root, "6.18.0")
    import sae_lens.saes.sae as sae  # noqa: E402
    import sae_lens.saes.jumprelu_sae as jumprelu  # noqa: E402
    # PyTorch 1.13 bridge for PyTorch 2 style Functions (forward without ctx + setup_context).
    for name in ["JumpReLU", "Step"]:
        new = getattr(jumprelu, name)

        class Bridge(torch.autograd.Function):
            F = new

            @staticmethod
            def forward(ctx, x, threshold, bandwidth, _F=new):
                out = _F.forward(x, threshold, bandwidth)
                _F.setup_context(ctx, (x, threshold, bandwidth), out)
                return out

            @staticmethod
            def backward(ctx, grad_output, _F=new):
                return _F.backward(ctx, grad_output)
        setattr(jumprelu, name, Bridge)
    import sae_lens.saes.standard_sae as standard  # noqa: E402
    import sae_lens.saes.gated_sae as gated  # noqa: E402
    import sae_lens.saes.topk_sae as topk  # noqa: E402
    import sae_lens.saes.batchtopk_sae as batchtopk  # noqa: E402
    return sae, standard, gated, jumprelu, topk, batchtopk


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    sae, standard, gated, jumprelu, topk, batchtopk = load_saelens(a.saelens)
    d, f, n = 8, 32, 32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g) * 2 + 0.5
    w_dec = torch.randn(f, d, generator=g)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    w_enc = w_dec.T * 0.8 + torch.randn(d, f, generator=g) * 0.1
    b_enc = torch.randn(f, generator=g) * 0.1
    b_dec = torch.randn(d, generator=g) * 0.1 + 0.3
    extra = {"b_gate": torch.randn(f, generator=g) * 0.1, "r_mag": torch.randn(f, generator=g) * 0.1,
             "b_mag": torch.randn(f, generator=g) * 0.1,
             "log_threshold": torch.log(0.01 + 0.1 * torch.rand(f, generator=g))}
    dead = torch.zeros(f, dtype=torch.bool)
    dead[:10] = True
    specs = {
        "standard": (standard.StandardTrainingSAE, standard.StandardTrainingSAEConfig, {}, ["b_enc"]),
        "gated": (gated.GatedTrainingSAE, gated.GatedTrainingSAEConfig, {}, ["b_gate", "r_mag", "b_mag"]),
        "jumprelu": (jumprelu.JumpReLUTrainingSAE, jumprelu.JumpReLUTrainingSAEConfig, {}, ["b_enc", "log_threshold"]),
        "topk": (topk.TopKTrainingSAE, topk.TopKTrainingSAEConfig, {"k": 3}, ["b_enc"]),
        "batchtopk": (batchtopk.BatchTopKTrainingSAE, batchtopk.BatchTopKTrainingSAEConfig, {"k": 3}, ["b_enc"]),
    }
    out = {"origin": "SAELens v6.18.0 (jbloomAus/SAELens 91ca16c) TrainingSAE.training_forward_pass, torch " + torch.__version__
                     + ", written by bench/reference/saelens_training_forward_fixture.py",
           "x": R(x.tolist()), "dead_mask": dead.int().tolist(), "saes": {}}
    for name, (cls, cfg_cls, kw, own) in specs.items():
        cfg = cfg_cls(d_in=d, d_sae=f, **kw)
        m = cls(cfg)
        with torch.no_grad():
            m.W_enc.copy_(w_enc)
            m.W_dec.copy_(w_dec)
            m.b_dec.copy_(b_dec)
            for o in own:
                getattr(m, o).copy_(b_enc if o == "b_enc" else extra[o])
        coeffs = {k: (v.value if hasattr(v, "value") else v) for k, v in m.get_coefficients().items()}
        step = sae.TrainStepInput(sae_in=x, coefficients=coeffs, dead_neuron_mask=dead, n_training_steps=0)
        o = m.training_forward_pass(step)
        o.loss.backward()
        params = {k: v for k, v in m.named_parameters()}
        rec = {"config": {k: v for k, v in cfg.__dict__.items() if isinstance(v, (int, float, str, bool, type(None)))},
               "coefficients": coeffs,
               "weights": {k: R(v.detach().tolist()) for k, v in params.items()},
               "losses": {k: float(v) for k, v in o.losses.items()}, "loss": float(o.loss),
               "l0": float((o.feature_acts != 0).float().sum(-1).mean()),
               "grad": {k: R(v.grad.tolist()) for k, v in params.items()}}
        if name == "batchtopk":
            rec["topk_threshold_after"] = float(m.topk_threshold)
        out["saes"][name] = rec
        print(name, rec["losses"], "loss", rec["loss"], "l0", rec["l0"])
    with open(a.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
