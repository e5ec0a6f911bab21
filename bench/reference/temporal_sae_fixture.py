"""Writes tests/data/temporal_sae/: tiny TemporalSAEs built by SAELens 6.37.6's own sae_lens/saes/temporal_sae.py,
each saved twice, and SAELens's outputs on fixed inputs, for TemporalSaeTests.

  git --git-dir=/work/.mirror/Zhangyiming00+SAELens/repo archive 69c4c62b0dc24e5ba23fc773a0286149514b4a23 sae_lens \
      | tar -x -C /tmp/saelens637
  /usr/bin/python3 bench/reference/temporal_sae_fixture.py --saelens /tmp/saelens637 --out tests/data/temporal_sae

SAELens 6.37.6 (upstream 69c4c62b, here from the Zhangyiming00/SAELens mirror at that commit) and Debian's torch 1.13.
sae_lens/saes/{sae,temporal_sae}.py and sae_lens/constants.py run unchanged; what they import but these code paths do
not use is stubbed by saelens_stubs.py (HookPoint is the identity; the loaders, the registry,
util's dtype helpers). Two shims, said here because they are not SAELens's code:
  * torch 1.13 has no F.scaled_dot_product_attention: it is added to torch.nn.functional as the explicit causal softmax
    (softmax(q·kᵀ/√d_head + mask(-inf above the diagonal))·v), which is what torch's does with is_causal=True, no
    dropout and no attn_mask (the only call temporal_sae.py makes);
  * safetensors is not installed: safetensors.torch.save_file is a small writer of the format (8-byte little-endian
    header length, JSON header, raw little-endian data), so SAE.save_model runs as SAELens's.

Each SAE (d_in 8, d_sae 32, n_heads 2, bottleneck_factor 8: 32 % (8·2) == 0, as ManualAttention asserts) is written
  NAME/saelens/{cfg.json, sae_weights.safetensors}  by SAELens's SAE.save_model (cfg.to_dict() and state_dict());
  NAME/canrager/layer_3/temporal/{conf.yaml, latest_ckpt.safetensors}  as canrager/temporalSAEs lays out a release
    (the file names, YAML keys and tensor names D, b, E, attn_layers.* that SAELens's temporal_sae_huggingface_loader
    and get_temporal_sae_config_from_hf read; an unused extra tensor 'step' as a trainer checkpoint might hold);
and NAME/expected.json holds the inputs x [B, L, d_in] and SAELens's encode (z_novel), z_pred (encode_with_predictions)
and forward outputs, plus forward and z_novel with one later token changed (for causality checks).
Weights: SAELens's own initialisation (torch.manual_seed per SAE), then b_dec set small random so that b_dec's
subtraction is exercised (SAELens initialises it to zero).

With --check-saved DIR (no --out), it checks instead that SAELens reads what SaeSharp saves: DIR/NAME holds
`sae convert tests/data/temporal_sae/NAME/canrager/layer_3/temporal DIR/NAME` for each NAME; SAELens's TemporalSAE is
built from its cfg.json (TemporalSAEConfig's fields), loads sae_weights.safetensors with load_state_dict(strict=True),
and its forward on expected.json's x is compared with SAELens's recorded output.
"""
import argparse, json, math, os, struct, sys, types

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from saelens_stubs import R, load_saelens as run_saelens_from, save_safetensors, stub  # noqa: E402,F401


def save_file(tensors, path, metadata=None):
    save_safetensors(tensors, path, metadata, sort_keys=True)


def load_saelens(root):
    run_saelens_from(root, "6.37.6", save_file=save_file, sdpa=True)
    import sae_lens.saes.temporal_sae as temporal  # noqa: E402
    return temporal


VARIANTS = {
    # tied decoder/encoder, top-k novel codes, one attention layer, factor 0.5
    "tied_topk": dict(tied_weights=True, sae_diff_type="topk", kval_topk=3, n_attn_layers=1, factor=0.5, seed=1),
    # separate W_enc, ReLU novel codes, two attention layers, factor 2
    "untied_relu": dict(tied_weights=False, sae_diff_type="relu", kval_topk=None, n_attn_layers=2, factor=2.0, seed=2),
}


def load_file(path):
    import numpy as np
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header, base, out = json.loads(b[8:8 + n]), 8 + n, {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        s, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(b[base + s:base + e], dtype=np.float32).copy()).view(v["shape"])
    return out


def check_saved(temporal, saved, data):
    import dataclasses
    names = {f.name for f in dataclasses.fields(temporal.TemporalSAEConfig)} - {"metadata"}
    for name in VARIANTS:
        with open(os.path.join(saved, name, "cfg.json")) as f:
            cfg = json.load(f)
        sae = temporal.TemporalSAE(temporal.TemporalSAEConfig(**{k: v for k, v in cfg.items() if k in names}))
        sae.load_state_dict(load_file(os.path.join(saved, name, "sae_weights.safetensors")), strict=True)
        with open(os.path.join(data, name, "expected.json")) as f:
            e = json.load(f)
        with torch.no_grad():
            diff = (sae.forward(torch.tensor(e["x"])) - torch.tensor(e["forward"])).abs().max().item()
        print(name, "SAELens on SaeSharp's save: max |forward - expected| =", diff)
        assert diff < 1e-5


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--out")
    p.add_argument("--check-saved")
    p.add_argument("--data", default="tests/data/temporal_sae")
    a = p.parse_args()
    torch.set_num_threads(1)
    temporal = load_saelens(a.saelens)
    if a.check_saved:
        check_saved(temporal, a.check_saved, a.data)
        return
    d_in, d_sae, n_heads, bf, B, L = 8, 32, 2, 8, 2, 6
    for name, v in VARIANTS.items():
        torch.manual_seed(v["seed"])
        cfg = temporal.TemporalSAEConfig(
            d_in=d_in, d_sae=d_sae, n_heads=n_heads, n_attn_layers=v["n_attn_layers"], bottleneck_factor=bf,
            sae_diff_type=v["sae_diff_type"], kval_topk=v["kval_topk"], tied_weights=v["tied_weights"],
            normalize_activations="constant_scalar_rescale", activation_normalization_factor=v["factor"],
            apply_b_dec_to_input=True)
        cfg.metadata.model_name = "tiny"
        cfg.metadata.hook_name = "blocks.3.hook_resid_post"
        sae = temporal.TemporalSAE(cfg)
        with torch.no_grad():
            sae.b_dec.copy_(torch.randn(d_in) * 0.1)
        # Inputs whose scale gives the ReLU codes a fair share of positives: lam = 1/(4·d_in) shrinks x·W_enc.
        x = torch.randn(B, L, d_in) * 12 / v["factor"]
        with torch.no_grad():
            z_novel, z_pred = sae.encode_with_predictions(x)
            encoded = sae.encode(x)
            out = sae.forward(x)
            x2 = x.clone()
            x2[:, 4, :] += 5.0        # a later token changed: positions 0..3 must not move
            out2 = sae.forward(x2)
            z2 = sae.encode(x2)
        assert torch.equal(encoded, z_novel)
        base = os.path.join(a.out, name)
        sl = os.path.join(base, "saelens")
        os.makedirs(sl, exist_ok=True)
        sae.save_model(sl)
        cr = os.path.join(base, "canrager", "layer_3", "temporal")
        os.makedirs(cr, exist_ok=True)
        state = sae.state_dict()
        ckpt = {"D": state["W_dec"], "b": state["b_dec"], "step": torch.tensor([1000], dtype=torch.int64)}
        if not v["tied_weights"]:
            ckpt["E"] = state["W_enc"]
        for k, t in state.items():
            if k.startswith("attn_layers."):
                ckpt[k] = t
        save_file(ckpt, os.path.join(cr, "latest_ckpt.safetensors"))
        kval = "null" if v["kval_topk"] is None else str(v["kval_topk"])
        with open(os.path.join(cr, "conf.yaml"), "w") as f:
            f.write(
                "llm:\n"
                f"  dimin: {d_in}\n"
                "  name: tiny\n"
                "  layer: 3\n"
                "sae:\n"
                f"  exp_factor: {d_sae // d_in}\n"
                f"  n_heads: {n_heads}\n"
                f"  n_attn_layers: {v['n_attn_layers']}\n"
                f"  bottleneck_factor: {bf}\n"
                f"  sae_diff_type: {v['sae_diff_type']}\n"
                f"  kval_topk: {kval}\n"
                f"  tied_weights: {str(v['tied_weights']).lower()}\n"
                f"  scaling_factor: {v['factor']}\n"
                "data:\n"
                "  dtype: float32\n"
                "  seq_len: 6\n")
        expected = {
            "origin": "SAELens v6.37.6 (upstream 69c4c62b) TemporalSAE, torch " + torch.__version__
                      + " (scaled_dot_product_attention shimmed, see the script), written by "
                        "bench/reference/temporal_sae_fixture.py",
            "x": R(x.tolist()), "z_novel": R(z_novel.tolist()), "z_pred": R(z_pred.tolist()),
            "forward": R(out.tolist()), "changed_position": 4, "x_changed": R(x2.tolist()),
            "forward_changed": R(out2.tolist()), "z_novel_changed": R(z2.tolist()),
            "state_dict_keys": sorted(state.keys()),
        }
        with open(os.path.join(base, "expected.json"), "w") as f:
            json.dump(expected, f)
        l0 = (z_novel != 0).sum(-1).float().mean().item()
        print(name, "keys", sorted(state.keys()), "mean L0", l0, "z_pred[:, 0] nonzero", (z_pred[:, 0] != 0).sum().item(),
              "|out|", out.abs().mean().item())


if __name__ == "__main__":
    main()
