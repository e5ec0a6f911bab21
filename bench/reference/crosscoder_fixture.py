"""Writes tests/data/crosscoder/: crosscoder checkpoints in the science-of-finetuning dictionary_learning fork's formats
and reference numbers for CrossCoderTests / CrossCoderTrainerTests.

  /usr/bin/python3 bench/reference/crosscoder_fixture.py --out tests/data/crosscoder

The fork (science-of-finetuning/dictionary_learning: dictionary.py CrossCoder, BatchTopKCrossCoder, CodeNormalization;
trainers/crosscoder.py CrossCoderTrainer, BatchTopKCrossCoderTrainer) is not vendored and needs huggingface_hub and
einops; its formulas are transcribed below, one function per method, with the method named. Written with Debian's
torch 1.13 (/usr/bin/python3), one thread.

Problem: L 3 layers, d 4, dict_size 6, batch 5, seed 0; weights random (decoder not the encoder's transpose, so that a
transposition slip shows). Files:
  cc_crosscoder/ae.pt         CrossCoder state dict (torch.save), code_normalization_id CROSSCODER (1)
  cc_batchtopk/ae.pt          BatchTopKCrossCoder state dict: k 2 (int32), threshold 0.3, with the normaliser buffers
                              (target_rms 1, activation_mean/std [L, d] finite, activation_global_scale [L])
  cc_hub/model.safetensors    the CrossCoder's state dict as save_pretrained writes it (safetensors, written by hand
  cc_hub/config.json          here: no safetensors package), and the mixin's config.json (init arguments + dict_class)
  reference.json              x, and per code normalisation: c, f, get_activations, x_hat, the L1 loss terms (l1_penalty
                              0.1); BatchTopK: threshold encode, batch-top-k encode; normaliser in/out;
                              L1 trainer: 3 steps (lr 1e-2, warmup 2) weights after each; BatchTopK trainer: 3 steps
                              (lr 1e-2, warmup 1, threshold_start_step 0, dead_feature_threshold 5 tokens, auxk 1/32).
"""
import argparse, json, math, os, struct

import torch as th
from torch.nn.functional import relu

L, D, N, B = 3, 4, 6, 5
CODE_NORMS = {"CROSSCODER": 1, "SAE": 2, "MIXED": 3, "NONE": 4, "DECOUPLED": 5}


def R(v):
    return [R(e) for e in v] if isinstance(v, list) else float(f"{v:.9g}")


def Lst(t):
    return R(t.detach().double().tolist())


# --- dictionary.py ---------------------------------------------------------------------------------------------------
def encoder_forward(x, w, b):  # CrossCoderEncoder.forward
    f = th.einsum("bld, ldf -> blf", x, w)
    return relu(f.sum(dim=1) + b)


def decoder_forward(f, w, b, add_bias=True):  # CrossCoderDecoder.forward (f 2-D)
    x = th.einsum("bf, lfd -> bld", f, w)
    return x + b if add_bias else x


def get_code_normalization(kind, dw, a_sae=1.0, a_cc=0.1):  # CrossCoder.get_code_normalization
    if kind == "SAE":
        return dw.norm(dim=(0, 2)).unsqueeze(0)
    if kind == "MIXED":
        return dw.norm(dim=(0, 2)).unsqueeze(0) * a_sae + dw.norm(dim=2).sum(dim=0, keepdim=True) * a_cc
    if kind == "NONE":
        return th.tensor(1.0)
    if kind == "CROSSCODER":
        return dw.norm(dim=2).sum(dim=0, keepdim=True)
    return dw.norm(dim=2)  # DECOUPLED


def latent_norm(kind, dw):  # get_activations / forward(output_features=True)
    w = get_code_normalization(kind, dw)
    return w.sum(dim=0, keepdim=True) if kind == "DECOUPLED" else w


def normalize(x, mean, scale):  # NormalizableMixin.normalize_activations (keep_relative_variance)
    return (x - mean) * scale.unsqueeze(0).unsqueeze(-1)


def denormalize(x, mean, scale):
    return x / (scale.unsqueeze(0).unsqueeze(-1) + 1e-8) + mean


def batchtopk_encode(x, p, k, use_threshold, threshold):  # BatchTopKCrossCoder.encode (not decoupled)
    post = encoder_forward(x, p["encoder.weight"], p["encoder.bias"])
    c = get_code_normalization("CROSSCODER", p["decoder.weight"])
    scaled = post * c
    if use_threshold:
        f = post * (scaled > threshold)
    else:
        flat = scaled.flatten()
        top = flat.topk(k * x.size(0), sorted=False, dim=-1)
        f = th.zeros_like(flat).scatter_(-1, top.indices, post.flatten()[top.indices]).reshape(post.shape)
    return f, f * c, f.sum(0) > 0, post, scaled


# --- trainers/crosscoder.py ------------------------------------------------------------------------------------------
def l1_loss(x, p, kind, l1_penalty):  # CrossCoderTrainer.loss (use_mse_loss False)
    f = encoder_forward(x, p["encoder.weight"], p["encoder.bias"])
    x_hat = decoder_forward(f, p["decoder.weight"], p["decoder.bias"])
    fs = f * latent_norm(kind, p["decoder.weight"])
    l2 = th.linalg.norm(x - x_hat, dim=-1).mean()
    mse = (x - x_hat).pow(2).sum(dim=-1).mean()
    l1 = fs.norm(p=1, dim=-1).mean()
    return l2 + l1_penalty * l1, l2, mse, l1, f, fs, x_hat


def l1_loss_el(x, p, layers, l1_penalty):  # CrossCoderTrainer.loss of a CrossCoder with encoder_layers (CROSSCODER)
    f = relu(th.einsum("bld, ldf -> blf", x[:, layers], p["encoder.weight"]).sum(dim=1) + p["encoder.bias"])
    x_hat = decoder_forward(f, p["decoder.weight"], p["decoder.bias"])
    fs = f * get_code_normalization("CROSSCODER", p["decoder.weight"])
    return th.linalg.norm(x - x_hat, dim=-1).mean() + l1_penalty * fs.norm(p=1, dim=-1).mean()


def geometric_median(points, max_iter=100, tol=1e-5):  # BatchTopKCrossCoderTrainer.geometric_median
    guess = points.mean(dim=0)
    for _ in range(max_iter):
        prev = guess
        weights = 1 / th.norm(points - guess, dim=-1)
        weights /= weights.sum(dim=0, keepdim=True)
        guess = (weights.unsqueeze(-1) * points).sum(dim=0)
        if th.all(th.norm(guess - prev, dim=-1) < tol):
            break
    return guess


def batchtopk_encode_decoupled(x, p, k, use_threshold, threshold):  # BatchTopKCrossCoder.encode_decoupled
    post = encoder_forward(x, p["encoder.weight"], p["encoder.bias"])
    c = get_code_normalization("DECOUPLED", p["decoder.weight"])  # [L, N]
    scaled = post.unsqueeze(1) * c.unsqueeze(0)  # [B, L, N]
    b, l, n = scaled.shape
    if use_threshold:
        mask = scaled > threshold.unsqueeze(0).unsqueeze(2)
    else:
        flat = scaled.transpose(0, 1).flatten(start_dim=1)  # [L, B*N]
        top = flat.topk(k * b, sorted=False, dim=-1)
        mask = th.zeros((l, b * n), dtype=th.bool)
        mask[th.arange(l).unsqueeze(1), top.indices] = True
        mask = mask.reshape(l, b, n).transpose(0, 1)
    f = post.unsqueeze(1) * mask
    return f, scaled * mask, f.sum(0).sum(0) > 0, post, scaled.sum(dim=1)


def auxk_loss(res, dead, post, post_scaled, ps):  # BatchTopKCrossCoderTrainer.get_auxiliary_loss (res: the detached residual [B, L*d])
    if dead.sum() == 0:
        return th.tensor(0.0)
    k_aux = min(D // 2, int(dead.sum()))
    aux_s = th.where(dead[None], post_scaled, -th.inf).detach()
    _, idx = aux_s.topk(k_aux, sorted=False)
    rows = th.arange(B).view(-1, 1).expand(-1, idx.size(1))
    acts = th.zeros_like(post).scatter_(-1, idx, post[rows, idx])
    xr = decoder_forward(acts, ps["decoder.weight"], ps["decoder.bias"], add_bias=False).reshape(B, -1)
    l2a = (res - xr).pow(2).sum(dim=-1).mean()
    denom = (res - res.mean(dim=0)[None, :].broadcast_to(res.shape)).pow(2).sum(dim=-1).mean()
    return (l2a / denom).nan_to_num(0.0)


def batchtopk_train(p, batches, ks, mean=None, std=None, decoupled=False, threshold_start_step=0, dead=5):
    """BatchTopKCrossCoderTrainer.update / loss: lr 1e-2, warm-up 1, k of step s = ks[s] (the trainer's annealing),
    inputs through the normaliser first when mean/std are given."""
    ps = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    threshold = th.tensor([-1.0] * L) if decoupled else th.tensor(-1.0)
    since = th.zeros(N, dtype=th.long)
    opt = th.optim.Adam(list(ps.values()), lr=1e-2, betas=(0.9, 0.999))
    sched = th.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda s: s / 1 if s < 1 else 1.0)
    scale = None if mean is None else 1.0 / th.sqrt((std ** 2).sum(dim=-1) + 1e-8)
    steps = []
    for s, xb in enumerate(batches):
        if scale is not None:
            xb = normalize(xb, mean, scale)
        if s == 0:
            ps["decoder.bias"].data = geometric_median(xb)
        k = ks[s]
        if decoupled:
            f, f_scaled, active, post, post_scaled = batchtopk_encode_decoupled(xb, ps, k, False, None)
        else:
            f, f_scaled, active, post, post_scaled = batchtopk_encode(xb, ps, k, False, None)
        if s > threshold_start_step:
            if decoupled:  # update_decoupled_threshold
                m = f_scaled.clone().transpose(0, 1).reshape(L, -1)
                m[m <= 0] = th.inf
                m = m.min(dim=-1).values
                m[m == th.inf] = 0.0
                m = m.detach()
                threshold = th.where(threshold < 0, m, 0.999 * threshold + 0.001 * m)
            else:
                act = f_scaled[f_scaled > 0]
                m = 0.0 if act.size(0) == 0 else act.min().detach()
                threshold = th.tensor(m) if threshold < 0 else 0.999 * threshold + 0.001 * m
        if f.dim() == 3:
            x_hat = th.einsum("blf, lfd -> bld", f, ps["decoder.weight"]) + ps["decoder.bias"]
        else:
            x_hat = decoder_forward(f, ps["decoder.weight"], ps["decoder.bias"])
        e = xb - x_hat
        did_fire = th.zeros(N, dtype=th.bool)
        did_fire[active] = True
        since += xb.size(0)
        since[did_fire] = 0
        l2 = th.linalg.norm(e, dim=-1).mean()
        res = e.detach().reshape(B, -1)
        deads = since >= dead
        auxk = auxk_loss(res, deads, post, post_scaled, ps)
        loss = l2 + (1 / 32) * auxk
        lr = opt.param_groups[0]["lr"]
        loss.backward()
        th.nn.utils.clip_grad_norm_(list(ps.values()), 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
        l0 = float((f != 0).float().sum(dim=-1).mean()) if f.dim() == 2 else float((f != 0).float().sum(dim=-1).mean())
        steps.append({"loss": float(loss), "auxk_loss": float(auxk), "dead": int(deads.sum()), "lr": lr, "k": k,
                      "threshold": Lst(threshold) if decoupled else float(threshold), "params": {k2: Lst(v) for k2, v in ps.items()}})
    return steps


def k_annealed(step, k, k_max, annealing_steps):  # BatchTopKCrossCoderTrainer.loss, k annealing
    if annealing_steps > 0 and k_max != k:
        if step < annealing_steps:
            return max(1, int(round(k_max - (k_max - k) * float(step) / annealing_steps)))
        return k
    return k_max


def write_safetensors(path, tensors, metadata):
    names = sorted(tensors)
    header, blobs, off = {}, [], 0
    dt = {th.float32: "F32", th.int64: "I64", th.int32: "I32"}
    for n in names:
        t = tensors[n].contiguous()
        raw = t.numpy().tobytes()
        header[n] = {"dtype": dt[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    th.manual_seed(0)
    th.set_num_threads(1)
    p = {
        "encoder.weight": th.randn(L, D, N) * 0.5,
        "encoder.bias": th.randn(N) * 0.1,
        "decoder.weight": th.randn(L, N, D) * 0.5,
        "decoder.bias": th.randn(L, D) * 0.1,
    }
    x = th.randn(B, L, D) + 0.5
    ref = {"x": Lst(x), "params": {k: Lst(v) for k, v in p.items()}, "norms": {}}
    for kind in CODE_NORMS:
        loss, l2, mse, l1, f, fs, x_hat = l1_loss(x, p, kind, 0.1)
        ref["norms"][kind] = {
            "c": Lst(get_code_normalization(kind, p["decoder.weight"])), "f": Lst(f), "activations": Lst(fs),
            "x_hat": Lst(x_hat), "loss": float(loss), "l2_loss": float(l2), "mse_loss": float(mse), "sparsity_loss": float(l1),
        }
    # BatchTopK encode: threshold 0.3 and batch top-k with k = 2.
    f_thr, *_ = batchtopk_encode(x, p, 2, True, th.tensor(0.3))
    f_top, *_ = batchtopk_encode(x, p, 2, False, None)
    ref["batchtopk"] = {"k": 2, "threshold": 0.3, "f_threshold": Lst(f_thr), "f_topk": Lst(f_top)}
    # Normaliser: mean/std per layer, global scale = target_rms / sqrt(sum std^2 + 1e-8).
    mean, std = th.randn(L, D) * 0.2, th.rand(L, D) + 0.5
    scale = 1.0 / th.sqrt((std ** 2).sum(dim=-1) + 1e-8)
    xn = normalize(x, mean, scale)
    f_norm = encoder_forward(xn, p["encoder.weight"], p["encoder.bias"])
    f_norm = f_norm * (f_norm * get_code_normalization("CROSSCODER", p["decoder.weight"]) > 0.3)
    ref["normalizer"] = {"mean": Lst(mean), "std": Lst(std), "global_scale": Lst(scale), "x_normalized": Lst(xn),
                         "f": Lst(f_norm), "x_hat": Lst(denormalize(decoder_forward(f_norm, p["decoder.weight"], p["decoder.bias"]), mean, scale))}

    # L1 trainer: Adam lr 1e-2, warm-up 2 steps (LambdaLR: lr·min(step/2, 1) at step 0, 1, 2), three batches.
    batches = [th.randn(B, L, D) + 0.5 for _ in range(3)]
    ref["train_batches"] = [Lst(b) for b in batches]
    ps = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    opt = th.optim.Adam(list(ps.values()), lr=1e-2)
    sched = th.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda s: min(s / 2, 1.0))
    steps = []
    for s, xb in enumerate(batches):
        opt.zero_grad()
        loss, *_ = l1_loss(xb, ps, "CROSSCODER", 0.1)
        lr = opt.param_groups[0]["lr"]
        loss.backward()
        opt.step()
        sched.step()
        steps.append({"loss": float(loss), "lr": lr, "params": {k: Lst(v) for k, v in ps.items()}})
    ref["l1_train"] = {"lr": 1e-2, "warmup_steps": 2, "l1_penalty": 0.1, "steps": steps}

    # BatchTopK trainer: lr 1e-2, warm-up 1, threshold_start_step 0 (updates from step 1), dead after 5 tokens, k 2.
    ps = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    threshold = th.tensor(-1.0)
    since = th.zeros(N, dtype=th.long)
    opt = th.optim.Adam(list(ps.values()), lr=1e-2, betas=(0.9, 0.999))
    sched = th.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda s: s / 1 if s < 1 else 1.0)
    steps = []
    for s, xb in enumerate(batches):
        if s == 0:
            ps["decoder.bias"].data = geometric_median(xb)
        f, f_scaled, active, post, post_scaled = batchtopk_encode(xb, ps, 2, False, None)
        if s > 0:  # update_threshold
            act = f_scaled[f_scaled > 0]
            m = 0.0 if act.size(0) == 0 else act.min().detach()
            threshold = th.tensor(m) if threshold < 0 else 0.999 * threshold + 0.001 * m
        x_hat = decoder_forward(f, ps["decoder.weight"], ps["decoder.bias"])
        e = xb - x_hat
        did_fire = th.zeros(N, dtype=th.bool)
        did_fire[active] = True
        since += xb.size(0)
        since[did_fire] = 0
        l2 = th.linalg.norm(e, dim=-1).mean()
        # get_auxiliary_loss
        res = e.detach().reshape(B, -1)
        dead = since >= 5
        auxk = auxk_loss(res, dead, post, post_scaled, ps)
        loss = l2 + (1 / 32) * auxk
        lr = opt.param_groups[0]["lr"]
        loss.backward()
        th.nn.utils.clip_grad_norm_(list(ps.values()), 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
        steps.append({"loss": float(loss), "auxk_loss": float(auxk), "dead": int(dead.sum()), "lr": lr,
                      "threshold": float(threshold), "params": {k: Lst(v) for k, v in ps.items()}})
    ref["batchtopk_train"] = {"lr": 1e-2, "warmup_steps": 1, "k": 2, "threshold_start_step": 0,
                              "dead_feature_threshold": 5, "steps": steps}

    # --- the rest of the fork's options (drawn after everything above, so the earlier numbers stay as they were) ---
    # k annealing (k_max 5 -> k 2 over 3 steps: k 5, 4, 3, then 2) with the activation normaliser computed as the
    # fork's caches compute it (per slot: mean and Bessel-corrected std over the training rows).
    more = [th.randn(B, L, D) * 1.5 + 0.7 for _ in range(1)]
    anneal_batches = batches + more
    stacked = th.cat(anneal_batches, dim=0)
    a_mean, a_std = stacked.mean(dim=0), stacked.std(dim=0, unbiased=True)
    ks = [k_annealed(s, 2, 5, 3) for s in range(4)]
    ref["anneal_train"] = {"k": 2, "k_max": 5, "k_annealing_steps": 3, "batches": [Lst(b) for b in anneal_batches],
                           "activation_mean": Lst(a_mean), "activation_std": Lst(a_std), "ks": ks,
                           "steps": batchtopk_train(p, anneal_batches, ks, a_mean, a_std)}
    # DECOUPLED BatchTopK: per-layer batch top-k and thresholds; threshold encode and three training steps.
    thr = th.tensor([0.2, 0.35, 0.5])
    f_dec, fs_dec, *_ = batchtopk_encode_decoupled(x, p, 2, True, thr)
    f_dec_top, *_ = batchtopk_encode_decoupled(x, p, 2, False, None)
    ref["decoupled"] = {"k": 2, "threshold": Lst(thr), "f_threshold": Lst(f_dec), "activations": Lst(fs_dec.sum(1)),
                        "x_hat": Lst(th.einsum("blf, lfd -> bld", f_dec, p["decoder.weight"]) + p["decoder.bias"]),
                        "f_topk": Lst(f_dec_top), "steps": batchtopk_train(p, batches, [2, 2, 2], decoupled=True)}
    # encoder_layers [0, 2] (init_with_transpose False: the decoder reconstructs all 3 layers) and num_decoder_layers 2.
    p_el = {"encoder.weight": th.randn(2, D, N) * 0.5, "encoder.bias": th.randn(N) * 0.1,
            "decoder.weight": th.randn(L, N, D) * 0.5, "decoder.bias": th.randn(L, D) * 0.1}
    f_el = relu(th.einsum("bld, ldf -> blf", x[:, [0, 2]], p_el["encoder.weight"]).sum(dim=1) + p_el["encoder.bias"])
    loss_el = l1_loss_el(x, p_el, [0, 2], 0.1)
    ref["encoder_layers"] = {"encoder_layers": [0, 2], "params": {k: Lst(v) for k, v in p_el.items()}, "f": Lst(f_el),
                             "x_hat": Lst(decoder_forward(f_el, p_el["decoder.weight"], p_el["decoder.bias"])),
                             "loss": float(loss_el)}
    p_nd = {"encoder.weight": th.randn(L, D, N) * 0.5, "encoder.bias": th.randn(N) * 0.1,
            "decoder.weight": th.randn(2, N, D) * 0.5, "decoder.bias": th.randn(2, D) * 0.1}
    f_nd = encoder_forward(x, p_nd["encoder.weight"], p_nd["encoder.bias"])
    ref["num_decoder_layers"] = {"num_decoder_layers": 2, "params": {k: Lst(v) for k, v in p_nd.items()}, "f": Lst(f_nd),
                                 "x_hat": Lst(decoder_forward(f_nd, p_nd["decoder.weight"], p_nd["decoder.bias"])),
                                 "c": Lst(get_code_normalization("CROSSCODER", p_nd["decoder.weight"]))}

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "reference.json"), "w") as fh:
        json.dump(ref, fh)
    # Checkpoints.
    sd = dict(p)
    sd["code_normalization_id"] = th.tensor(CODE_NORMS["CROSSCODER"])
    os.makedirs(os.path.join(out, "cc_crosscoder"), exist_ok=True)
    th.save(sd, os.path.join(out, "cc_crosscoder", "ae.pt"))
    sd_b = dict(p)
    sd_b.update({"target_rms": th.tensor(1.0), "activation_mean": mean, "activation_std": std,
                 "activation_global_scale": scale, "code_normalization_id": th.tensor(1),
                 "k": th.tensor(2, dtype=th.int), "threshold": th.tensor(0.3, dtype=th.float32)})
    os.makedirs(os.path.join(out, "cc_batchtopk"), exist_ok=True)
    th.save(sd_b, os.path.join(out, "cc_batchtopk", "ae.pt"))
    os.makedirs(os.path.join(out, "cc_hub"), exist_ok=True)
    write_safetensors(os.path.join(out, "cc_hub", "model.safetensors"), sd, {"format": "pt"})
    cfg = {"activation_dim": D, "dict_size": N, "num_layers": L, "same_init_for_all_layers": False, "norm_init_scale": None,
           "init_with_transpose": True, "encoder_layers": None, "latent_processor": None, "num_decoder_layers": None,
           "code_normalization": "CROSSCODER", "code_normalization_alpha_sae": 1.0, "code_normalization_alpha_cc": 0.1,
           "activation_mean": None, "activation_std": None, "target_rms": None, "dict_class": "CrossCoder"}
    with open(os.path.join(out, "cc_hub", "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    for name, params, extra_cfg in [("cc_encoder_layers", p_el, {"encoder_layers": [0, 2], "init_with_transpose": False}),
                                    ("cc_num_decoder_layers", p_nd, {"num_decoder_layers": 2, "init_with_transpose": False})]:
        os.makedirs(os.path.join(out, name), exist_ok=True)
        sd_e = dict(params)
        sd_e["code_normalization_id"] = th.tensor(CODE_NORMS["CROSSCODER"])
        sd_e.update({"target_rms": th.tensor(1.0), "activation_mean": th.full((L, D), float("nan")),
                     "activation_std": th.full((L, D), float("nan")), "activation_global_scale": th.ones(L)})
        write_safetensors(os.path.join(out, name, "model.safetensors"), sd_e, {"format": "pt"})
        c2 = dict(cfg)
        c2.update(extra_cfg)
        with open(os.path.join(out, name, "config.json"), "w") as fh:
            json.dump(c2, fh, indent=2)
    # a DECOUPLED BatchTopKCrossCoder (threshold per layer) as the trainer's ae.pt
    sd_d = dict(p)
    sd_d.update({"code_normalization_id": th.tensor(CODE_NORMS["DECOUPLED"]), "k": th.tensor(2, dtype=th.int),
                 "threshold": thr.clone()})
    os.makedirs(os.path.join(out, "cc_decoupled"), exist_ok=True)
    th.save(sd_d, os.path.join(out, "cc_decoupled", "ae.pt"))


if __name__ == "__main__":
    main()
