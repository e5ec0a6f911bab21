"""A whole TopK training run of EleutherAI sparsify's SparseCoder on the rows a SaeSharp `bench relu-run --arch topk`
trains on (the same .npy files), for the side-by-side in BENCHMARKS.md (issue #14: TopK's rows/s "at equal or better
FVU after equal steps"). Each step is what peer_sparsify_step.py times, i.e. what sparsify's `Trainer.fit` does at its
defaults: b_dec set to the first batch's mean, decoder rows renormalised before every forward, loss = FVU (auxk_alpha 0,
no multi-TopK), the gradient parallel to the decoder rows removed, and the default `signum` optimizer
(ScheduleFreeWrapper(SignSGD(lr 5e-3/sqrt(num_latents/2^14)), momentum 0.95)). sparsify feeds the activations
unnormalised, in its data loader's order; here the rows come in a random permutation per pass (seed 0), as in
peer_relu_run.py. For the evaluation the optimizer is switched to its averaged weights (`optimizer.eval()`), as
sparsify does before it saves a checkpoint.

  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/reference/peer_sparsify_run.py --sparsify /tmp/sparsify \
      --schedulefree /tmp/schedule_free --train lm/train.npy --eval lm/eval.npy --steps 1000 --batch 1024 --dict-size 2048

Prints ms/step and the batch FVU per window of --report steps, the whole run's rows/s (training steps only, batch
gathering included), then FVU, L0 and dead share on the eval rows (the definitions of SaeSharp's SaeEvaluator,
docs/metrics.md).
"""
import argparse, os, sys, time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dictionary_learning_trainers import batches, load_rows  # noqa: E402
from peer_sparsify_step import load_schedulefree_wrapper, load_sparsify  # noqa: E402


def evaluate(sae, x):
    mean = x.mean(0, keepdim=True)
    resid = total = l0 = 0.0
    fired = torch.zeros(sae.num_latents, dtype=torch.bool)
    with torch.no_grad():
        for i in range(0, x.shape[0], 4096):
            xb = x[i:i + 4096]
            out = sae(x=xb, y=xb, dead_mask=None)
            resid += (xb - out.sae_out).double().pow(2).sum().item()
            total += (xb - mean).double().pow(2).sum().item()
            active = out.latent_acts != 0
            l0 += active.sum().item()
            fired[out.latent_indices[active]] = True
    return resid / total, l0 / x.shape[0], 1 - fired.double().mean().item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sparsify", required=True, help="a checkout of EleutherAI/sparsify (the folder holding sparsify/)")
    p.add_argument("--schedulefree", required=True, help="a checkout of facebookresearch/schedule_free")
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--dict-size", type=int, default=2048)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--report", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sc, ss, _ = load_sparsify(a.sparsify)
    x = torch.from_numpy(load_rows(a.train))
    xe = torch.from_numpy(load_rows(a.eval))
    d = x.shape[1]
    torch.manual_seed(a.seed)
    sae = sc.SparseCoder(d, sc.SparseCoderConfig(num_latents=a.dict_size, k=a.k), "cpu", dtype=torch.float32)
    n = sae.num_latents
    lr = 5e-3 / (n / 2**14) ** 0.5
    opt = load_schedulefree_wrapper(a.schedulefree)(ss.SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
    opt.train()
    print(f"sparsify topk: torch {torch.__version__}, threads {torch.get_num_threads()}, d_in {d}, d_sae {n}, "
          f"batch {a.batch}, {a.steps} steps, k {a.k}, signum lr {lr:.2e}", flush=True)
    start = window = time.perf_counter()
    logging = 0.0
    for step, xb in batches(x, a.batch, a.steps, a.seed):
        if step == 0:
            sae.b_dec.data = xb.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x=xb, y=xb, dead_mask=None)
        fvu = float(out.fvu.detach())
        (out.fvu + 0.0 * out.auxk_loss + out.multi_topk_fvu / 8).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        if (step + 1) % a.report == 0 or step + 1 == a.steps:
            now = time.perf_counter()
            m = (step + 1) % a.report or a.report
            print(f"steps {step + 2 - m:5d}-{step + 1:5d}: {(now - window) * 1000 / m:7.1f} ms/step, FVU (batch) {fvu:.4f}",
                  flush=True)
            window = time.perf_counter()
            logging += window - now
    secs = time.perf_counter() - start - logging
    opt.eval()
    sae.set_decoder_norm_to_unit_norm()
    fvu, l0, dead = evaluate(sae, xe)
    print(f"whole run: {secs:.1f} s, {a.batch * a.steps / secs:.0f} rows/s", flush=True)
    print(f"eval: fvu {fvu:.4f}  l0 {l0:.1f}  dead {dead * 100:.1f} %", flush=True)


if __name__ == "__main__":
    main()
