"""A whole ReLU (L1) training run of dictionary_learning's StandardTrainer on the rows a SaeSharp `bench relu-run` trains
on (the same .npy files), for the side-by-side in BENCHMARKS.md ("ReLU over a whole run"). StandardTrainer is the match
of SaeSharp's default `relu` recipe: loss mean_n ||x - x_hat||^2 + lambda * mean_n sum_j f_j with unit-norm decoder rows
(ConstrainedAdam). Settings follow `sae train --arch relu` at T steps: inputs scaled to E||x|| = sqrt(d_in), lambda
5*sqrt(d_in/4096), lr 1e-3, lr warm-up T/10, lambda warm-up T/20, lr decay to 0 over the last T/5. (StandardTrainer
cannot resample together with lr decay, and does not clip gradients: SaeSharp's recipe does both.)

  OMP_WAIT_POLICY=PASSIVE nice /usr/bin/python3 bench/reference/peer_relu_run.py --dl /work/ref/dictionary_learning \
      --train relu256/train.npy --eval relu256/eval.npy --steps 1000 --batch 2048 --dict-size 4096

Prints ms/step per window of --report steps, the whole run's rows/s (training steps only, batch gathering included),
then FVU, L0 and dead share on the eval rows (the definitions of SaeSharp's SaeEvaluator, docs/metrics.md).
"""
import argparse, math, os, sys, time

import torch as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dictionary_learning_trainers import batches, evaluate, import_dictionary_learning, load_rows, make_trainer  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dl", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--trainer", default="standard", help="standard (SaeSharp relu) or april (relu-april)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--dict-size", type=int, default=4096)
    p.add_argument("--l1", type=float, default=None, help="default: SaeSharp's 5*sqrt(d_in/4096)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--report", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    t.set_num_threads(a.threads)
    tr, _ = import_dictionary_learning(a.dl)
    x = t.from_numpy(load_rows(a.train))
    xe = t.from_numpy(load_rows(a.eval))
    d = x.shape[1]
    scale = math.sqrt(d) / x[:16384].norm(dim=1).mean().item()
    l1 = a.l1 if a.l1 is not None else 5.0 * math.sqrt(d / 4096)
    cfg = argparse.Namespace(dict_size=a.dict_size, seed=a.seed, warmup=0.1, sparsity_warmup=0.05, decay_start=0.8,
                             lr=a.lr, l1=l1, k=32, target_l0=20.0)
    t.manual_seed(a.seed)
    trainer = make_trainer(tr, a.trainer, cfg, d, a.steps)
    print(f"dictionary_learning {a.trainer}: torch {t.__version__}, threads {t.get_num_threads()}, d_in {d}, "
          f"d_sae {a.dict_size}, batch {a.batch}, {a.steps} steps, lambda {l1:.3f}, lr {a.lr}, scale {scale:.4f}", flush=True)
    start = window = time.perf_counter()
    logging = 0.0
    for step, rows in batches(x, a.batch, a.steps, a.seed):
        xb = rows * scale
        trainer.update(step, xb)
        if (step + 1) % a.report == 0 or step + 1 == a.steps:
            now = time.perf_counter()
            n = (step + 1) % a.report or a.report
            with t.no_grad():
                l0 = (trainer.ae.encode(xb) > 0).float().sum(-1).mean().item()
            print(f"steps {step + 2 - n:5d}-{step + 1:5d}: {(now - window) * 1000 / n:7.1f} ms/step, L0 {l0:7.1f}", flush=True)
            window = time.perf_counter()
            logging += window - now
    secs = time.perf_counter() - start - logging
    fvu, l0, dead = evaluate(trainer.ae, xe * scale, a.trainer)
    print(f"whole run: {secs:.1f} s, {a.batch * a.steps / secs:.0f} rows/s", flush=True)
    print(f"eval: fvu {fvu:.4f}  l0 {l0:.1f}  dead {dead * 100:.1f} %", flush=True)


if __name__ == "__main__":
    main()
