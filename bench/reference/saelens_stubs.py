"""Runs SAELens's own sae_lens/saes/*.py from a source tree with Debian's torch 1.13 and nothing else installed, for the
reference scripts next to this file (saelens_training_forward_fixture.py, saelens637_matryoshka_aux_fixture.py,
matching_pursuit_fixture.py, temporal_sae_fixture.py, feature_metrics_fixture.py).

What those modules import but the SAE code paths do not use is stubbed: HookPoint is the identity (as TransformerLens's
without hooks), HookedRootModule.setup does nothing; the loaders, the pretrained-SAE directory and the registry are
empty names; jaxtyping's Float/Int subscript to torch.Tensor; util gets the dtype helpers of sae_lens/constants.py where
the tree has that file (6.37.6). safetensors is not installed: save_safetensors below writes the format (8-byte
little-endian header length, JSON header, raw little-endian data) and can stand in for safetensors.torch.save_file, so
SAELens's own save_model runs. Two optional shims for torch 1.13: F.scaled_dot_product_attention as the explicit causal
softmax (the only form temporal_sae.py calls), and typing_extensions.deprecated.
"""
import json, logging, math, os, struct, sys, types

import torch
import torch.nn as nn
import torch.nn.functional as F

_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def stub(name, **attrs):
    """Registers an empty module `name` with the given attributes in sys.modules."""
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def save_safetensors(tensors, path, metadata=None, sort_keys=False, as_float32=False):
    """Writes `tensors` (name → tensor) as a safetensors file, in insertion order unless sort_keys."""
    header, blobs, off = {}, [], 0
    for k in (sorted(tensors) if sort_keys else tensors):
        v = tensors[k].detach()
        v = (v.to(torch.float32) if as_float32 else v).contiguous().cpu()
        b = v.numpy().tobytes()
        header[k] = {"dtype": _DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def causal_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
    """torch 2's F.scaled_dot_product_attention for is_causal=True, no mask, no dropout."""
    assert attn_mask is None and dropout_p == 0 and is_causal
    L, S = q.size(-2), k.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    mask = torch.ones(L, S, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def load_saelens(root, version, save_file=None, sdpa=False):
    """Makes `import sae_lens.saes.<module>` load SAELens's files under `root` (a checkout or `git archive` of SAELens
    `version`), with the stubs above. save_file: what safetensors.torch.save_file is (None: absent)."""
    import typing_extensions
    if not hasattr(typing_extensions, "deprecated"):
        typing_extensions.deprecated = lambda *a, **k: (lambda f: f)
    if sdpa:
        F.scaled_dot_product_attention = causal_sdpa

    class _Float:
        def __class_getitem__(cls, item):
            return torch.Tensor
    stub("jaxtyping", Float=_Float, Int=_Float)
    stub("safetensors")
    stub("safetensors.torch", load_file=None, save_file=save_file)

    class HookedRootModule(nn.Module):
        def setup(self):
            pass

    class HookPoint(nn.Module):
        def forward(self, x):
            return x
    stub("transformer_lens")
    stub("transformer_lens.hook_points", HookedRootModule=HookedRootModule, HookPoint=HookPoint)
    pkg = stub("sae_lens", __version__=version, logger=logging.getLogger("sae_lens"))
    pkg.__path__ = [os.path.join(root, "sae_lens")]
    saes = stub("sae_lens.saes")
    saes.__path__ = [os.path.join(root, "sae_lens", "saes")]
    if os.path.exists(os.path.join(root, "sae_lens", "constants.py")):
        import sae_lens.constants as constants  # noqa: E402  (torch only)

        def str_to_dtype(d):
            return d if isinstance(d, torch.dtype) else constants.DTYPE_MAP[d]
        stub("sae_lens.util", filter_valid_dataclass_fields=None, str_to_dtype=str_to_dtype,
             dtype_to_str=lambda d: constants.DTYPE_TO_STR[d])
    else:
        stub("sae_lens.util", filter_valid_dataclass_fields=None)
    stub("sae_lens.loading")
    stub("sae_lens.loading.pretrained_sae_loaders", NAMED_PRETRAINED_SAE_LOADERS={}, PretrainedSaeDiskLoader=object,
         PretrainedSaeHuggingfaceLoader=object, get_conversion_loader_name=None, handle_config_defaulting=None,
         sae_lens_disk_loader=None)
    stub("sae_lens.loading.pretrained_saes_directory", get_config_overrides=None, get_norm_scaling_factor=None,
         get_pretrained_saes_directory=None, get_releases_for_repo_id=None, get_repo_id_and_folder_name=None)
    stub("sae_lens.registry", get_sae_class=None, get_sae_training_class=None)


def R(v):
    """Nested lists of floats rounded to 9 significant digits (float32's round trip), for JSON."""
    return [R(e) for e in v] if isinstance(v, list) else float(f"{v:.9g}")
