"""Writes tests/data/hf_models/: tiny random checkpoints of every model family SaeSharp loads, saved by Hugging Face
`transformers`' own `save_pretrained` (its config.json and weight files), plus the forward pass of that real
modeling code (float32, eager attention, no cache) on fixed tokens, for HfTransformersParityTests.

How it was run (2026-12-04; no PyPI on the machine, so transformers and huggingface_hub are plain source trees):
  apt-get install python3-torch python3-numpy python3-regex python3-yaml python3-packaging python3-tqdm \
      python3-filelock python3-requests python3-fsspec            # Debian bookworm: PyTorch 1.13.1, Python 3.11.2
  TF=<clone of huggingface/transformers>; HUB=<clone of huggingface/huggingface_hub>
  for c in 66ab300aaff9ef509f8736cf186ab9b6a0ef4f3b:/tmp/hf/site447 d1b92369ca193da49f9f7ecd01b08ece45c2c9aa:/tmp/hf/site451; do
    mkdir -p ${c#*:}
    git --git-dir=$TF archive ${c%:*} src/transformers | tar -x -C ${c#*:} --strip-components=1
    git --git-dir=$HUB archive v0.30.2 src/huggingface_hub | tar -x -C ${c#*:} --strip-components=1
  done
  export PYTHONDONTWRITEBYTECODE=1
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site447 --out tests/data/hf_models \
      --only gpt2 gpt_neox-parallel gpt_neox-sequential llama3 llama-bias-tied qwen2
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site447 --out tests/data/hf_models \
      --only gemma2 --torch2-stand-ins
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site451 --out tests/data/hf_models \
      --only qwen3 --torch2-stand-ins
  # 2026-12-05: the Gemma 3 folders, the same way (then their config_transformers5.json as below).
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site451 --out tests/data/hf_models \
      --only gemma3 gemma3-conditional gemma3-softcap --torch2-stand-ins
  # 2026-12-05: Gemma 1 and Mistral, the same way (then their config_transformers5.json as below, with the same --only).
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site447 --out tests/data/hf_models \
      --only gemma mistral mistral-window
  # 2026-12-05: Mixtral, the same way (then config_transformers5.json as below, with the same --only).
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site447 --out tests/data/hf_models \
      --only mixtral mixtral-window
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site451 --out tests/data/hf_models \
      --only qwen3_moe qwen3_moe-unnormalized --torch2-stand-ins
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site447 --out tests/data/hf_models --only qwen2_moe
  # config_transformers5.json: transformers 5's config classes only (on torch < 2.2 it disables its PyTorch part,
  # configs still work); its huggingface_hub 1.x needs Debian's python3-httpx.
  apt-get install python3-httpx; mkdir -p /tmp/hf/site5
  git --git-dir=$TF archive 70179949f7899e0ca235210f7188c6c9e0add77b src/transformers | tar -x -C /tmp/hf/site5 --strip-components=1
  git --git-dir=$HUB archive v1.2.1 src/huggingface_hub | tar -x -C /tmp/hf/site5 --strip-components=1
  /usr/bin/python3 bench/reference/hf_models_fixture.py --site /tmp/hf/site5 --out tests/data/hf_models \
      --config-only config_transformers5.json

Three transformers commits, all on main (no release tags in the clone used):
- 66ab300aaff9ef509f8736cf186ab9b6a0ef4f3b (2024-12-05, "Dev version" to 4.48.0.dev0): the tree the v4.47.0
  release was cut from. Every family but Qwen3 (which it predates). It runs on torch 1.13 as is, except that
  Gemma 2's generate() (HybridCache) calls torch._dynamo.mark_static_address, a torch-2 tag for CUDA graphs: that
  run takes `--torch2-stand-ins` (below).
- d1b92369ca193da49f9f7ecd01b08ece45c2c9aa (2025-04-05, "v4.52.0.dev0"): right after v4.51.0, the first release with
  Qwen3. It imports a few torch-2 names at module level, so `--torch2-stand-ins` adds them before the import. Qwen3
  and Gemma 3 (whose Gemma3ForConditionalGeneration there still nests the text model as `language_model`, saved as
  `language_model.model.*` like the Gemma 3 hub checkpoints; transformers 4.52 moved it to `model.language_model.*`
  with `lm_head.*` on top, the layout HfTransformersParityTests writes by renaming these tensors).
- 70179949f7899e0ca235210f7188c6c9e0add77b (2025-12-19, main at 5.0.0.dev0), with huggingface_hub v1.2.1: only
  `--config-only`, the same constructor arguments saved by transformers 5's config classes (rope_parameters,
  layer_types; Gemma 3 gets one rope_parameters set per layer type). Its GPTNeoXConfig then still lost rope_parameters' partial_rotary_factor on reload (reset to 0.25;
  fixed by transformers PR #44985, 2026-03), which does not affect what it writes.
`--torch2-stand-ins` adds, only where torch lacks them: an empty `torch.distributed.tensor` module (with a `DTensor`
class), `torch.compiler` (`disable` as a no-op decorator, `is_compiling`/`is_exporting` returning False),
`torch._dynamo` (`mark_static_address` doing nothing, `is_compiling` False) and `torch.float8_e4m3fn`/`float8_e5m2`
names (aliases of uint8 in a dtype table). None of them computes anything on the eager CPU path; transformers' own
files are unchanged. generate() gets `synced_gpus=False`: deciding it itself imports torch.distributed.fsdp, which
does not import on torch 1.13 under Python 3.11.
huggingface_hub v0.30.2 = 9255af95b4feeffc217a255cbd108c76b574e380 for the first two.
Each config.json's `transformers_version` says which tree wrote it.

`--site` is prepared by this script (`prepare_site`): transformers checks the installed versions of huggingface-hub
and safetensors at import, so it gets `.dist-info/METADATA` stubs for huggingface_hub (the source tree's version), for
a local `safetensors` stand-in, and for transformers 5, which requires tokenizers, one naming tokenizers 0.22.1 (the
`tokenizers` stand-in only satisfies imports). Debian bookworm has no python3-safetensors (trixie's is built for
Python 3.13), so the stand-in implements only `safetensors.torch.save_file` (and `storage_ptr`/`storage_size`, which
transformers' shared-tensor detection imports), in pure Python from the format's specification (8-byte little-endian
header length, JSON header of dtype/shape/data_offsets plus `__metadata__`, padded with spaces to a multiple of 8,
then the raw little-endian bytes, tensors ordered by alignment then name as the real writer does), and a reader of the
same format (`safe_open` with metadata/keys/get_slice/get_tensor, `safetensors.torch.load_file`) so that transformers'
own checkpoint reader (modeling_utils.load_state_dict) loads a safetensors fixture (gemma_scope_2_splice_fixture.py
does; this script only saves).
Everything else in `save_pretrained(safe_serialization=True)` (which tensors are written, shared-tensor removal,
the `{"format": "pt"}` metadata) is transformers' own. Folders marked `bin` are written with
`safe_serialization=False`: transformers' `torch.save` path, a real pytorch_model.bin (zip pickle).

(The olmo, olmo-clip, olmo2, olmo3, olmoe and olmoe-clip folders are not written here but by olmo_fixture.py, from a
transcription of transformers' OLMo/OLMo-2/OLMo 3/OLMoE code: add those families here and regenerate once a transformers tree is at hand.)
(Likewise the gpt_neo folder, by gpt_neo_fixture.py from a transcription of modeling_gpt_neo.py: on 2026-12-07 the
transformers snapshot was again over the 500 MB a fetch may bring, so this script's --only gpt_neo could not be run.)
(And the phi3, phi3-longrope, phi, gptj, opt and bloom folders, by phi3_fixture.py, phi_fixture.py, gptj_fixture.py,
opt_fixture.py and bloom_fixture.py from transcriptions of modeling_phi3.py, modeling_phi.py, modeling_gptj.py,
modeling_opt.py and modeling_bloom.py, for the same reason.)
Each folder holds config.json (+ generation_config.json), config_transformers5.json, the weights, and reference.npz:
  tokens [2, 12] int64, logits [2, 12, vocab] float32, hidden_{i} for i in 0..n_layers (HF `output_hidden_states`:
  hidden_{i} < n_layers is the residual stream entering layer i, TransformerLens blocks.i.hook_resid_pre; the last is
  after the final norm, ln_final.hook_normalized -- checked in this transformers version for every family here);
  padded_mask [2, 12] (row 0 left-padded by 3, row 1 right-padded by 2), padded_logits and padded_hidden_{i}: the same
  tokens run with that attention_mask and position_ids = max(cumsum(mask) - 1, 0), as generate() passes them;
  gen_mask [2, 8] (row 0 left-padded by 3), gen_tokens [2, 14] and gen_logits [2, 6, vocab]: greedy generate() (KV
  cache on; Gemma 2's HybridCache) from tokens[:, :8] with that mask, 6 new tokens, no EOS, and the unprocessed
  logits of each step; gen_forward_logits [2, 6, vocab]: the same step logits from one uncached forward over
  gen_tokens (mask extended with ones, generate()'s position ids). Gemma 3's generate() (HybridCache, also through
  Gemma3ForConditionalGeneration) runs on torch 1.13 with the stand-ins. They agree for every family but gemma2's padded
  row 0 from step 2 on: transformers 4.47's HybridCache sliced the sliding layers' mask wrongly once a padded
  sequence outgrew the window (fixed by transformers PR #35681, January 2025: run on the 4.51 tree with
  `--only gemma2 --torch2-stand-ins --out <scratch>`, generate() gives the same weights, tokens and uncached logits, and
  its step logits agree with this gen_forward_logits to 4.5e-6).
For the mixture-of-experts families it also prints, over the forward's tokens, the smallest gap between the router
probability of a token's last chosen expert and the next expert's (mixtral 0.0037, mixtral-window 0.0099, qwen3_moe
0.0002, qwen3_moe-unnormalized 0.0006): far above float32 noise (~1e-7), so no token's routing hangs on rounding.
Weights are re-drawn after HF's init (which leaves most of them near 0 and norms at 1): matrices N(0, 0.2²),
biases N(0, 0.1²), norm weights 1 + N(0, 0.2²) (Gemma's (1 + w) norms, q_norm/k_norm included: N(0, 0.2²)),
embeddings N(0, 1). A family's draws are seeded by its place in families(). gemma3-conditional is
Gemma3ForConditionalGeneration built from Gemma3Config(text_config=gemma3's arguments, a one-layer SigLIP
vision_config, mm_tokens_per_image 4); its vision tower and projector keep their own draws, its language_model gets
the state dict of the gemma3 model (rebuilt with gemma3's seed), and it is run on gemma3's tokens: the script prints
the largest difference between its text-only logits and gemma3's (0 on this machine).
"""
import argparse
import os
import sys

SAFETENSORS_SHIM = r'''
"""Stand-in for safetensors (fixture tooling only): save_file and a reader (safe_open, load_file) from the format's
specification; nothing else."""
__version__ = "0.4.5"


def safe_open(filename, framework="pt", device="cpu"):
    from safetensors.torch import SafeOpen
    return SafeOpen(filename, framework, device)
'''

SAFETENSORS_TORCH_SHIM = r'''
import json, struct
import torch

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def save_file(tensors, filename, metadata=None):
    items = sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in items:
        t = t.detach().contiguous().cpu()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(filename, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def storage_ptr(tensor):
    """Address of the tensor's storage (transformers.pytorch_utils.id_tensor_storage finds shared tensors with it)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except AttributeError:  # torch < 2
        return tensor.storage().data_ptr()


def storage_size(tensor):
    """Bytes of the tensor's storage."""
    try:
        return tensor.untyped_storage().nbytes()
    except AttributeError:  # torch < 2
        return tensor.storage().size() * tensor.element_size()


class _Slice:
    """What safe_open's get_slice returns, for transformers' loader: dtype name, shape, and indexing."""
    def __init__(self, tensor, dtype_name):
        self._tensor, self._dtype_name = tensor, dtype_name

    def get_dtype(self):
        return self._dtype_name

    def get_shape(self):
        return list(self._tensor.shape)

    def __getitem__(self, index):
        return self._tensor[index]


class SafeOpen:
    """safe_open(filename, framework="pt"): reads the whole file (8-byte little-endian header length, JSON header,
    raw little-endian bytes at each tensor's data_offsets after it) into CPU tensors."""
    def __init__(self, filename, framework="pt", device="cpu"):
        if framework != "pt" or str(device) not in ("cpu", "0", "None"):
            raise NotImplementedError(f"safetensors stand-in: framework {framework!r} on {device!r}")
        with open(filename, "rb") as f:
            data = f.read()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n].decode("utf-8"))
        self._metadata = header.pop("__metadata__", None)
        names = {v: k for k, v in _DTYPES.items()}
        self._slices = {}
        for name, info in header.items():
            begin, end = info["data_offsets"]
            raw = torch.frombuffer(bytearray(data[8 + n + begin:8 + n + end]), dtype=torch.uint8) if end > begin \
                else torch.empty(0, dtype=torch.uint8)
            self._slices[name] = _Slice(raw.view(names[info["dtype"]]).reshape(info["shape"]), info["dtype"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def metadata(self):
        return self._metadata

    def keys(self):
        return list(self._slices)

    def get_slice(self, name):
        return self._slices[name]

    def get_tensor(self, name):
        return self._slices[name][...].clone()


def load_file(filename, device="cpu"):
    with SafeOpen(filename, "pt", device) as f:
        return {k: f.get_tensor(k) for k in f.keys()}
'''


TOKENIZERS_STUB = r'''
"""Stand-in for tokenizers (fixture tooling only): transformers.integrations.ggml imports names from it at import time
(for GGUF tokenizer conversion, unused here); any name is a placeholder that fails when used. No .dist-info, so
transformers' is_tokenizers_available() stays False."""


class _Missing:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("tokenizers stand-in: not usable")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return type(name, (_Missing,), {})
'''


def prepare_site(site):
    """Version stubs transformers checks at import, and the safetensors stand-in (see the module docstring)."""
    def write(rel, text):
        path = os.path.join(site, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    if not os.path.isdir(os.path.join(site, "transformers")) or not os.path.isdir(os.path.join(site, "huggingface_hub")):
        sys.exit(f"{site}: extract transformers and huggingface_hub there first (see the docstring)")
    def version_of(package):
        with open(os.path.join(site, package, "__init__.py")) as f:
            return next(line.split('"')[1] for line in f if line.startswith("__version__"))
    hub = version_of("huggingface_hub")
    write(f"huggingface_hub-{hub}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: huggingface_hub\nVersion: {hub}\n")
    if int(version_of("transformers").split(".")[0]) >= 5:
        # transformers 5 requires tokenizers at import; only its config classes are used from that tree.
        write("tokenizers-0.22.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: tokenizers\nVersion: 0.22.1\n")
    write("safetensors-0.4.5.dist-info/METADATA", "Metadata-Version: 2.1\nName: safetensors\nVersion: 0.4.5\n")
    write("safetensors/__init__.py", SAFETENSORS_SHIM)
    write("safetensors/torch.py", SAFETENSORS_TORCH_SHIM)
    write("tokenizers/__init__.py", TOKENIZERS_STUB)
    write("tokenizers/models.py", TOKENIZERS_STUB)


def torch2_stand_ins(torch):
    """Module-level torch-2 names transformers 4.51 imports (see the docstring); only added where torch lacks them."""
    import types
    import torch.distributed
    if "torch.distributed.tensor" not in sys.modules:
        try:
            import torch.distributed.tensor  # noqa: F401
        except ImportError:
            m = types.ModuleType("torch.distributed.tensor")
            m.DTensor = type("DTensor", (torch.Tensor,), {})
            sys.modules["torch.distributed.tensor"] = m
            torch.distributed.tensor = m
    if not hasattr(torch, "compiler"):
        c = types.ModuleType("torch.compiler")
        c.disable = lambda fn=None, recursive=True: fn if fn is not None else (lambda f: f)
        c.is_compiling = lambda: False
        c.is_exporting = lambda: False
        sys.modules["torch.compiler"] = c
        torch.compiler = c
    if not hasattr(torch, "_dynamo"):
        d = types.ModuleType("torch._dynamo")
        d.mark_static_address = lambda t, guard=True: None
        d.is_compiling = lambda: False
        sys.modules["torch._dynamo"] = d
        torch._dynamo = d
    for name in ("float8_e4m3fn", "float8_e5m2"):
        if not hasattr(torch, name):
            setattr(torch, name, torch.uint8)


SEQ = 12
GEN_PROMPT, GEN_NEW = 8, 6


GEMMA3_TEXT = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=64, sliding_window=4,
                   sliding_window_pattern=3, rope_local_base_freq=100.0, rope_theta=1000000.0,
                   rope_scaling={"rope_type": "linear", "factor": 8.0}, query_pre_attn_scalar=24)


def families(tf):
    """name -> (config factory, format). Small: d_model 32, 2-4 layers, vocab 96-128."""
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}
    return {
        # GPT-2: learned positions, Conv1D, gelu_new, tied wte.
        "gpt2": (lambda: tf.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4), "safetensors"),
        # Pythia layout: rotary on a quarter of each head (16 · 0.25 = 4 dims), parallel attention + MLP; then the
        # sequential layout with half of each head rotated (8 dims) and another base.
        "gpt_neox-parallel": (lambda: tf.GPTNeoXConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=128, rotary_pct=0.25, max_position_embeddings=64,
                                               use_parallel_residual=True), "bin"),
        "gpt_neox-sequential": (lambda: tf.GPTNeoXConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=128, rotary_pct=0.5, rotary_emb_base=500,
                                                 max_position_embeddings=64, use_parallel_residual=False), "safetensors"),
        # Llama 3.x: GQA 4/2, head_dim 8, llama3 rope_scaling (wavelengths 2π kept, 20π smoothed, 200π, 2000π scaled).
        "llama3": (lambda: tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                  rope_theta=10000.0, rope_scaling=llama3), "safetensors"),
        # Llama with every optional bias, MHA, head_dim 12 ≠ 32/2, linear rope scaling under the legacy "type" key,
        # tied embeddings, torch.save format.
        "llama-bias-tied": (lambda: tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=2, head_dim=12, max_position_embeddings=64,
                                                   rope_scaling={"type": "linear", "factor": 2.0}, attention_bias=True,
                                                   mlp_bias=True, tie_word_embeddings=True, rms_norm_eps=1e-5), "bin"),
        # Qwen2: q/k/v biases (no o bias), GQA 4/2, rope_theta 1e6, tied (as the small Qwen2.5 models).
        "qwen2": (lambda: tf.Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 rope_theta=1000000.0, tie_word_embeddings=True), "bin"),
        # Qwen3: per-head q/k RMSNorm, head_dim 16 ≠ 32/4, GQA 4/2, untied.
        "qwen3": (lambda: tf.Qwen3Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                                 tie_word_embeddings=False), "safetensors"),
        # Gemma 2: 3 layers (0 and 2 local), sliding window 4 < 12 tokens, soft caps that bite, query_pre_attn_scalar
        # 24 ≠ head_dim 16, GQA 4/2, tied, (1 + w) norms, √d embedding scale.
        "gemma2": (lambda: tf.Gemma2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                                   sliding_window=4, query_pre_attn_scalar=24, attn_logit_softcapping=2.0,
                                   final_logit_softcapping=10.0), "safetensors"),
        # Gemma 3 (Gemma3ForCausalLM, as gemma-3-270m/1b): 4 layers with sliding_window_pattern 3 (layers 0, 1, 3 local,
        # 2 global), sliding window 4 < 12 tokens, per-head (1 + w) q_norm/k_norm, two RoPE bases (local 100 ≠ its
        # default 10000; global 1e6 with linear rope_scaling factor 8, global layers only), query_pre_attn_scalar
        # 24 ≠ head_dim 16, no soft caps (the Gemma 3 defaults), GQA 4/2, tied.
        "gemma3": (lambda: tf.Gemma3TextConfig(**GEMMA3_TEXT), "safetensors"),
        # The same text model inside Gemma3ForConditionalGeneration (as gemma-3-4b/12b/27b) with a one-layer SigLIP
        # vision tower; its language model gets the weights of "gemma3" (see main), so its logits are gemma3's.
        "gemma3-conditional": (lambda: tf.Gemma3Config(text_config=dict(GEMMA3_TEXT), vision_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
            patch_size=14), mm_tokens_per_image=4), "safetensors"),
        # Gemma 3 with both soft caps set (Gemma 3 has none by default), untied lm_head, pytorch_model.bin. transformers
        # applies only the final one: Gemma3Attention stores attn_logit_softcapping but never passes it to the attention
        # function (4.51, and still 5.0.dev0), so this reference pins that the attention cap is ignored.
        "gemma3-softcap": (lambda: tf.Gemma3TextConfig(**dict(GEMMA3_TEXT, attn_logit_softcapping=2.0, final_logit_softcapping=10.0,
                                                              tie_word_embeddings=False)), "bin"),
        # (Added 2026-12-05 after the others, so their seeds, which follow the order here, are unchanged.)
        # Gemma 1 (as google/gemma-2b): multi-query attention (1 kv head), head_dim 16 != 32/4, tied, (1 + w) norms,
        # sqrt(d) embedding scale, and hidden_act "gelu" with no hidden_activation as in the hub configs: transformers 4.47's
        # GemmaMLP ignores hidden_act then and applies gelu_pytorch_tanh, writing that choice back into the config, so the
        # saved config.json says hidden_activation "gelu_pytorch_tanh" (HfTransformersParityTests also loads the hub's form).
        "gemma": (lambda: tf.GemmaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
                                 hidden_act="gelu"), "safetensors"),
        # Mistral without a sliding window (as Mistral-7B-v0.2/v0.3 and Mistral-Nemo, whose head_dim 128 != 5120/32):
        # head_dim 16 != 32/4, GQA 4/2, rope_theta 1e6, untied.
        "mistral": (lambda: tf.MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                                     rope_theta=1000000.0, sliding_window=None), "safetensors"),
        # Mistral with a sliding window on every layer (as Mistral-7B-v0.1's 4096): window 5 < 12 tokens and < the 14 of
        # generate(), head_dim from hidden_size / num_attention_heads, GQA 4/2, torch.save format.
        "mistral-window": (lambda: tf.MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                            sliding_window=5), "bin"),
        # Mixtral (MixtralForCausalLM, 2026-12-05): Mistral attention (head_dim 16 != 32/4, GQA 4/2, rope_theta 1e6, no
        # window) and a sparse MoE block of 4 experts, top 2 per token (router softmax in float32, the two weights
        # renormalised); router_jitter_noise 0.1 set to show it is training-only (eval() skips it); untied.
        "mixtral": (lambda: tf.MixtralConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                                     rope_theta=1000000.0, sliding_window=None, num_local_experts=4,
                                     num_experts_per_tok=2, router_jitter_noise=0.1), "safetensors"),
        # Mixtral with a sliding window of 5 on every layer, head_dim from hidden_size / num_attention_heads, 3 experts
        # and top 1 (the renormalised weight is 1), torch.save format.
        "mixtral-window": (lambda: tf.MixtralConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                            sliding_window=5, num_local_experts=3, num_experts_per_tok=1), "bin"),
        # Qwen3-MoE (Qwen3MoeForCausalLM, 2026-12-05, transformers 4.51): Qwen3's attention (q/k norms, head_dim 16 != 32/4,
        # GQA 4/2) and a sparse MoE block as `mlp` of 6 experts of width moe_intermediate_size 24, top 2, norm_topk_prob
        # true (as Qwen3-30B-A3B), untied; intermediate_size 64 is for dense layers, which it has none of.
        "qwen3_moe": (lambda: tf.Qwen3MoeConfig(vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=24,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        max_position_embeddings=64, num_experts=6, num_experts_per_tok=2,
                                        norm_topk_prob=True, tie_word_embeddings=False), "safetensors"),
        # Qwen3-MoE with the config class's norm_topk_prob false (the top 3 of 4 experts keep their softmax weights),
        # head_dim from hidden_size / num_attention_heads, torch.save format.
        "qwen3_moe-unnormalized": (lambda: tf.Qwen3MoeConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                                     moe_intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                                                     num_key_value_heads=2, max_position_embeddings=64, num_experts=4,
                                                     num_experts_per_tok=3, tie_word_embeddings=False), "bin"),
        # Qwen2-MoE (Qwen2MoeForCausalLM, as Qwen1.5-MoE-A2.7B; transformers 4.47): Qwen2's attention (q/k/v biases, GQA
        # 4/2) and a sparse MoE block of 4 experts of width 24, top 2, norm_topk_prob false (the config default), plus a
        # shared expert of width 40 scaled by sigmoid(shared_expert_gate); untied.
        "qwen2_moe": (lambda: tf.Qwen2MoeConfig(vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=24,
                                        shared_expert_intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, max_position_embeddings=64, num_experts=4,
                                        num_experts_per_tok=2, tie_word_embeddings=False), "safetensors"),
    }


def redraw(model, torch, gemma):
    """Re-draws every parameter (see the docstring); tied weights are one parameter and drawn once."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name or name.split(".")[-2] in ("ln_1", "ln_2", "ln_f"):
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    p.normal_(0.0 if gemma else 1.0, 0.2)
            elif p.dim() == 1:
                p.normal_(0.0, 0.1)
            elif "embed" in name or name.endswith(("wte.weight", "wpe.weight")):
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--site", required=True, help="folder holding the transformers and huggingface_hub source trees")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--torch2-stand-ins", action="store_true", help="for transformers >= 4.51 on torch 1.13 (see above)")
    ap.add_argument("--config-only", metavar="FILE",
                    help="write only each family's config.json, from this tree's config classes, as <family>/FILE")
    a = ap.parse_args()
    prepare_site(a.site)
    sys.path.insert(0, a.site)
    import numpy as np
    import torch
    if a.torch2_stand_ins:
        torch2_stand_ins(torch)
    import transformers as tf

    torch.set_num_threads(1)
    print(f"transformers {tf.__version__} from {os.path.dirname(tf.__file__)}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}")
    if a.config_only:
        import tempfile
        for name, (make_config, _) in families(tf).items():
            if a.only and name not in a.only:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                make_config().save_pretrained(tmp)
                os.replace(os.path.join(tmp, "config.json"), os.path.join(a.out, name, a.config_only))
            print(f"{name}: {a.config_only}")
        return
    all_families = families(tf)
    names = list(all_families)

    def build(name):
        """The family's model with re-drawn weights, seeded by its place in families()."""
        make_config = all_families[name][0]
        config = make_config()
        config._attn_implementation = "eager"
        torch.manual_seed(1000 + names.index(name))
        model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
        redraw(model, torch, gemma=config.model_type in ("gemma", "gemma2", "gemma3", "gemma3_text"))
        return config, model

    for i, (name, (make_config, fmt)) in enumerate(all_families.items()):
        if a.only and name not in a.only:
            continue
        config, model = build(name)
        token_seed = 7 + i
        if name.endswith("-conditional"):
            # The causal family's text model, copied into the conditional model's language_model, and its tokens.
            base = name[: -len("-conditional")]
            _, causal = build(base)
            model.language_model.load_state_dict(causal.state_dict())
            token_seed = 7 + names.index(base)
        folder = os.path.join(a.out, name)
        os.makedirs(folder, exist_ok=True)
        for f in os.listdir(folder):
            os.remove(os.path.join(folder, f))
        model.save_pretrained(folder, safe_serialization=(fmt == "safetensors"))
        g = torch.Generator().manual_seed(token_seed)
        vocab = config.text_config.vocab_size if hasattr(config, "text_config") else config.vocab_size
        tokens = torch.randint(0, vocab, (2, SEQ), generator=g)
        router_logits = []
        gates = [m for n, m in model.named_modules() if n.endswith(("block_sparse_moe.gate", "mlp.gate"))]
        handles = [g.register_forward_hook(lambda m, i, o: router_logits.append(o)) for g in gates]
        with torch.no_grad():
            out = model(tokens, output_hidden_states=True, use_cache=False, return_dict=True)
        for h in handles:
            h.remove()
        if router_logits:
            # MoE: how far each token's k-th expert is from the next one (a tie would make routing float noise).
            k = config.num_experts_per_tok
            probs = torch.cat(router_logits).softmax(-1).sort(-1, descending=True).values
            print(f"{name}: smallest router probability gap between expert {k} and {k + 1} of a token "
                  f"{(probs[:, k - 1] - probs[:, k]).min().item():.4f}")
        if name.endswith("-conditional"):
            with torch.no_grad():
                alone = causal(tokens, use_cache=False, return_dict=True).logits
            print(f"{name}: text-only logits vs {base}'s Gemma3ForCausalLM: max |difference| "
                  f"{(out.logits - alone).abs().max().item():.3g} (|logits| up to {alone.abs().max().item():.3f})")
        # The same tokens as a padded batch: row 0 left-padded by 3, row 1 right-padded by 2, with the position ids
        # transformers' generate() passes for a padded batch (count of real tokens so far, minus one, at least 0).
        mask = torch.ones(2, SEQ, dtype=torch.long)
        mask[0, :3] = 0
        mask[1, SEQ - 2:] = 0
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            padded = model(tokens, attention_mask=mask, position_ids=positions, output_hidden_states=True,
                           use_cache=False, return_dict=True)
        arrays = {"tokens": tokens.numpy(), "logits": out.logits.float().numpy(), "padded_mask": mask.numpy(),
                  "padded_logits": padded.logits.float().numpy()}
        for j, h in enumerate(out.hidden_states):
            arrays[f"hidden_{j}"] = h.float().numpy()
        for j, h in enumerate(padded.hidden_states):
            arrays[f"padded_hidden_{j}"] = h.float().numpy()
        # Greedy generate() with its KV cache (Gemma 2: HybridCache) from the first 8 tokens, row 0 left-padded by 3:
        # 6 new tokens and the unprocessed logits each was chosen from. No EOS, so every row runs 6 steps.
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        gen_mask = torch.ones(2, GEN_PROMPT, dtype=torch.long)
        gen_mask[0, :3] = 0
        with torch.no_grad():
            gen = model.generate(tokens[:, :GEN_PROMPT], attention_mask=gen_mask, max_new_tokens=GEN_NEW, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True,
                                 synced_gpus=False)  # else it imports torch.distributed.fsdp, broken on torch 1.13 + Python 3.11
        gen_logits = torch.stack(gen.logits, 1).float()
        top2 = gen_logits.topk(2, dim=-1).values
        # The same steps without a cache: one forward over the generated sequence, with the mask extended over the new
        # tokens and generate()'s position ids, read at the positions that chose each new token.
        full_mask = torch.cat([gen_mask, torch.ones(2, GEN_NEW, dtype=torch.long)], 1)
        with torch.no_grad():
            whole = model(gen.sequences, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0),
                          use_cache=False, return_dict=True)
        gen_forward = whole.logits[:, GEN_PROMPT - 1:-1].float()
        arrays.update({"gen_mask": gen_mask.numpy(), "gen_tokens": gen.sequences.numpy(), "gen_logits": gen_logits.numpy(),
                       "gen_forward_logits": gen_forward.numpy()})
        consistent = (gen_logits - gen_forward).abs().amax(-1) / gen_forward.abs().max()
        np.savez(os.path.join(folder, "reference.npz"), **arrays)
        files = sorted(os.listdir(folder))
        print(f"{name}: {type(model).__name__}, {len(out.hidden_states)} hidden states, logits |max| "
              f"{out.logits.abs().max().item():.3f}, generate's smallest top-2 logit gap "
              f"{(top2[..., 0] - top2[..., 1]).min().item():.4f}, generate vs uncached forward per row and step (relative) "
              f"{consistent.numpy().round(7).tolist()}, files {files}")


if __name__ == "__main__":
    main()
