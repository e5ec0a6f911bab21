"""Writes python_random.json: what CPython's random.Random gives (stdlib only; run with /usr/bin/python3, 3.11).

Each entry starts from a fresh random.Random(seed):
  random: 8 random() values; bits: getrandbits(k) for k in KS (as decimal strings);
  randbelow: 12 _randbelow(n) values; shuffle: shuffle of [1..1000]; sample10: sample(range(10), k) for k in 3, 6, 10;
  sample10000: sample(range(10000), 50) (the set branch) and sample(range(10000), 1500) (the pool branch);
  choice: 12 choice(list('abcdefghij')) values; randint: 12 randint(3, 17) values.

    /usr/bin/python3 tests/data/python_random/make.py > tests/data/python_random/python_random.json
"""
import json
import random
import sys

SEEDS = [0, 1, 42, -42, 2**32 - 1, 2**32, 2**40, 2**70 + 3]
KS = [0, 1, 5, 31, 32, 33, 64, 100, 1000]


def entry(seed):
    def rng():
        return random.Random(seed)
    r = rng()
    out = {"seed": str(seed), "random": [r.random() for _ in range(8)]}
    r = rng()
    out["bits"] = [str(r.getrandbits(k)) for k in KS]
    r = rng()
    out["randbelow"] = [r._randbelow(n) for n in [1, 2, 3, 7, 10, 100, 1000, 2**20 + 1, 2**31 - 1, 5, 6, 1 << 30]]
    r = rng()
    x = list(range(1, 1001))
    r.shuffle(x)
    out["shuffle"] = x
    r = rng()
    out["sample10"] = [r.sample(range(10), k) for k in (3, 6, 10)]
    r = rng()
    out["sample10000"] = [r.sample(range(10000), 50), r.sample(range(10000), 1500)]
    r = rng()
    out["randint"] = [r.randint(3, 17) for _ in range(12)]
    r = rng()
    out["choice"] = [r.choice("abcdefghij") for _ in range(12)]
    return out


json.dump({"python": sys.version.split()[0], "ks": KS, "entries": [entry(s) for s in SEEDS]}, sys.stdout)
sys.stdout.write("\n")
