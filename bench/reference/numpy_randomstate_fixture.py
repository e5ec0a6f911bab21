"""Writes tests/data/numpy_random/numpy_randomstate.json: what NumPy's legacy np.random.RandomState(seed) gives, for
NumpyRandomStateTests.

pandas' DataFrame.sample(n, random_state=seed) (pandas/core/sample.py) draws its rows with
`np.random.RandomState(seed).choice(len(obj), size=n, replace=False)`, which is `permutation(len)[:n]`; SAEBench's
get_balanced_dataset samples each group so. This records, with the NumPy that runs it (1.24.2, Debian bookworm's
python3-numpy):

- raw: the first 12 MT19937 outputs after RandomState(seed) (randint over the full uint32 range: one word each);
- randint: RandomState(seed).randint(low, high, size=12) for 32- and 64-bit ranges (legacy masked bounded integers);
- permutations: RandomState(seed).permutation(n), whole up to 1000, else length, head, tail and SHA-256 of the int64 bytes;
- choices: RandomState(seed).choice(n, size, replace=False);
- shuffles: RandomState(seed).shuffle of a Python list of strings;
- pandas (when pandas imports): df.groupby(g) then group.sample(n, random_state=42) on a small frame, the index labels
  drawn, to show they are choice(len(group), n, replace=False) over the group's rows in frame order.

  /usr/bin/python3 bench/reference/numpy_randomstate_fixture.py --out tests/data/numpy_random/numpy_randomstate.json
"""
import argparse
import hashlib
import json

import numpy as np

SEEDS = [0, 42, 2**31 - 1, 2**32 - 1]
LENGTHS = [0, 1, 2, 10, 1000, 70000]
FULL_UP_TO = 1000


def permutation_entry(seed, n):
    p = np.random.RandomState(seed).permutation(n)
    e = {"seed": seed, "n": n}
    if n <= FULL_UP_TO:
        e["permutation"] = [int(v) for v in p]
    else:
        e["head"] = [int(v) for v in p[:16]]
        e["tail"] = [int(v) for v in p[-16:]]
        e["sha256"] = hashlib.sha256(p.astype("<i8").tobytes()).hexdigest()
    return e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    data = {"numpy": np.__version__, "raw": [], "randint": [], "permutations": [], "choices": [], "shuffles": []}
    for seed in SEEDS:
        rs = np.random.RandomState(seed)
        data["raw"].append({"seed": seed, "raw": [int(v) for v in rs.randint(0, 2**32, size=12, dtype=np.uint64)]})
        for low, high in [(0, 1), (0, 7), (-5, 1000), (3, 2**32 + 3), (0, 2**40 + 17)]:
            rs = np.random.RandomState(seed)
            data["randint"].append({"seed": seed, "low": low, "high": high,
                                    "values": [int(v) for v in rs.randint(low, high, size=12, dtype=np.int64)]})
        for n in LENGTHS:
            data["permutations"].append(permutation_entry(seed, n))
        for n, size in [(1, 1), (10, 3), (10, 10), (1000, 250), (70000, 5)]:
            data["choices"].append({"seed": seed, "n": n, "size": size,
                                    "choice": [int(v) for v in np.random.RandomState(seed).choice(n, size, replace=False)]})
        items = [f"t{i}" for i in range(25)]
        np.random.RandomState(seed).shuffle(items)
        data["shuffles"].append({"seed": seed, "n": 25, "shuffled": items})
    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        g = [(i * 7) % 3 for i in range(40)]
        df = pd.DataFrame({"g": g, "text": [f"row{i}" for i in range(40)]})
        groups = []
        for key, group_df in df.groupby("g"):
            for n in [1, 5, len(group_df)]:
                picked = group_df.sample(n=n, random_state=42)
                groups.append({"group": int(key), "rows": [int(v) for v in group_df.index], "n": n,
                               "sampled": [int(v) for v in picked.index]})
        data["pandas"] = {"version": pd.__version__, "seed": 42, "groups": groups}
    with open(a.out, "w") as f:
        json.dump(data, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
