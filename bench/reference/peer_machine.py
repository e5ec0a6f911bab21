"""The peer side's machine line, printed first by the peer scripts: ATen's CPU capability (what ATEN_CPU_CAPABILITY
caps), the BLAS library torch calls and, for OpenBLAS, the core type it chose (what OPENBLAS_CORETYPE forces), the
instruction-set caps set in the environment, and the float32 sgemm rate at the encoder's shape (the peer's matmul
ceiling, to read beside the one `bench train` prints)."""
import ctypes, os, time

import torch

CAPS = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA"]


def _openblas():
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if "openblas" in path.lower() or "libblas.so" in path:
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                lib.openblas_get_config.restype = ctypes.c_char_p
                return (f"{os.path.realpath(path)}: core {lib.openblas_get_corename().decode()}, "
                        f"{lib.openblas_get_config().decode().strip()}")
            except (OSError, AttributeError):
                return os.path.realpath(path)
    return "no OpenBLAS loaded"


def add_step_shape(parser):
    """The arguments every single-step peer script shares: the issue's bench shape (d_in 512, d_sae 8192, batch 4096,
    k 32) and its steps and threads, with the names `bench train` uses."""
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--d-in", type=int, default=512)
    parser.add_argument("--dict-size", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)


def sgemm_ceiling(n=4096, d_in=512, d_sae=8192):
    x, w, b = torch.randn(n, d_in), torch.randn(d_in, d_sae), torch.randn(d_sae)
    best = float("inf")
    for i in range(4):
        start = time.perf_counter()
        torch.addmm(b, x, w)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2.0 * n * d_in * d_sae / best / 1e9


def describe(n=4096, d_in=512, d_sae=8192):
    cap = [line.strip() for line in torch.__config__.show().splitlines() if "CPU capability" in line]
    limits = " ".join(f"{v}={os.environ[v]}" for v in CAPS if os.environ.get(v)) or "none"
    torch.zeros(2, 2) @ torch.zeros(2, 2)  # loads the BLAS
    return (f"peer machine: torch {torch.__version__}, {cap[0] if cap else 'CPU capability unknown'}; BLAS {_openblas()}; "
            f"ISA limits {limits}; float32 addmm {n}x{d_in}·{d_in}x{d_sae}: {sgemm_ceiling(n, d_in, d_sae):.0f} GFLOP/s")
