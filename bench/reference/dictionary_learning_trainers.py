"""Trains dictionary_learning's own trainers on the activations a SaeSharp run uses, for the side-by-side in
BENCHMARKS.md ("Recipes"). dictionary_learning is not vendored: pass the folder of a checkout with --dl.

  python3 bench/reference/dictionary_learning_trainers.py --dl /work/ref/dictionary_learning \
      --train train.npy --eval eval.npy --trainer april --steps 1000 --batch 512 --dict-size 1024 --l1 1

Reads [N, d] float32 .npy or .safetensors (the only tensor, or 'activations'). Warm-ups follow the run as in the
issue's comparison (lr warm-up 10 %, sparsity warm-up 20 %), lr decay from 80 % (dictionary_learning's demo), raw
activations unless --normalize. Prints one line per trainer: FVU, L0 and dead share on the eval rows (SaeSharp's
definitions, docs/metrics.md), and the loss terms every --log steps with --trace. --save DIR writes ae.pt +
config.json (dictionary_learning's layout), which `sae eval --sae DIR/ae.pt` reads.
"""
import argparse, importlib.util, json, math, os, struct, sys, time, types

import numpy as np
import torch as t


def load_rows(path):
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        name = "activations" if "activations" in header else next(iter(header))
        info = header[name]
        assert info["dtype"] == "F32", f"{path}: {name} is {info['dtype']}, expected F32"
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        return np.frombuffer(f.read(end - start), dtype=np.float32).reshape(info["shape"]).copy()


def batches(x, batch, steps, seed):
    """Yields (step, rows) for `steps` batches of `batch` rows of x: a random permutation per pass (torch generator
    seeded with `seed`), a new one when the rest of a pass is shorter than a batch. The whole-run peers' row order."""
    g = t.Generator().manual_seed(seed)
    order, pos = t.randperm(x.shape[0], generator=g), 0
    for step in range(steps):
        if pos + batch > x.shape[0]:
            order, pos = t.randperm(x.shape[0], generator=g), 0
        yield step, x[order[pos:pos + batch]]
        pos += batch


def import_dictionary_learning(root):
    """Imports dictionary_learning.trainers without the package __init__ (which needs nnsight for its buffer)."""
    pkg_dir = os.path.join(root, "dictionary_learning")
    pkg = types.ModuleType("dictionary_learning")
    pkg.__path__ = [pkg_dir]
    sys.modules["dictionary_learning"] = pkg
    import dictionary_learning.trainers as trainers  # noqa: E402
    import dictionary_learning.trainers.standard as standard  # noqa: E402
    trainers.StandardTrainerAprilUpdate = standard.StandardTrainerAprilUpdate
    import dictionary_learning.trainers.matryoshka_batch_top_k as matryoshka  # noqa: E402
    trainers.MatryoshkaBatchTopKTrainer = matryoshka.MatryoshkaBatchTopKTrainer
    import dictionary_learning.dictionary as dictionary  # noqa: E402
    return trainers, dictionary


def make_trainer(tr, name, a, d, steps):
    common = dict(steps=steps, activation_dim=d, dict_size=a.dict_size, layer=0, lm_name="saesharp-bench",
                  device="cpu", seed=a.seed, warmup_steps=max(1, int(steps * a.warmup)))
    decay = int(steps * a.decay_start) if a.decay_start else None
    sparsity_warm = max(1, int(steps * a.sparsity_warmup))
    if name == "standard":
        return tr.StandardTrainer(lr=a.lr or 1e-3, l1_penalty=a.l1, sparsity_warmup_steps=sparsity_warm, decay_start=decay, **common)
    if name == "april":
        return tr.StandardTrainerAprilUpdate(lr=a.lr or 1e-3, l1_penalty=a.l1, sparsity_warmup_steps=sparsity_warm, decay_start=decay, **common)
    if name == "gated":
        return tr.GatedSAETrainer(lr=a.lr or 5e-5, l1_penalty=a.l1, sparsity_warmup_steps=sparsity_warm, decay_start=decay, **common)
    if name == "jumprelu":
        return tr.JumpReluTrainer(lr=a.lr or 7e-5, sparsity_penalty=a.l1, target_l0=a.target_l0, sparsity_warmup_steps=sparsity_warm,
                                  decay_start=decay, **common)
    if name == "topk":
        return tr.TopKTrainer(k=a.k, lr=a.lr, decay_start=decay, threshold_start_step=min(1000, steps // 4), **common)
    if name == "batchtopk":
        return tr.BatchTopKTrainer(k=a.k, lr=a.lr, decay_start=decay, threshold_start_step=min(1000, steps // 4), **common)
    if name == "matryoshka":
        # SaeSharp's default prefixes d_sae/16, /8, /4, /2, 1 as dictionary_learning's group fractions.
        return tr.MatryoshkaBatchTopKTrainer(k=a.k, lr=a.lr, decay_start=decay, threshold_start_step=min(1000, steps // 4),
                                             group_fractions=[1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2], **common)
    raise SystemExit(f"unknown trainer {name}")


@t.no_grad()
def evaluate(ae, x, name):
    mean = x.mean(0, keepdim=True)
    resid = total = 0.0
    l0 = 0.0
    fired = t.zeros(ae.dict_size, dtype=t.bool)
    for i in range(0, x.shape[0], 4096):
        xb = x[i:i + 4096]
        if name in ("topk", "batchtopk", "matryoshka"):
            f = ae.encode(xb, use_threshold=True) if name != "topk" else ae.encode(xb)
        else:
            f = ae.encode(xb)
        xh = ae.decode(f)
        resid += (xb - xh).double().pow(2).sum().item()
        total += (xb - mean).double().pow(2).sum().item()
        l0 += (f != 0).sum().item()
        fired |= (f != 0).any(0)
    return resid / total, l0 / x.shape[0], 1 - fired.double().mean().item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dl", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--trainer", default="april", help="comma-separated: standard, april, gated, jumprelu, topk, batchtopk, matryoshka")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dict-size", type=int, default=1024)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--l1", type=float, default=1.0)
    p.add_argument("--target-l0", type=float, default=20.0)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--sparsity-warmup", type=float, default=0.2)
    p.add_argument("--decay-start", type=float, default=0.8)
    p.add_argument("--normalize", action="store_true", help="scale so that E||x|| = sqrt(d) (SaeSharp's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", action="store_true")
    p.add_argument("--log", type=int, default=100)
    p.add_argument("--save", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--submodule", default=None, help="config.json submodule_name, e.g. resid_post_layer_1 (sae eval reads the hook from it)")
    a = p.parse_args()
    t.set_num_threads(a.threads)
    tr, _ = import_dictionary_learning(a.dl)
    x = t.from_numpy(load_rows(a.train))
    xe = t.from_numpy(load_rows(a.eval))
    d = x.shape[1]
    scale = 1.0
    if a.normalize:
        scale = math.sqrt(d) / x[:16384].norm(dim=1).mean().item()
    g = t.Generator().manual_seed(a.seed)
    for name in a.trainer.split(","):
        t.manual_seed(a.seed)
        trainer = make_trainer(tr, name, a, d, a.steps)
        start = time.time()
        order = t.randperm(x.shape[0], generator=g)
        pos = 0
        for step in range(a.steps):
            if pos + a.batch > x.shape[0]:
                order, pos = t.randperm(x.shape[0], generator=g), 0
            xb = x[order[pos:pos + a.batch]] * scale
            pos += a.batch
            if a.trace and (step + 1) % a.log == 0:
                log = trainer.loss(xb, step=step, logging=True)
                lr = trainer.optimizer.param_groups[0]["lr"]
                l0 = (log.f != 0).float().sum(-1).mean().item()
                print(json.dumps({"trainer": name, "step": step + 1, "lr": lr, "l0": l0, **log.losses}), flush=True)
            trainer.update(step, xb)
        fvu, l0, dead = evaluate(trainer.ae, xe * scale, name)
        print(f"dictionary_learning {name:10s} steps {a.steps} batch {a.batch} d_sae {a.dict_size} "
              f"{'k ' + str(a.k) if name in ('topk', 'batchtopk', 'matryoshka') else 'l1 ' + str(a.l1)}: "
              f"fvu {fvu:.4f}  l0 {l0:.1f}  dead {dead * 100:.1f} %  ({time.time() - start:.0f} s)", flush=True)
        if a.save:
            out = os.path.join(a.save, name)
            os.makedirs(out, exist_ok=True)
            if scale != 1.0:
                trainer.ae.scale_biases(1 / scale)
            t.save(trainer.ae.state_dict(), os.path.join(out, "ae.pt"))
            with open(os.path.join(out, "config.json"), "w") as f:
                config = dict(trainer.config)
                if a.submodule:
                    config["submodule_name"] = a.submodule
                json.dump({"trainer": config, "buffer": {"d_submodule": d}}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
