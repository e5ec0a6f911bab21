"""Writes tests/data/feature_metrics/: SAELens 6.37.6's per-feature metrics (the `feature_metrics` that run_evals returns
and its eval CLI writes) computed by its own sae_lens/evals.py, for FeatureMetricsSaeLensTests.

  git --git-dir=/work/.mirror/Zhangyiming00+SAELens/repo archive 69c4c62b0dc24e5ba23fc773a0286149514b4a23 sae_lens \
      | tar -x -C /tmp/saelens637
  /usr/bin/python3 bench/reference/feature_metrics_fixture.py --saelens /tmp/saelens637 --out tests/data/feature_metrics

SAELens 6.37.6 (upstream 69c4c62b, from the Zhangyiming00/SAELens mirror) and Debian's torch 1.13. Its
sae_lens/saes/{sae,standard_sae,gated_sae,matching_pursuit_sae,temporal_sae,transcoder}.py, sae_lens/constants.py and
sae_lens/evals.py run unchanged; what they import but these code paths do not use is stubbed (saelens_stubs.py; for
evals.py also the activation store and scaler modules, transformer_lens's HookedTransformer and two sae_lens.util
helpers). The SAEs are written by SAELens's own save_model (safetensors' save_file writes the format here), so the
tests load exactly SAELens's folders.

1. get_featurewise_weight_based_metrics(sae) (encoder_norm, encoder_decoder_cosine_sim, encoder_bias), d_in 6, d_sae 10,
   random weights (seed 0) with encoder column 3 and decoder row 7 zero (NaN cosines):
   - "standard": StandardSAE (has b_enc);
   - "gated": GatedSAE, the same W_enc and W_dec (no b_enc: no encoder_bias key);
   - "matching_pursuit": MatchingPursuitSAE, the same W_dec (its W_enc property is W_decᵀ);
   - "temporal_tied": TemporalSAE with tied_weights (SAELens's default): no W_enc attribute, the call raises; the
     exception is recorded, not a value;
   - "transcoder": Transcoder d_in 6 → d_out 4: the cosine of [d_sae, 4] with [d_sae, 6] raises; recorded.
2. get_sparsity_and_variance_metrics on the standard SAE (compute_featurewise_density_statistics: feature_density and
   consistent_activation_heuristic), 2 batches of 3 windows of 8 tokens; token 0 (BOS, position 0 of every window) and
   token 1 (a pad token, at the end of two windows and once inside one) excluded through ignore_tokens; activations x
   random [2, 3, 8, 6] with dimension 5 set to 4 at the excluded positions and 0 elsewhere. The stand-in model returns
   x[batch] from run_with_cache; the SAE encodes it. Feature 9 reads dimension 5 only (W_enc[:, 9] = e₅, b_enc −1,
   W_dec row 9 e₅) and so fires only at excluded positions: density 0, heuristic NaN (SAELens's mask); feature 0 has
   b_enc −100 and never fires.

Writes <case>/cfg.json + <case>/sae_weights.safetensors, activations.safetensors (tokens int64 [2, 3, 8], x float32
[2, 3, 8, 6]) and expected.json: per case the three lists (NaN as null) or the exception, and the two density lists.
"""
import argparse, json, math, os, sys, types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from saelens_stubs import load_saelens as run_saelens_from, save_safetensors, stub  # noqa: E402


def load(root):
    run_saelens_from(root, "6.37.6", save_file=lambda t, p, metadata=None: save_safetensors(t, p, metadata, as_float32=True))
    import sae_lens.saes.standard_sae as standard  # noqa: E402
    import sae_lens.saes.gated_sae as gated  # noqa: E402
    import sae_lens.saes.matching_pursuit_sae as mp  # noqa: E402
    import sae_lens.saes.temporal_sae as temporal  # noqa: E402
    import sae_lens.saes.transcoder as transcoder  # noqa: E402
    # evals.py's other imports: the activation store and scaler (handed in as stand-ins here), HookedTransformer, and two
    # util helpers the metric functions do not reach with a hook_name that needs no stop layer.
    stub("sae_lens.training")
    stub("sae_lens.training.activation_scaler", ActivationScaler=object)
    stub("sae_lens.training.activations_store", ActivationsStore=object)
    sys.modules["transformer_lens"].HookedTransformer = object
    sys.modules["sae_lens.util"].extract_stop_at_layer_from_tlens_hook_name = lambda h: None
    sys.modules["sae_lens.util"].get_special_token_ids = None
    evals = types.ModuleType("sae_lens.evals")
    evals.__file__ = os.path.join(root, "sae_lens", "evals.py")
    with open(evals.__file__) as f:
        exec(compile(f.read(), "sae_lens/evals.py", "exec"), evals.__dict__)
    return standard, gated, mp, temporal, transcoder, evals


def nan_to_none(v):
    return [None if (isinstance(e, float) and math.isnan(e)) else e for e in v]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    standard, gated, mp, temporal, transcoder, evals = load(a.saelens)
    d, f = 6, 10
    g = torch.Generator().manual_seed(0)
    w_enc = torch.randn(d, f, generator=g) * 0.5
    w_dec = torch.randn(f, d, generator=g) * 0.5
    b_enc = torch.randn(f, generator=g) * 0.3
    w_enc[:, 3] = 0
    w_dec[7] = 0
    # The density part: feature 9 reads dimension 5, which is non-zero only at excluded positions; feature 0 never fires.
    w_enc[5, :] = 0
    w_enc[:, 9] = 0
    w_enc[5, 9] = 1
    w_dec[9] = 0
    w_dec[9, 5] = 1
    b_enc[9] = -1
    b_enc[0] = -100
    b_dec = torch.randn(d, generator=g) * 0.1
    b_dec[5] = 0

    os.makedirs(a.out, exist_ok=True)
    expected = {"saelens_version": "6.37.6", "weights": {}}

    def weights_case(name, sae):
        try:
            m = evals.get_featurewise_weight_based_metrics(sae)
            expected["weights"][name] = {k: nan_to_none(v) for k, v in m.items()}
        except Exception as e:  # noqa: BLE001  (recorded: what SAELens does for this architecture)
            expected["weights"][name] = {"raises": f"{type(e).__name__}: {e}"}
        sae.save_model(os.path.join(a.out, name))

    s = standard.StandardSAE(standard.StandardSAEConfig(d_in=d, d_sae=f))
    with torch.no_grad():
        s.W_enc.copy_(w_enc); s.W_dec.copy_(w_dec); s.b_enc.copy_(b_enc); s.b_dec.copy_(b_dec)
    weights_case("standard", s)

    gs = gated.GatedSAE(gated.GatedSAEConfig(d_in=d, d_sae=f))
    with torch.no_grad():
        gs.W_enc.copy_(w_enc); gs.W_dec.copy_(w_dec); gs.b_dec.copy_(b_dec)
        gs.b_gate.copy_(b_enc); gs.b_mag.copy_(b_enc)
    weights_case("gated", gs)

    m = mp.MatchingPursuitSAE(mp.MatchingPursuitSAEConfig(d_in=d, d_sae=f))
    with torch.no_grad():
        m.W_dec.copy_(w_dec); m.b_dec.copy_(b_dec)
    weights_case("matching_pursuit", m)

    t = temporal.TemporalSAE(temporal.TemporalSAEConfig(d_in=d, d_sae=f, n_heads=1, bottleneck_factor=1))
    with torch.no_grad():
        t.W_dec.copy_(w_dec); t.b_dec.copy_(b_dec)
    weights_case("temporal_tied", t)

    tc = transcoder.Transcoder(transcoder.TranscoderConfig(d_in=d, d_sae=f, d_out=4, apply_b_dec_to_input=False))
    with torch.no_grad():
        tc.W_enc.copy_(w_enc); tc.W_dec.copy_(w_dec[:, :4]); tc.b_enc.copy_(b_enc); tc.b_dec.zero_()
    weights_case("transcoder", tc)

    # --- get_sparsity_and_variance_metrics' feature_density and consistent_activation_heuristic ---
    B, W, S, BOS, PAD = 2, 3, 8, 0, 1
    tokens = torch.randint(2, 50, (B, W, S), generator=g)
    tokens[:, :, 0] = BOS
    tokens[0, 1, 6:] = PAD
    tokens[1, 2, 7] = PAD
    tokens[1, 0, 3] = PAD
    excluded = (tokens == BOS) | (tokens == PAD)
    x = torch.randn(B, W, S, d, generator=g)
    x[..., 5] = excluded.float() * 4

    class Store:
        def __init__(self):
            self.i = 0

        def get_batch_tokens(self, n):
            assert n == W
            self.i += 1
            return tokens[self.i - 1]

    class Model:
        """run_with_cache returns the fixed activations of the batch whose tokens it is given."""

        def run_with_cache(self, batch_tokens, names_filter, **k):
            i = next(j for j in range(B) if torch.equal(tokens[j], batch_tokens))
            return None, {names_filter[0]: x[i]}

    class Scaler:
        scale = unscale = staticmethod(lambda v: v)

    s.cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    _, fm = evals.get_sparsity_and_variance_metrics(
        s, Model(), Store(), Scaler(), n_batches=B, compute_l2_norms=False, compute_sparsity_metrics=True,
        compute_variance_metrics=False, compute_featurewise_density_statistics=True, eval_batch_size_prompts=W,
        model_kwargs={}, ignore_tokens=[BOS, PAD])
    expected["density"] = {k: nan_to_none(v) for k, v in fm.items()}
    expected["density"]["excluded_tokens"] = [BOS, PAD]
    save_safetensors({"tokens": tokens, "x": x}, os.path.join(a.out, "activations.safetensors"))
    with open(os.path.join(a.out, "expected.json"), "w") as fh:
        json.dump(expected, fh, indent=1)
    print(json.dumps(expected, indent=1)[:3000])


if __name__ == "__main__":
    main()
