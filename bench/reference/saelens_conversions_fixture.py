"""Writes tests/data/saelens_conversions/: tiny SAEs with random weights in the on-disk formats of the SAELens
releases whose conversion_func SaeSharp restates (sae_lens/loading/pretrained_sae_loaders.py at SAELens 91ca16cc)
and in SAELens's own transcoder layouts, each with reference.safetensors: x, and feature_acts and sae_out computed
here from the files by SAELens's formulas (written out below, not imported: SAELens is not vendored).

  /usr/bin/python3 bench/reference/saelens_conversions_fixture.py --out tests/data/saelens_conversions

Debian's PyTorch 1.13 (torch.save's zip format) and PyYAML; the .safetensors bytes come from a pure-Python writer of
the format. Formats (file names and keys as in the real repos):
- deepseek_r1/DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt: encoder.weight [d_sae, d_in], encoder.bias, decoder.weight
  [d_in, d_sae], decoder.bias, bfloat16 (plus a stray entry SAELens ignores). Standard ReLU SAE, no b_dec subtraction.
- connor_rob_hook_z/<name>.pt + <name>_cfg.json: W_enc [d_in, d_sae], W_dec, b_enc, b_dec; cfg act_size 32 (GPT-2
  tiny: 4 heads x d_head 8), dict_size, act_name. Standard, x - b_dec before the encoder.
- llama_scope_r1_distill/800M-Slimpajama-0-OpenR1-Math-220k/L0R/{config.json, sae_weights.safetensors}: PyTorch
  Linear layout plus log_jumprelu_threshold; JumpReLU; the release table's norm_scaling_factor for l0r_800m_slimpajama
  (53.52995401997436) folded in as SAE.from_pretrained does (W_enc*s, W_dec/s, b_dec/s).
- mwhanna/{layer_1.safetensors, wandb-config.yaml, config.yaml}: W_enc stored [d_sae, d_in]; d_model 32 (Qwen3 tiny).
- mntss/{config.yaml, W_enc_2.safetensors, W_dec_2.safetensors}: W_dec_2 [d_sae, 3, d_out] summed over dim 1.
- saelens_transcoder, saelens_skip_transcoder, saelens_jumprelu_transcoder, saelens_jumprelu_skip_transcoder: cfg.json +
  sae_weights.safetensors as SAELens 6's save_model writes them (TranscoderConfig.to_dict), d_in 6, d_out 5. Transcoder:
  f = ReLU(x W_enc + b_enc), out = f W_dec + b_dec; skip adds x W_skip^T; jumprelu: f = ReLU(pre) * (pre > threshold);
  jumprelu_skip_transcoder (SAELens 6.37.6's JumpReLUSkipTranscoder) both.
From SAELens 6.37.6 (jbloomAus/SAELens, now decoderesearch/SAELens, at 69c4c62b), appended after the above so that their
random draws are unchanged:
- gemma_scope_2/ (conversion_func gemma_3, gemma_3_sae_huggingface_loader): resid_post/layer_12_width_16k_l0_small
  (params.safetensors + config.json), transcoder_all/layer_5_width_16k_l0_big_affine (affine_skip_connection,
  config.json affine_connection true: jumprelu_skip_transcoder), transcoder/layer_13_width_16k_l0_big (no config.json:
  inferred; not affine; an extra tensor SAELens ignores), clt/layer_3_width_16k_l0_medium.safetensors (w_dec
  [d_sae, 3, d_out] summed over dim 1); each folder's reference.safetensors (clt/ holds the CLT's). JumpReLU without
  b_dec subtraction; the affine transcoder's output adds x affine_skip_connection^T.
- goodfire/Llama-3.1-8B-Instruct-SAE-l19.pth: encoder_linear.weight [d_sae, d_in], encoder_linear.bias,
  decoder_linear.weight [d_in, d_sae], decoder_linear.bias (float32); standard, no b_dec subtraction.
"""
import argparse, json, os, struct

import numpy as np
import torch as t
import yaml

DT = {t.float32: "F32", t.bfloat16: "BF16"}


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        v = v.contiguous()
        b = (v.view(t.int16).numpy().tobytes() if v.dtype == t.bfloat16 else v.numpy().tobytes())
        header[k] = {"dtype": DT[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def reference(folder, x, f, y):
    save_safetensors(os.path.join(folder, "reference.safetensors"),
                     {"x": x.contiguous(), "feature_acts": f.contiguous(), "sae_out": y.contiguous()})


def relu_sae(x, W_enc, b_enc, W_dec, b_dec, subtract_b_dec):
    f = t.relu((x - b_dec if subtract_b_dec else x) @ W_enc + b_enc)
    return f, f @ W_dec + b_dec


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    out = p.parse_args().out
    t.manual_seed(0)

    def mk(*parts):
        d = os.path.join(out, *parts)
        os.makedirs(d, exist_ok=True)
        return d

    # deepseek_r1
    d = mk("deepseek_r1")
    d_in, d_sae = 6, 16
    sd = {"encoder.weight": (t.randn(d_sae, d_in) * 0.5).bfloat16(), "encoder.bias": (t.randn(d_sae) * 0.2).bfloat16(),
          "decoder.weight": (t.randn(d_in, d_sae) * 0.5).bfloat16(), "decoder.bias": t.randn(d_in).bfloat16(),
          "num_batches_tracked": t.tensor(7)}
    t.save(sd, os.path.join(d, "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"))
    x = t.randn(5, d_in) * 2
    f, y = relu_sae(x, sd["encoder.weight"].float().T, sd["encoder.bias"].float(), sd["decoder.weight"].float().T,
                    sd["decoder.bias"].float(), subtract_b_dec=False)
    reference(d, x, f, y)

    # connor_rob_hook_z
    d = mk("connor_rob_hook_z")
    name = "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9"
    d_in, d_sae = 32, 24
    sd = {"W_enc": t.randn(d_in, d_sae) * 0.3, "W_dec": t.randn(d_sae, d_in) * 0.3, "b_enc": t.randn(d_sae) * 0.1,
          "b_dec": t.randn(d_in) * 0.5}
    t.save(sd, os.path.join(d, name + ".pt"))
    cfg = {"seed": 49, "batch_size": 4096, "buffer_mult": 384, "lr": 0.0012, "num_tokens": 2000000000,
           "l1_coeff": 1.8, "beta1": 0.9, "beta2": 0.99, "dict_mult": 32, "seq_len": 128, "enc_dtype": "fp32",
           "remove_rare_dir": False, "model_name": "gpt2-small", "site": "z", "layer": 0, "device": "cuda",
           "reinit": "reinit", "head": "cat", "concat_heads": True, "resample_scheme": "anthropic",
           "anthropic_neuron_resample_scale": 0.2, "dead_direction_cutoff": 1e-06, "re_init_every": 25000,
           "anthropic_resample_last": 12500, "resample_factor": 0.01, "num_resamples": 4, "wandb_project_name": "gpt2-L0-20240117",
           "wandb_entity": "ckkissane", "save_state_dict_every": 50000, "b_dec_init": "zeros", "sched_type": "cosine_warmup",
           "sched_epochs": 1000, "sched_lr_factor": 0.1, "sched_warmup_epochs": 1000, "sched_finish": True,
           "anthropic_resample_batches": 100, "eval_every": 1000, "model_batch_size": 512, "buffer_size": 1572864,
           "buffer_batches": 12288, "act_name": "blocks.0.attn.hook_z", "act_size": d_in, "dict_size": d_sae, "name": "gpt2-small_0_24576_z"}
    with open(os.path.join(d, name + "_cfg.json"), "w") as fh:
        json.dump(cfg, fh)
    x = t.randn(5, d_in)
    f, y = relu_sae(x, sd["W_enc"], sd["b_enc"], sd["W_dec"], sd["b_dec"], subtract_b_dec=True)
    reference(d, x, f, y)

    # llama_scope_r1_distill
    d = mk("llama_scope_r1_distill", "800M-Slimpajama-0-OpenR1-Math-220k", "L0R")
    d_in, expansion = 6, 4
    d_sae = d_in * expansion
    s = 53.52995401997436
    enc_w, enc_b = t.randn(d_sae, d_in) * 0.3, t.randn(d_sae) * 0.1
    dec_w, dec_b = t.randn(d_in, d_sae) * 0.3, t.randn(d_in) * 5
    log_th = t.log(t.rand(d_sae) * 0.4 + 0.05)
    save_safetensors(os.path.join(d, "sae_weights.safetensors"),
                     {"encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w, "decoder.bias": dec_b,
                      "log_jumprelu_threshold": log_th})
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump({"sae_type": "sae", "d_model": d_in, "expansion_factor": expansion, "act_fn": "jumprelu",
                   "jump_relu_threshold": 0.0, "norm_activation": "dataset-wise", "dataset_average_activation_norm": None,
                   "hook_point_in": "blocks.0.hook_resid_post", "hook_point_out": "blocks.0.hook_resid_post",
                   "use_decoder_bias": True, "apply_decoder_bias_to_pre_encoder": False, "sparsity_include_decoder_norm": True},
                  fh, indent=2)
    W_enc, W_dec, b_dec = enc_w.T * s, dec_w.T / s, dec_b / s
    x = t.randn(5, d_in) * 0.02
    pre = x @ W_enc + enc_b
    f = t.relu(pre) * (pre > log_th.exp())
    reference(d, x, f, f @ W_dec + b_dec)

    # mwhanna_transcoder
    d = mk("mwhanna")
    d_in, d_sae = 32, 40
    W_enc, b_enc = t.randn(d_in, d_sae) * 0.3, t.randn(d_sae) * 0.1
    W_dec, b_dec = t.randn(d_sae, d_in) * 0.3, t.randn(d_in) * 0.5
    save_safetensors(os.path.join(d, "layer_1.safetensors"),
                     {"W_enc": W_enc.T.contiguous(), "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec})
    with open(os.path.join(d, "wandb-config.yaml"), "w") as fh:
        yaml.safe_dump({"_wandb": {"value": {"cli_version": "0.19.8", "python_version": "3.12.9"}},
                        "batch_size": {"value": 4096}, "d_feature": {"value": d_sae}, "d_model": {"value": d_in},
                        "lr": {"value": 0.0002}, "model_name": {"value": "Qwen/Qwen3-0.6B"}}, fh)
    with open(os.path.join(d, "config.yaml"), "w") as fh:
        yaml.safe_dump({"model_kind": "transcoder_set", "feature_input_hook": "mlp.hook_in",
                        "feature_output_hook": "mlp.hook_out", "model_name": "Qwen/Qwen3-0.6B",
                        "transcoders": [f"hf://mwhanna/qwen3-0.6b-transcoders-lowl0/layer_{i}.safetensors" for i in range(2)]}, fh)
    x = t.randn(5, d_in)
    f, y = relu_sae(x, W_enc, b_enc, W_dec, b_dec, subtract_b_dec=False)
    reference(d, x, f, y)

    # mntss_clt_layer_transcoder
    d = mk("mntss")
    d_in, d_sae, later = 6, 12, 3
    W_enc, b_enc, b_dec = t.randn(d_in, d_sae) * 0.4, t.randn(d_sae) * 0.1, t.randn(d_in)
    W_dec3 = t.randn(d_sae, later, d_in) * 0.3
    save_safetensors(os.path.join(d, "W_enc_2.safetensors"), {"W_enc_2": W_enc.T.contiguous(), "b_enc_2": b_enc, "b_dec_2": b_dec})
    save_safetensors(os.path.join(d, "W_dec_2.safetensors"), {"W_dec_2": W_dec3})
    with open(os.path.join(d, "config.yaml"), "w") as fh:
        yaml.safe_dump({"model_kind": "cross_layer_transcoder", "model_name": "google/gemma-2-2b",
                        "feature_input_hook": "hook_resid_mid", "feature_output_hook": "hook_mlp_out",
                        "scan": "gemma-2-2b-clt-hp"}, fh)
    x = t.randn(5, d_in)
    f, y = relu_sae(x, W_enc, b_enc, W_dec3.sum(dim=1), b_dec, subtract_b_dec=False)
    reference(d, x, f, y)

    # SAELens's transcoder architectures as save_model writes them
    d_in, d_out, d_sae = 6, 5, 14
    for arch in ["transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"]:
        d = mk("saelens_" + arch)
        w = {"W_enc": t.randn(d_in, d_sae) * 0.5, "b_enc": t.randn(d_sae) * 0.1,
             "W_dec": t.randn(d_sae, d_out) * 0.5, "b_dec": t.randn(d_out)}
        if arch in ("skip_transcoder", "jumprelu_skip_transcoder"):
            w["W_skip"] = t.randn(d_out, d_in) * 0.2
        if arch in ("jumprelu_transcoder", "jumprelu_skip_transcoder"):
            w["threshold"] = t.rand(d_sae) * 0.3 + 0.05
        version = "6.37.6" if arch == "jumprelu_skip_transcoder" else "6.18.0"
        save_safetensors(os.path.join(d, "sae_weights.safetensors"), w)
        cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": False,
               "normalize_activations": "none", "reshape_activations": "none",
               "metadata": {"sae_lens_version": version, "sae_lens_training_version": version, "model_name": "gpt2",
                            "hook_name": "blocks.0.ln2.hook_normalized", "hook_name_out": "blocks.0.hook_mlp_out",
                            "hook_head_index": None, "hook_head_index_out": None, "context_size": 128,
                            "prepend_bos": True, "dataset_path": "monology/pile-uncopyrighted"},
               "architecture": arch, "d_out": d_out}
        with open(os.path.join(d, "cfg.json"), "w") as fh:
            json.dump(cfg, fh, indent=2)
        x = t.randn(5, d_in)
        pre = x @ w["W_enc"] + w["b_enc"]
        f = t.relu(pre) * (pre > w["threshold"]) if "threshold" in w else t.relu(pre)
        y = f @ w["W_dec"] + w["b_dec"]
        if "W_skip" in w:
            y = y + x @ w["W_skip"].T
        reference(d, x, f, y)

    gemma_scope_2(mk)
    goodfire(mk)


def jumprelu(x, w_enc, b_enc, threshold):
    """SAELens's JumpReLU encode without b_dec subtraction (apply_b_dec_to_input false): ReLU(pre) * (pre > threshold)."""
    pre = x @ w_enc + b_enc
    return t.relu(pre) * (pre > threshold)


def gemma_scope_2(mk):
    """Gemma Scope 2 (SAELens 6.37.6's gemma_3 conversion): params.safetensors with w_enc [d_in, d_sae], w_dec
    [d_sae, d_out], b_enc, b_dec, threshold (+ affine_skip_connection [d_out, d_in]), config.json in some folders."""
    d_in, d_sae = 6, 16

    def params(folder, d_out=None, affine=False, clt_layers=None, extra=None):
        d_out = d_out or d_in
        p = {"w_enc": t.randn(d_in, d_sae) * 0.5, "b_enc": t.randn(d_sae) * 0.1,
             "w_dec": (t.randn(d_sae, clt_layers, d_out) if clt_layers else t.randn(d_sae, d_out)) * 0.4,
             "b_dec": t.randn(d_out), "threshold": t.rand(d_sae) * 0.3 + 0.05}
        if affine:
            p["affine_skip_connection"] = t.randn(d_out, d_in) * 0.3
        p.update(extra or {})
        return p

    def ref(folder, p, skip):
        x = t.randn(5, d_in)
        f = jumprelu(x, p["w_enc"], p["b_enc"], p["threshold"])
        w_dec = p["w_dec"].sum(dim=1) if p["w_dec"].dim() == 3 else p["w_dec"]   # the CLT's decoders summed
        y = f @ w_dec + p["b_dec"]
        if skip:
            y = y + x @ p["affine_skip_connection"].T                               # SkipTranscoder.forward, raw x
        reference(folder, x, f, y)

    # resid_post with its config.json (model_name spelled as SAELens's normalisation expects: gemma-v3-..., no google/)
    d = mk("gemma_scope_2", "resid_post", "layer_12_width_16k_l0_small")
    p = params(d)
    save_safetensors(os.path.join(d, "params.safetensors"), p)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump({"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
                   "hf_hook_point_in": "model.layers.12.output", "width": d_sae, "l0": "small"}, fh, indent=2)
    ref(d, p, skip=False)

    # an affine transcoder: config.json with affine_connection, affine_skip_connection in the weights
    d = mk("gemma_scope_2", "transcoder_all", "layer_5_width_16k_l0_big_affine")
    p = params(d, affine=True)
    save_safetensors(os.path.join(d, "params.safetensors"), p)
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump({"architecture": "jump_relu", "model_name": "google/gemma-3-1b-pt",
                   "hf_hook_point_in": "model.layers.5.pre_feedforward_layernorm.output",
                   "hf_hook_point_out": "model.layers.5.post_feedforward_layernorm.output",
                   "affine_connection": True}, fh, indent=2)
    ref(d, p, skip=True)

    # a transcoder without config.json: SAELens infers it from the repo id and folder name (not affine)
    d = mk("gemma_scope_2", "transcoder", "layer_13_width_16k_l0_big")
    p = params(d, extra={"unused_extra": t.zeros(2)})
    save_safetensors(os.path.join(d, "params.safetensors"), p)
    ref(d, p, skip=False)

    # a cross-layer transcoder layer: clt/<name>.safetensors, w_dec [d_sae, layers written, d_out]
    d = mk("gemma_scope_2", "clt")
    p = params(d, clt_layers=3)
    save_safetensors(os.path.join(d, "layer_3_width_16k_l0_medium.safetensors"), p)
    ref(d, p, skip=False)


def goodfire(mk):
    """SAELens 6.37.6's goodfire conversion: a torch.save'd state dict, encoder_linear / decoder_linear in PyTorch
    Linear layout; standard ReLU SAE without b_dec subtraction."""
    d = mk("goodfire")
    d_in, d_sae = 6, 16
    sd = {"encoder_linear.weight": t.randn(d_sae, d_in) * 0.5, "encoder_linear.bias": t.randn(d_sae) * 0.2,
          "decoder_linear.weight": t.randn(d_in, d_sae) * 0.5, "decoder_linear.bias": t.randn(d_in)}
    t.save(sd, os.path.join(d, "Llama-3.1-8B-Instruct-SAE-l19.pth"))
    x = t.randn(5, d_in) * 2
    f, y = relu_sae(x, sd["encoder_linear.weight"].T, sd["encoder_linear.bias"], sd["decoder_linear.weight"].T,
                    sd["decoder_linear.bias"], subtract_b_dec=False)
    reference(d, x, f, y)


if __name__ == "__main__":
    main()
