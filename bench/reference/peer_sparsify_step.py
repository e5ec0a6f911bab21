"""Rows/s of EleutherAI sparsify's own training step at the train bench's shape (d_in 512, d_sae 8192, batch 4096, k 32),
for the peer column of `bench train --peer topk=ROWS` (BENCHMARKS.md).

The step is sparsify's code, loaded from a checkout given by path (never vendored here): `SparseCoder` (its
`fused_encoder` and the eager `decoder_impl`, `embedding_bag`, used wherever Triton is missing, as on every CPU), the
FVU loss and its backward, then what `Trainer.fit` does around them at its defaults (sparsify/config.py,
sparsify/trainer.py):
  - b_dec set to the batch mean on the first step;
  - `set_decoder_norm_to_unit_norm()` before every forward (normalize_decoder=True, not transcoding);
  - loss = fvu + auxk_alpha·auxk_loss + multi_topk_fvu/8 with auxk_alpha 0 (no AuxK pass: dead_mask None) and
    multi_topk False;
  - the did_fire / num_tokens_since_fired bookkeeping and the `float(fvu)` the trainer logs;
  - `remove_gradient_parallel_to_decoder_directions()`, then the optimizer: the default `signum`, i.e.
    `ScheduleFreeWrapper(SignSGD(lr = 5e-3 / sqrt(num_latents / 2**14)), momentum=0.95)` in train mode, loaded from a
    checkout of facebookresearch/schedule_free (--schedulefree); or `--optimizer adam`: torch.optim.Adam at
    2e-4 / sqrt(num_latents / 2**14) with transformers' linear warm-up schedule (1,000 steps), which bitsandbytes'
    absence makes sparsify use on a CPU.
Not timed: the language model's forward and the hook's masking/cloning of its activations (the SaeSharp bench times
the SAE step on a ready batch too).

Shims, all inside this script: stub modules for the imports the step never calls (huggingface_hub, natsort,
safetensors, simple_parsing's Serializable/list_field, accelerate, transformers' PreTrainedModel and
get_linear_schedule_with_warmup, re-implemented from its definition), the package `sparsify` created without running
its __init__ (which imports the trainer's data and distributed stack), and `torch.cuda.is_bf16_supported` returning
False on a torch built without CUDA (PyTorch 1.13 raises there, newer versions return False), and
`torch.autocast("cuda", ...)` a no-op there: sparsify decorates `SparseCoder.forward` with
`@torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_bf16_supported())`, which newer PyTorch accepts
as disabled on a CPU but 1.13 refuses with "Current CUDA Device does not support bfloat16" even when disabled. Either
way the step runs in float32, as it does under sparsify on a CPU with a current PyTorch.

  git -C <sparsify mirror> archive HEAD | tar -x -C /tmp/sparsify
  git -C <schedule_free mirror> archive HEAD | tar -x -C /tmp/schedule_free
  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/reference/peer_sparsify_step.py --sparsify /tmp/sparsify --schedulefree /tmp/schedule_free --steps 3

Prints `sparsify topk: best … ms (ROWS rows/s), median …`; pass ROWS as `bench train --peer topk=ROWS`. As with
peer_step_speed.py, the speed depends on the system OpenBLAS under Debian's python3-torch (check
`dpkg -l libopenblas0-pthread`); OPENBLAS_CORETYPE=Haswell together with ATEN_CPU_CAPABILITY=avx2 restricts it to
AVX2 + FMA (BENCHMARKS.md, "AVX2-only proxy").
"""
import argparse, contextlib, dataclasses, importlib.util, math, os, statistics, sys, time, types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_machine  # noqa: E402


def _stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _unused(name):
    def f(*a, **k):
        raise RuntimeError(f"{name} is stubbed by peer_sparsify_step.py and not used by the timed step")
    return f


def _linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    # transformers.get_linear_schedule_with_warmup: linear warm-up from 0, then linear decay to 0.
    def lr_lambda(step):
        if step < num_warmup_steps:
            return float(step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, last_epoch)


def load_sparsify(root):
    """Imports sparsify.sparse_coder (and with it config, fused_encoder, utils) and sparsify.sign_sgd from the
    checkout at root, with the unused third-party imports stubbed."""
    class Serializable:
        pass

    def list_field(*default):
        return dataclasses.field(default_factory=lambda: list(default))

    _stub("huggingface_hub", snapshot_download=_unused("snapshot_download"))
    _stub("natsort", natsorted=sorted)
    _stub("safetensors", safe_open=_unused("safe_open"))
    _stub("safetensors.torch", load_model=_unused("load_model"), save_model=_unused("save_model"))
    _stub("simple_parsing", Serializable=Serializable, list_field=list_field)
    _stub("accelerate")
    _stub("accelerate.utils", send_to_device=_unused("send_to_device"))
    _stub("transformers", PreTrainedModel=type("PreTrainedModel", (), {}),
          get_linear_schedule_with_warmup=_linear_schedule_with_warmup)
    if not torch.cuda.is_available():
        torch.cuda.is_bf16_supported = lambda *a, **k: False
        real_autocast = torch.autocast

        class NoCudaAutocast(contextlib.ContextDecorator):
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        def autocast(device_type, dtype=None, enabled=True, cache_enabled=None):
            if device_type == "cuda":
                return NoCudaAutocast()
            return real_autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
        torch.autocast = autocast
    pkg_dir = os.path.join(root, "sparsify")
    if not os.path.isfile(os.path.join(pkg_dir, "sparse_coder.py")):
        sys.exit(f"--sparsify {root}: no sparsify/sparse_coder.py there (extract a checkout with git archive)")
    pkg = types.ModuleType("sparsify")
    pkg.__path__ = [pkg_dir]
    sys.modules["sparsify"] = pkg
    import sparsify.sparse_coder as sc  # noqa: E402
    import sparsify.sign_sgd as ss  # noqa: E402
    from sparsify import utils  # noqa: E402
    return sc, ss, utils


def load_schedulefree_wrapper(root):
    path = os.path.join(root, "schedulefree", "wrap_schedulefree.py")
    if not os.path.isfile(path):
        sys.exit(f"--schedulefree {root}: no schedulefree/wrap_schedulefree.py there")
    spec = importlib.util.spec_from_file_location("wrap_schedulefree", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ScheduleFreeWrapper


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sparsify", required=True, help="a checkout of EleutherAI/sparsify (the folder holding sparsify/)")
    p.add_argument("--schedulefree", help="a checkout of facebookresearch/schedule_free (for the default signum optimizer)")
    p.add_argument("--optimizer", default="signum", choices=["signum", "adam"])
    peer_machine.add_step_shape(p)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sc, ss, utils = load_sparsify(a.sparsify)
    if a.optimizer == "signum" and not a.schedulefree:
        sys.exit("--optimizer signum (sparsify's default) needs --schedulefree PATH")

    torch.manual_seed(0)
    cfg = sc.SparseCoderConfig(num_latents=a.dict_size, k=a.k)
    sae = sc.SparseCoder(a.d_in, cfg, "cpu", dtype=torch.float32)
    n = sae.num_latents
    if a.optimizer == "signum":
        wrapper = load_schedulefree_wrapper(a.schedulefree)
        lr = 5e-3 / (n / 2**14) ** 0.5
        opt = wrapper(ss.SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
        opt.train()
        schedulers = []
    else:
        lr = 2e-4 / (n / 2**14) ** 0.5
        opt = torch.optim.Adam([dict(params=sae.parameters(), lr=lr)])
        schedulers = [_linear_schedule_with_warmup(opt, 1000, 10_000)]
    torch.set_float32_matmul_precision("high")  # Trainer.fit does this (Tensor Cores; no effect on a CPU)

    print(peer_machine.describe(a.batch, a.d_in, a.dict_size), flush=True)
    x = torch.randn(a.batch, a.d_in, generator=torch.Generator().manual_seed(1))
    did_fire = torch.zeros(n, dtype=torch.bool)
    since_fired = torch.zeros(n, dtype=torch.long)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, d_in {a.d_in}, d_sae {n}, batch {a.batch}, "
          f"k {a.k}, sparsify decoder {utils.decoder_impl.__name__}, optimizer {a.optimizer} lr {lr:.2e}", flush=True)

    def step(global_step):
        if global_step == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x=x, y=x, dead_mask=None)
        did_fire[out.latent_indices.flatten()] = True
        fvu = float(out.fvu.detach())
        loss = out.fvu + 0.0 * out.auxk_loss + out.multi_topk_fvu / 8
        loss.div(1).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        for s in schedulers:
            s.step()
        with torch.no_grad():
            since_fired.add_(a.batch)
            since_fired[did_fire] = 0
            did_fire.zero_()
        return fvu

    times, fvus = [], []
    for s in range(a.steps + 1):
        start = time.perf_counter()
        fvus.append(step(s))
        if s > 0:
            times.append(time.perf_counter() - start)
    best, med = min(times), statistics.median(times)
    if not all(math.isfinite(f) for f in fvus):
        sys.exit(f"non-finite FVU {fvus}")
    print(f"sparsify topk: best {best * 1000:.0f} ms ({a.batch / best:.0f} rows/s), "
          f"median {med * 1000:.0f} ms ({a.batch / med:.0f} rows/s); FVU per step {' '.join(f'{f:.4f}' for f in fvus)}",
          flush=True)


if __name__ == "__main__":
    main()
