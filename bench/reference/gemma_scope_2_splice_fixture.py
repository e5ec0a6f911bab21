"""Writes tests/data/gemma_scope_2_splice/: tiny Gemma Scope 2 SAEs (random weights, SAELens 6.37.6's `gemma_3`
on-disk layout) for the tiny Gemma 3 model tests/data/hf_models/gemma3, and for each the logits of transformers' own
Gemma3ForCausalLM with that SAE spliced in by PyTorch hooks on the Hugging Face module SAELens records for it
(`hf_hook_name`, and a transcoder's `hf_hook_name_out`), for GemmaScope2SpliceTests.

How it was run (2026-12-05), on the transformers 4.51 tree hf_models_fixture.py's docstring prepares (main d1b92369,
huggingface_hub v0.30.2; Debian bookworm's python3-torch 1.13.1):
  export PYTHONDONTWRITEBYTECODE=1
  /usr/bin/python3 bench/reference/gemma_scope_2_splice_fixture.py --site /tmp/hf/site451 \\
      --model tests/data/hf_models/gemma3 --conditional tests/data/hf_models/gemma3-conditional \\
      --out tests/data/gemma_scope_2_splice

The site is prepared by hf_models_fixture.py's prepare_site and torch2_stand_ins (imported, not copied); its
safetensors stand-in reads the format too. transformers' `from_pretrained` needs accelerate in this tree (absent), so
the model is built as from_pretrained would: AutoConfig.from_pretrained on the fixture folder, the model class from that config
(eager attention, float32), model.safetensors read by transformers' modeling_utils.load_state_dict and loaded strictly
but for the tied lm_head; its clean logits are checked against that folder's reference.npz.

SAEs (folder names as in the google/gemma-scope-2-270m-pt repo's *_all folders; d_sae 40):
- resid_post_all/layer_1_width_16k_l0_small (config.json): JumpReLU SAE on `model.layers.1.output` (the decoder
  layer's hidden states, element 0 of its output tuple);
- attn_out_all/layer_0_width_16k_l0_small (config.json): d_in 64 = 4 heads x head_dim 16, on
  `model.layers.0.self_attn.o_proj.input` (the heads' outputs concatenated, before o_proj);
- mlp_out_all/layer_2_width_16k_l0_small (no config.json: SAELens infers it from the folder name):
  `model.layers.2.post_feedforward_layernorm.output`;
- transcoder_all/layer_1_width_16k_l0_big_affine (config.json, affine_connection true: jumprelu_skip_transcoder):
  reads `model.layers.1.pre_feedforward_layernorm.output`, replaces `model.layers.1.post_feedforward_layernorm.output`;
- transcoder_all/layer_3_width_16k_l0_small (no config.json, not affine: jumprelu_transcoder): the same hooks at layer 3.
config.json holds what Gemma Scope 2's do and SAELens reads: architecture "jump_relu", model_name (spelled
"gemma-v3-270m-pt", which SAELens's normalisation turns into google/gemma-3-270m), hf_hook_point_in, hf_hook_point_out for transcoders,
affine_connection, width, l0. The HF hook points of the folders without config.json are SAELens's
_infer_gemma_3_raw_cfg_dict rules, restated below (hf_hooks).

params.safetensors: w_enc [d_in, d_sae], w_dec [d_sae, d_out], b_enc [d_sae], b_dec [d_out], threshold [d_sae], and
for the affine transcoder affine_skip_connection [d_out, d_in] (float32). SAELens 6.37.6's formulas (sae_lens/saes/
jumprelu_sae.py, transcoder.py at 69c4c62b, written out here): pre = x.W_enc + b_enc (apply_b_dec_to_input false),
f = ReLU(pre) * [pre > threshold], out = f.W_dec + b_dec, and JumpReLUSkipTranscoder adds x.W_skip^T with W_skip =
affine_skip_connection as stored (SkipTranscoder.forward: `x @ self.W_skip.T`). Weights are scaled to the activations
at the hook (one clean forward first), so the splice moves the logits by a good fraction of their scale.
Thresholds: each latent's pre-activations over the 24 tokens are sorted and the threshold put midway in a gap of at
least 0.02 between two of them (or below the smallest positive one), and 5 latents get a threshold above every
value (never fire); the script prints how many latents fire per token and the smallest |pre - threshold|, which must
dwarf float32 rounding (0.0101 at least here, against values of order 1).

reference.npz in each SAE folder: tokens [2, 12] (gemma3's reference tokens), sae_in [2, 12, d_in] (the activation
at hf_hook_name in the clean run), feature_acts [2, 12, d_sae] (f of sae_in), sae_out [2, 12, d_out] (what replaces
the activation at hf_hook_name_out, or at hf_hook_name for an SAE), logits [2, 12, vocab] (the spliced model) and
logits_error_term (the splice with SAELens's use_error_term: out + (orig - out), i.e. the clean model up to rounding),
and logits_conditional: the same splice in tests/data/hf_models/gemma3-conditional (Gemma3ForConditionalGeneration,
whose language_model holds gemma3's weights; in this tree the text model is `language_model`, a Gemma3ForCausalLM, so
the hooks go on `language_model.` + SAELens's module name), run on gemma3's tokens with no image.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_models_fixture import prepare_site, torch2_stand_ins  # noqa: E402

D_SAE, DEAD = 40, 5

# folder -> (write config.json, affine_connection)
SAES = {
    "resid_post_all/layer_1_width_16k_l0_small": (True, False),
    "attn_out_all/layer_0_width_16k_l0_small": (True, False),
    "mlp_out_all/layer_2_width_16k_l0_small": (False, False),
    "transcoder_all/layer_1_width_16k_l0_big_affine": (True, True),
    "transcoder_all/layer_3_width_16k_l0_small": (False, False),
}


def hf_hooks(folder):
    """SAELens 6.37.6's _infer_gemma_3_raw_cfg_dict: (hf_hook_point_in, hf_hook_point_out or None) of a folder name."""
    import re
    layer = int(re.search(r"layer_(\d+)", folder).group(1))
    if "transcoder" in folder or "clt" in folder:
        return (f"model.layers.{layer}.pre_feedforward_layernorm.output",
                f"model.layers.{layer}.post_feedforward_layernorm.output")
    if "resid_post" in folder:
        return f"model.layers.{layer}.output", None
    if "attn_out" in folder:
        return f"model.layers.{layer}.self_attn.o_proj.input", None
    if "mlp_out" in folder:
        return f"model.layers.{layer}.post_feedforward_layernorm.output", None
    raise ValueError(folder)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--site", required=True)
    ap.add_argument("--model", required=True, help="tests/data/hf_models/gemma3")
    ap.add_argument("--conditional", help="tests/data/hf_models/gemma3-conditional: also its logits with each SAE spliced")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    prepare_site(a.site)
    sys.path.insert(0, a.site)
    import numpy as np
    import torch
    torch2_stand_ins(torch)
    import transformers as tf
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    print(f"transformers {tf.__version__} from {os.path.dirname(tf.__file__)}, torch {torch.__version__}")
    tokens = torch.from_numpy(np.load(os.path.join(a.model, "reference.npz"))["tokens"])

    def load(folder):
        """The fixture model of folder. from_pretrained itself needs accelerate (init_empty_weights) in this tree: the
        same steps by hand, with transformers' own config reader, model class and checkpoint reader."""
        config = tf.AutoConfig.from_pretrained(folder)
        m = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager", torch_dtype=torch.float32).eval()
        state = tf.modeling_utils.load_state_dict(os.path.join(folder, "model.safetensors"))
        missing, unexpected = m.load_state_dict(state, strict=False)
        m.tie_weights()
        assert not unexpected and all(k.endswith("lm_head.weight") for k in missing) \
            and m.get_output_embeddings().weight is m.get_input_embeddings().weight, (missing, unexpected)
        ref = np.load(os.path.join(folder, "reference.npz"))
        assert (ref["tokens"] == tokens.numpy()).all()
        drift = np.abs(run(m).numpy() - ref["logits"]).max() / np.abs(ref["logits"]).max()
        print(f"{folder}: {type(m).__name__}, {len(state)} tensors loaded, tied lm_head; clean logits vs its "
              f"reference.npz: {drift:.3g} of scale")
        assert drift < 1e-6, "the loaded model is not the fixture's"
        return m

    def run(m):
        with torch.no_grad():
            return m(tokens, use_cache=False, return_dict=True).logits

    model = load(a.model)
    clean = run(model)
    # Gemma3ForConditionalGeneration (this tree: the text model is its language_model, a Gemma3ForCausalLM, whose
    # module names are the ones SAELens records).
    conditional = load(a.conditional) if a.conditional else None

    def hook(point, fn, m=model, prefix=""):
        """Registers fn(activation) -> replacement or None on the HF module point 'path.output' / 'path.input' of m."""
        path, where = point.rsplit(".", 1)
        module = m.get_submodule(prefix + path)
        if where == "output":
            def forward_hook(_m, _args, out):
                x = out[0] if isinstance(out, tuple) else out
                y = fn(x)
                if y is None:
                    return None
                return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y
            return module.register_forward_hook(forward_hook)
        assert where == "input", point
        def pre_hook(_m, args):
            y = fn(args[0])
            return None if y is None else (y,) + tuple(args[1:])
        return module.register_forward_pre_hook(pre_hook)

    def capture(point):
        """The clean activation at point."""
        seen = []
        h = hook(point, lambda x: seen.append(x.detach().clone()))
        run(model)
        h.remove()
        return seen[0]

    g = torch.Generator().manual_seed(2026)
    for index, (folder, (with_config, affine)) in enumerate(SAES.items()):
        hf_in, hf_out = hf_hooks(folder)
        transcoder = hf_out is not None
        x = capture(hf_in)
        target = capture(hf_out) if transcoder else x
        d_in, d_out = x.shape[-1], target.shape[-1]
        rms_in, rms_out = x.pow(2).mean().sqrt(), target.pow(2).mean().sqrt()
        w_enc = torch.randn(d_in, D_SAE, generator=g) / (d_in ** 0.5 * rms_in)
        b_enc = torch.randn(D_SAE, generator=g) * 0.2 + 0.5
        pre = (x.reshape(-1, d_in) @ w_enc + b_enc)                     # [24, d_sae]
        threshold = torch.empty(D_SAE)
        dead = torch.randperm(D_SAE, generator=g)[:DEAD].tolist()
        for j in range(D_SAE):
            values = pre[:, j].sort().values
            if j in dead:
                threshold[j] = max(values[-1].item(), 0.0) + 0.25
                continue
            positive = values[values > 0.02]
            candidates = [positive[0].item() / 2] if len(positive) else [0.05]
            candidates += [(lo + hi) / 2 for lo, hi in zip(positive[:-1].tolist(), positive[1:].tolist()) if hi - lo >= 0.02]
            threshold[j] = candidates[torch.randint(len(candidates), (1,), generator=g).item()]
        w_dec = torch.randn(D_SAE, d_out, generator=g) * rms_out * 0.6
        b_dec = torch.randn(d_out, generator=g) * rms_out * 0.1
        params = {"w_enc": w_enc.contiguous(), "w_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec, "threshold": threshold}
        if affine:
            params["affine_skip_connection"] = torch.randn(d_out, d_in, generator=g) * (0.5 * rms_out / (d_in ** 0.5 * rms_in))

        def encode(v):
            p = v @ params["w_enc"] + params["b_enc"]
            return torch.relu(p) * (p > params["threshold"])

        def decode(f, v):
            y = f @ params["w_dec"] + params["b_dec"]
            return y + v @ params["affine_skip_connection"].T if affine else y

        feature_acts = encode(x)
        sae_out = decode(feature_acts, x)
        margin = (pre - threshold).abs().min().item()
        fired = (feature_acts.reshape(-1, D_SAE) > 0).sum(-1)

        # The splice: the SAE's output replaces the activation at hf_hook_name_out (a transcoder, which reads
        # hf_hook_name as it is) or at hf_hook_name (an SAE); with the error term, out + (orig - out).
        def splice(error_term, m=model, prefix=""):
            seen = {}
            handles = []
            if transcoder:
                handles.append(hook(hf_in, lambda v: seen.__setitem__("x", v) or None, m, prefix))
            def replace(orig):
                v = seen["x"] if transcoder else orig
                out = decode(encode(v), v).to(orig.dtype)
                return out + (orig - out) if error_term else out
            handles.append(hook(hf_out or hf_in, replace, m, prefix))
            try:
                return run(m)
            finally:
                for h in handles:
                    h.remove()

        logits = splice(False)
        logits_error = splice(True)
        arrays = {"tokens": tokens.numpy(), "sae_in": x.numpy(), "feature_acts": feature_acts.numpy(),
                  "sae_out": sae_out.numpy(), "logits": logits.numpy(), "logits_error_term": logits_error.numpy()}
        conditional_note = ""
        if conditional is not None:
            arrays["logits_conditional"] = splice(False, conditional, "language_model.").numpy()
            conditional_note = f", Gemma3ForConditionalGeneration's vs Gemma3ForCausalLM's {np.abs(arrays['logits_conditional'] - arrays['logits']).max():.3g}"
        d = os.path.join(a.out, *folder.split("/"))
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        save_file(params, os.path.join(d, "params.safetensors"))
        if with_config:
            cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt", "hf_hook_point_in": hf_in}
            if transcoder:
                cfg["hf_hook_point_out"] = hf_out
                cfg["affine_connection"] = affine
            cfg.update({"width": D_SAE, "l0": folder.rsplit("_l0_", 1)[1].split("_")[0]})
            with open(os.path.join(d, "config.json"), "w") as fh:
                json.dump(cfg, fh, indent=2)
        np.savez(os.path.join(d, "reference.npz"), **arrays)
        moved = (logits - clean).abs().max().item() / clean.abs().max().item()
        err = (logits_error - clean).abs().max().item() / clean.abs().max().item()
        print(f"{folder}: {hf_in}{' -> ' + hf_out if transcoder else ''}, d_in {d_in}, d_out {d_out}, latents firing per "
              f"token {fired.min().item()}..{fired.max().item()} of {D_SAE} ({DEAD} never), never firing over all tokens "
              f"{(feature_acts.reshape(-1, D_SAE).amax(0) == 0).sum().item()}, smallest |pre - threshold| {margin:.3g}; "
              f"spliced logits move {moved:.3g} of scale, with the error term {err:.3g}{conditional_note}; files {sorted(os.listdir(d))}")


if __name__ == "__main__":
    main()
