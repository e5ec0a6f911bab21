"""Writes tests/data/numpy_random/numpy_random.json: what NumPy's default_rng(seed) gives, for NumpyRandomTests.

`datasets`' Dataset.shuffle(seed=S) (src/datasets/arrow_dataset.py) is `np.random.default_rng(S).permutation(len(ds))`
followed by `select(indices=permutation)`; SAELens's PretokenizeRunner calls it on the tokenized rows. This records, with
the NumPy that runs it (1.24.2, Debian bookworm's python3-numpy; the algorithms are NumPy 1.17+'s Generator):

- seed_sequence: SeedSequence(seed).pool (4 uint32) and generate_state(4, np.uint64), as PCG64 seeds itself with it;
- pcg64_state: PCG64(seed).state (the 128-bit state and increment after seeding);
- random_raw: the first 12 PCG64(seed).random_raw() outputs;
- mixed: next_uint32 / next_uint64 calls interleaved through the bit generator's ctypes interface, which shows how
  next_uint32 hands out the low then the high half of one 64-bit output (and that next_uint64 leaves a half pending);
- permutations: default_rng(seed).permutation(n), whole for small n, else its length, first and last 16 entries and
  the SHA-256 of its int64 little-endian bytes;
- random_interval_64: Generator.shuffle's first draws for a sequence longer than 2**32 + 1 (the bound above 32 bits,
  so random_interval draws 64-bit words), recorded with a stand-in Sequence that logs each swap and stops after 40.

  /usr/bin/python3 bench/reference/numpy_permutation_fixture.py --out tests/data/numpy_random/numpy_random.json
"""
import argparse
import ctypes
import hashlib
import json
from collections.abc import Sequence

import numpy as np

SEEDS = [0, 1, 42, 2**31 - 1, 2**32, 12345678901234, 2**63 - 1, 2**64 + 5]
LENGTHS = [0, 1, 2, 3, 10, 37, 1000, 2**16 + 3, 1_000_003]
FULL_UP_TO = 1000


def permutation_entry(seed, n):
    p = np.random.default_rng(seed).permutation(n)
    assert p.dtype == np.int64
    e = {"seed": seed, "n": n}
    if n <= FULL_UP_TO:
        e["permutation"] = [int(v) for v in p]
    else:
        e["head"] = [int(v) for v in p[:16]]
        e["tail"] = [int(v) for v in p[-16:]]
        e["sha256"] = hashlib.sha256(p.astype("<i8").tobytes()).hexdigest()
    return e


class _Stop(Exception):
    pass


class LoggedSequence(Sequence):
    """len() above 2**32; records the (i, j) of each swap Generator.shuffle's untyped path makes, then stops."""

    def __init__(self, n, swaps):
        self.n, self.swaps, self.log = n, swaps, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i

    def __setitem__(self, i, v):
        # x[i], x[j] = x[j], x[i]: x[i] is set to j first.
        if len(self.log) and self.log[-1][1] is None:
            self.log[-1] = (self.log[-1][0], i)
            if len(self.log) == self.swaps:
                raise _Stop()
        else:
            self.log.append((i, None))


def random_interval_64(seed, n, swaps=40):
    s = LoggedSequence(n, swaps)
    try:
        np.random.default_rng(seed).shuffle(s)
    except _Stop:
        pass
    # each logged pair is (i, j): x[i] = old x[j] is written first, then x[j] = old x[i]
    return {"seed": seed, "n": n, "swaps": [[int(i), int(j)] for i, j in s.log]}


def mixed(seed):
    bg = np.random.PCG64(seed)
    c = bg.ctypes
    next32 = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p)(ctypes.cast(c.next_uint32, ctypes.c_void_p).value)
    next64 = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)(ctypes.cast(c.next_uint64, ctypes.c_void_p).value)
    calls = "32 32 32 64 32 64 64 32 32 32 64 32".split()
    out = []
    for k in calls:
        v = next32(c.state) if k == "32" else next64(c.state)
        out.append([int(k), int(v)])
    return {"seed": seed, "calls": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    data = {"numpy": np.__version__, "seed_sequence": [], "pcg64_state": [], "random_raw": [], "mixed": [],
            "permutations": [], "random_interval_64": []}
    for seed in SEEDS:
        ss = np.random.SeedSequence(seed)
        data["seed_sequence"].append({"seed": seed, "pool": [int(v) for v in ss.pool],
                                      "state_uint64": [int(v) for v in ss.generate_state(4, np.uint64)]})
        st = np.random.PCG64(seed).state["state"]
        data["pcg64_state"].append({"seed": seed, "state": int(st["state"]), "inc": int(st["inc"])})
        data["random_raw"].append({"seed": seed, "raw": [int(v) for v in np.random.PCG64(seed).random_raw(12)]})
        data["mixed"].append(mixed(seed))
        for n in LENGTHS:
            data["permutations"].append(permutation_entry(seed, n))
    for seed in [0, 42]:
        data["random_interval_64"].append(random_interval_64(seed, 2**32 + 10))
        data["random_interval_64"].append(random_interval_64(seed, 2**40 + 3))
    # 2**32 + 1 elements: the first bound is 2**32, above 0xffffffff (64-bit draws); 2**32 elements: 2**32 - 1 (32-bit).
    data["random_interval_64"].append(random_interval_64(7, 2**32 + 1))
    data["random_interval_64"].append(random_interval_64(7, 2**32))
    with open(a.out, "w") as f:
        json.dump(data, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
