"""Rows/s of SAELens 6.37.6's own training SAEs at the train bench's shape (d_in 512, d_sae 8192, batch 4096), for the
peer column of `bench train --peer NAME=ROWS` (BENCHMARKS.md): one training_forward_pass + backward + Adam step, the way
SAELens's SAETrainer steps (no decoder-norm hooks for these architectures). Random Gaussian rows as in the train bench;
one warm-up step, then the best and the median of --steps timed steps.

  git --git-dir=/work/.mirror/Zhangyiming00+SAELens/repo archive 69c4c62b0dc24e5ba23fc773a0286149514b4a23 sae_lens \
      | tar -x -C /tmp/saelens637
  /usr/bin/python3 bench/reference/saelens_step_speed.py --saelens /tmp/saelens637 --arch matching_pursuit --steps 3

matching_pursuit runs with max_iterations = --k (SAELens's default, d_in, would make one step take minutes; its docs
advise setting it), residual_threshold and stop_on_duplicate_support at SAELens's defaults. SAELens's code runs
unchanged under Debian's torch 1.13 through saelens_stubs.py; the peer is as fast as that torch's BLAS (see
peer_step_speed.py on which OpenBLAS is installed).
"""
import argparse, os, statistics, sys, time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from saelens_stubs import load_saelens  # noqa: E402
import peer_machine  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--saelens", required=True)
    p.add_argument("--arch", default="matching_pursuit")
    peer_machine.add_step_shape(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load_saelens(a.saelens, "6.37.6")
    import sae_lens.saes.sae as sae  # noqa: E402
    import sae_lens.saes.matching_pursuit_sae as mp  # noqa: E402
    print(peer_machine.describe(a.batch, a.d_in, a.dict_size), flush=True)
    x = torch.randn(a.batch, a.d_in, generator=torch.Generator().manual_seed(1))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, d_in {a.d_in}, d_sae {a.dict_size}, batch {a.batch}",
          flush=True)
    for name in a.arch.split(","):
        torch.manual_seed(0)
        if name != "matching_pursuit":
            raise SystemExit(f"unknown --arch {name} (matching_pursuit)")
        model = mp.MatchingPursuitTrainingSAE(mp.MatchingPursuitTrainingSAEConfig(
            d_in=a.d_in, d_sae=a.dict_size, max_iterations=a.k))
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        times, l0 = [], None
        for step in range(a.steps + 1):
            start = time.perf_counter()
            opt.zero_grad()
            out = model.training_forward_pass(sae.TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None,
                                                                 n_training_steps=step, is_logging_step=False))
            out.loss.backward()
            opt.step()
            if step > 0:
                times.append(time.perf_counter() - start)
            l0 = (out.feature_acts > 0).float().sum(-1).mean().item()
        best, med = min(times), statistics.median(times)
        print(f"{name} (max_iterations {a.k}): best {best * 1000:.0f} ms/step = {a.batch / best:.0f} rows/s; "
              f"median {med * 1000:.0f} ms; L0 {l0:.1f}", flush=True)


if __name__ == "__main__":
    main()
