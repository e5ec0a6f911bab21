"""Rows/s of dictionary_learning's trainers at the train bench's shape (d_in 512, d_sae 8192, batch 4096), for the peer
column of `bench train --peer NAME=ROWS` (BENCHMARKS.md). Random Gaussian rows as in the train bench; one warm-up
step, then the best and the median of --steps timed `trainer.update` calls (forward, backward, Adam, decoder hooks).

  /usr/bin/python3 bench/reference/peer_step_speed.py --dl /work/ref/dictionary_learning --trainer standard,topk --steps 3

The peer is only as fast as the BLAS under Debian's python3-torch (BLAS_INFO=generic: the system libblas.so.3). On
Debian 12 that is OpenBLAS 0.3.21, which ran this shape's sgemm at 44 GFLOP/s on an AVX-512 Xeon; Debian 13's 0.3.29
ran it at 167 (`apt-get install -t trixie libopenblas0-pthread`, the trixie source that scripts/setup-native.sh adds).
Check which OpenBLAS is installed (`dpkg -l libopenblas0-pthread`) before a comparison.
"""
import argparse, os, statistics, sys, time
import torch as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dictionary_learning_trainers import import_dictionary_learning, make_trainer  # noqa: E402
import peer_machine  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dl", required=True)
    p.add_argument("--trainer", default="standard,topk")
    peer_machine.add_step_shape(p)
    a = p.parse_args()
    t.set_num_threads(a.threads)
    tr, _ = import_dictionary_learning(a.dl)
    cfg = argparse.Namespace(dict_size=a.dict_size, seed=0, warmup=0.0, decay_start=None, sparsity_warmup=0.0,
                             lr=None, l1=1.0, k=a.k, target_l0=20.0)
    print(peer_machine.describe(a.batch, a.d_in, a.dict_size), flush=True)
    x = t.randn(a.batch, a.d_in, generator=t.Generator().manual_seed(1))
    print(f"torch {t.__version__}, threads {t.get_num_threads()}, d_in {a.d_in}, d_sae {a.dict_size}, batch {a.batch}", flush=True)
    for name in a.trainer.split(","):
        t.manual_seed(0)
        trainer = make_trainer(tr, name, cfg, a.d_in, 10_000)
        times = []
        for step in range(a.steps + 1):
            start = time.perf_counter()
            trainer.update(step, x)
            if step > 0:
                times.append(time.perf_counter() - start)
        best, med = min(times), statistics.median(times)
        print(f"dictionary_learning {name}: best {best * 1000:.0f} ms ({a.batch / best:.0f} rows/s), "
              f"median {med * 1000:.0f} ms ({a.batch / med:.0f} rows/s)", flush=True)


if __name__ == "__main__":
    main()
