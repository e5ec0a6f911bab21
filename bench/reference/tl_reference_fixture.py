"""Writes tests/data/tl_reference/<family>.npz: TransformerLens's own HookedTransformer (v2.12.0, the last release that
runs on torch < 2.2) run on the tiny Hugging Face checkpoints of tests/data/hf_models, unprocessed and with
from_pretrained's default weight processing, for TransformerLensReferenceTests.

TransformerLens builds the model from the checkpoint's config.json (its convert_hf_model_config for a local folder) and
its state dict with its own per-family converter (transformer_lens/pretrained/weight_conversions), reading a stand-in
for the transformers model: an object tree with the checkpoint's tensors under their Hugging Face names (`model.layers[0].
self_attn.q_proj.weight`) and `.config`, the config.json as attributes. Then `load_and_process_state_dict` with either
no processing ("raw") or from_pretrained's defaults fold_ln, center_writing_weights, center_unembed and
fold_value_biases ("processed"), and `run_with_cache` on the checkpoint's own reference tokens (reference.npz).
patching_<family>.npz: patching.py's get_act_patch_* (every one but the *_every stacks) on the raw model, the reference
tokens' first row clean and second corrupted, metric the logit difference of two tokens at the last position.
analysis_<family>.npz: run_analysis below. circuits_<family>.npz: run_circuits (W_Q..b_O, QK/OV circuits, eigenvalues,
copying scores; processed, and refactored for GPT-2). generate_<family>.npz: run_generate (KV-cached greedy generate,
plain and left-padded, with a stub tokenizer carrying only padding_side and the pad/BOS ids).

How it was run (2026-12-08; Debian bookworm, PyTorch 1.13.1, Python 3.11.2, no PyPI):
  TL=<clone of TransformerLensOrg/TransformerLens>
  git --git-dir=$TL archive v2.12.0 transformer_lens | tar -x -C /tmp/tl212
  # TransformerLens's own fix of key/value-head patching in grouped-query models (#981, in v2.17.0), for patching.py:
  git --git-dir=$TL diff c4782d7f^ c4782d7f -- transformer_lens/patching.py | patch -p1 -d /tmp/tl212
  apt-get install python3-pandas
  /usr/bin/python3 bench/reference/tl_reference_fixture.py --tl /tmp/tl212 --models tests/data/hf_models \
      --out tests/data/tl_reference

What TransformerLens imports but these code paths do not use is stubbed, as in saelens_stubs.py: transformers (only
AutoConfig.from_pretrained, reading config.json with the config classes' attribute aliases such as GPT-2's hidden_size
for n_embd), datasets, huggingface_hub, wandb, tqdm, rich, pandas and the tokenizer classes; pandas is Debian's python3-pandas (1.5.3; patching.py's index frames); jaxtyping's Float/Int
subscript to torch.Tensor; typeguard_ignore and better_abc's abstract_attribute as TransformerLens uses them. No
tokenizer is loaded (the tokens are given). Every computation is TransformerLens's own.
"""
import argparse, json, os, struct, sys, types, shutil, tempfile

import numpy as np
import torch


class _Any:
    """Whatever a stubbed module is asked for: a class that can be subscripted, called and subclassed."""

    def __init__(self, *a, **k):
        pass

    def __class_getitem__(cls, item):
        return torch.Tensor

    def __call__(self, *a, **k):
        return self


class _Lenient(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any


def stub(name, **attrs):
    m = _Lenient(name)
    m.__dict__.update(attrs)
    m.__path__ = []
    sys.modules[name] = m
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, m)
    return m


# Attribute aliases of the transformers config classes (their attribute_map) for the families read here.
ALIASES = {
    "gpt2": {"hidden_size": "n_embd", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer",
             "max_position_embeddings": "n_positions", "n_ctx": "n_positions"},
    "gptj": {"hidden_size": "n_embd", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer",
             "max_position_embeddings": "n_positions"},
    "gpt_neo": {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"},
    "bloom": {"num_hidden_layers": "n_layer", "num_attention_heads": "n_head"},
}


class HfConfig:
    """config.json as attributes, with the config class's aliases."""

    def __init__(self, d):
        self.__dict__.update(d)
        for alias, name in ALIASES.get(d.get("model_type"), {}).items():
            if name in d and alias not in d:
                self.__dict__[alias] = d[name]

    def to_dict(self):
        return dict(self.__dict__)


def install_stubs(tl_root):
    class AutoConfig:
        @staticmethod
        def from_pretrained(path, **kwargs):
            with open(os.path.join(path, "config.json")) as f:
                return HfConfig(json.load(f))
    stub("transformers", AutoConfig=AutoConfig)
    stub("transformers.utils", is_bitsandbytes_available=lambda: False)
    stub("transformers.models")
    stub("datasets")
    stub("datasets.arrow_dataset")
    stub("datasets.load")
    stub("huggingface_hub")
    stub("huggingface_hub.utils")
    stub("wandb")
    stub("tqdm", tqdm=lambda it=None, *a, **k: it)
    stub("tqdm.auto", tqdm=lambda it=None, *a, **k: it)
    stub("rich", print=print)
    stub("sentencepiece")
    stub("accelerate")
    stub("typeguard", typeguard_ignore=lambda f: f)
    stub("better_abc", abstract_attribute=lambda obj=None: obj)
    stub("jaxtyping")

    class _Version:
        def __init__(self, v):
            self.v = tuple(int(p) for p in v.split("+")[0].split("a")[0].split(".")[:3] if p.isdigit())

        def __lt__(self, o):
            return self.v < o.v

        def __ge__(self, o):
            return self.v >= o.v
    stub("packaging")
    stub("packaging.version", parse=_Version)
    import typing_extensions
    if not hasattr(typing_extensions, "deprecated"):
        typing_extensions.deprecated = lambda *a, **k: (lambda f: f)
    pkg = stub("transformer_lens")
    pkg.__path__ = [os.path.join(tl_root, "transformer_lens")]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "F16": np.float16, "BF16": None}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] == "BF16":
            raw = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
            t = torch.from_numpy(raw.view(np.float32).copy())
        else:
            t = torch.from_numpy(np.frombuffer(data[a:b], dtype=dtypes[v["dtype"]]).copy())
        out[k] = t.reshape(v["shape"])
    return out


class Node:
    """The stand-in for a transformers module: children by attribute, numbered children by index."""

    def __getitem__(self, i):
        return getattr(self, str(i))

    def __len__(self):
        return sum(1 for k in self.__dict__ if k.isdigit())

    def parameters(self):
        for v in self.__dict__.values():
            if isinstance(v, Node):
                yield from v.parameters()
            elif isinstance(v, torch.nn.Parameter):
                yield v


def model_tree(tensors, config):
    root = Node()
    for key, t in tensors.items():
        node, parts = root, key.split(".")
        for p in parts[:-1]:
            if not hasattr(node, p):
                setattr(node, p, Node())
            node = getattr(node, p)
        setattr(node, parts[-1], torch.nn.Parameter(t, requires_grad=False))
    root.config = config
    return root


HOOKS = ["hook_embed", "hook_pos_embed", "embed.ln.hook_scale", "embed.ln.hook_normalized", "ln_final.hook_scale",
         "ln_final.hook_normalized"]
LAYER_HOOKS = ["hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
               "ln1.hook_scale", "ln1.hook_normalized", "ln2.hook_scale", "ln2.hook_normalized",
               "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_attn_scores", "attn.hook_pattern",
               "attn.hook_rot_q", "attn.hook_rot_k", "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"]


def overrides(config):
    """What TransformerLens v2.12's convert_hf_model_config takes from its per-name tables rather than from config.json
    (or leaves out), set from config.json as those tables set them for the real models."""
    c, o = config.__dict__, {}
    if c["model_type"] == "gpt_neox":
        o["parallel_attn_mlp"] = c["use_parallel_residual"]    # v2.12 sets True for every NeoX
        o["rotary_base"] = c.get("rotary_emb_base", c.get("rope_theta"))
    if c["model_type"] == "llama":
        o["rotary_base"] = c["rope_theta"]
        rs = c.get("rope_scaling")
        if rs and rs.get("rope_type") == "llama3":
            # TransformerLens's NTK-by-parts reads the original context length from n_ctx
            o.update(use_NTK_by_parts_rope=True, NTK_by_parts_factor=rs["factor"],
                     NTK_by_parts_low_freq_factor=rs["low_freq_factor"],
                     NTK_by_parts_high_freq_factor=rs["high_freq_factor"],
                     n_ctx=rs["original_max_position_embeddings"])
    if c["model_type"] == "phi3":
        d_head = c["hidden_size"] // c["num_attention_heads"]
        o["rotary_dim"] = int(c.get("partial_rotary_factor", 1.0) * d_head)
        if c.get("sliding_window"):
            o.update(use_local_attn=True, window_size=c["sliding_window"], attn_types=["local"] * c["num_hidden_layers"])
    return o


def hf_alibi_multipliers(n_heads, device=None):
    """transformers' build_alibi_tensor slopes (modeling_bloom.py): a power-of-two count's geometric sequence, then the
    odd powers of the next one's for the rest. TransformerLens's create_alibi_multipliers takes 2^(-8/n) for any n, the
    same for a power of two only."""
    import math
    closest = 2 ** math.floor(math.log2(n_heads))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base ** p for p in range(1, closest + 1)]
    if closest != n_heads:
        extra = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra ** p for p in range(1, 1 + 2 * min(closest, n_heads - closest), 2)]
    return torch.tensor(slopes, device=device)


def tl_model(folder, tensors_aliases, flags, refactor=False):
    """TransformerLens's HookedTransformer for the checkpoint in `folder`, loaded as above with processing `flags`."""
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens.HookedTransformer import HookedTransformer
    with open(os.path.join(folder, "config.json")) as f:
        config = HfConfig(json.load(f))
    tensors = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            tensors.update(read_safetensors(os.path.join(folder, name)))
        elif name.endswith(".bin"):
            tensors.update(torch.load(os.path.join(folder, name), map_location="cpu"))
    for alias, source in tensors_aliases.items():
        if alias not in tensors and source in tensors:
            tensors[alias] = tensors[source]
    # convert_hf_model_config decides some families by the name; a neutral folder name keeps it to config.json.
    tmp = tempfile.mkdtemp()
    local = os.path.join(tmp, "m")
    os.makedirs(local)
    shutil.copy(os.path.join(folder, "config.json"), local)
    try:
        cfg = loading.get_pretrained_model_config(local, fold_ln=flags["fold_ln"], device="cpu", dtype=torch.float32)
        cfg.tokenizer_name = None                              # the tokens are given
        for k, v in overrides(config).items():
            setattr(cfg, k, v)
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
        sd = loading.get_pretrained_state_dict(local, cfg, hf_model=model_tree(tensors, config), dtype=torch.float32)
        model.load_and_process_state_dict(sd, refactor_factored_attn_matrices=refactor, **flags)
    finally:
        shutil.rmtree(tmp)
    return model.eval()


RAW = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
PROCESSED = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True)

# patching.py's functions, by the names TransformerLensPatchingReferenceTests reads.
PATCHES = ["resid_pre", "resid_mid", "attn_out", "mlp_out", "attn_head_out_all_pos", "attn_head_q_all_pos",
           "attn_head_k_all_pos", "attn_head_v_all_pos", "attn_head_pattern_all_pos", "attn_head_out_by_pos",
           "attn_head_q_by_pos", "attn_head_k_by_pos", "attn_head_v_by_pos", "attn_head_pattern_by_pos",
           "attn_head_pattern_dest_src_pos"]


def run_patching(folder, tensors_aliases, answer, wrong):
    """patching.py's get_act_patch_* on the raw model: the checkpoint's reference tokens' first row is the clean prompt,
    the second the corrupted one; the metric is logits[0, -1, answer] − logits[0, -1, wrong] (the demos' logit diff)."""
    import transformer_lens.patching as patching
    model = tl_model(folder, tensors_aliases, RAW)
    tokens = torch.from_numpy(np.load(os.path.join(folder, "reference.npz"))["tokens"])
    clean, corrupted = tokens[:1], tokens[1:2]

    def metric(logits):
        return logits[0, -1, answer] - logits[0, -1, wrong]
    out = {"clean": clean.numpy(), "corrupted": corrupted.numpy(), "answer": np.array([answer, wrong])}
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        for name in PATCHES:
            if name == "resid_mid" and model.cfg.parallel_attn_mlp:
                continue
            out[name] = getattr(patching, "get_act_patch_" + name)(model, corrupted, cache, metric).numpy()
        out["clean_metric"] = np.array([float(metric(model(clean)))])
        out["corrupted_metric"] = np.array([float(metric(model(corrupted)))])
    return out


def run_analysis(folder, tensors_aliases, answers):
    """On the processed model (as the Exploratory Analysis Demo): direct logit attribution of each reference row's
    logits[-1, A] − logits[-1, B] (answers[row] = (A, B)), the demo's residual_stack_to_logit_diff over
    accumulated_resid(incl_mid=True), decompose_resid() and stack_head_results() (each stack's labels in a JSON file),
    each row alone, then averaged over the rows; and head_detector.detect_head's three built-in scores ("mul" and "abs") over two
    prompts of 6 random tokens repeated (seeded), each after token 1. Also neuron-level DLA (stack_neuron_results and each
    layer's b_out through the same apply_ln_to_stack), loss_fn(per_token=True) on the reference tokens and
    evals.induction_loss on 2 rows of 10 seeded ids."""
    import transformer_lens.head_detector as hd
    model = tl_model(folder, tensors_aliases, PROCESSED)
    tokens = torch.from_numpy(np.load(os.path.join(folder, "reference.npz"))["tokens"])
    out = {"tokens": tokens.numpy(), "answers": np.array(answers)}
    stacks, labels_of = {}, {}
    with torch.no_grad():
        for row in range(tokens.shape[0]):
            _, cache = model.run_with_cache(tokens[row:row + 1])
            direction = model.tokens_to_residual_directions(torch.tensor([answers[row][0]])) - \
                model.tokens_to_residual_directions(torch.tensor([answers[row][1]]))

            def to_diff(stack):
                scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
                return (scaled * direction).sum(-1)[:, 0]
            acc, acc_labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
            per_layer, layer_labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
            heads, head_labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
            # Neuron-level DLA: every neuron's W_out row times its hook_post (stack_neuron_results), and each layer's
            # b_out, which the neurons leave out (get_full_resid_decomposition puts it in its "bias").
            neuron_stack, neuron_labels = cache.stack_neuron_results(model.cfg.n_layers, pos_slice=-1, return_labels=True)
            b_out = model.b_out[:, None, None, :].expand(-1, 1, 1, -1)
            for name, values, labels in [("accumulated", to_diff(acc), acc_labels),
                                         ("per_layer", to_diff(per_layer), layer_labels),
                                         ("per_head", to_diff(heads), head_labels),
                                         ("per_neuron", to_diff(neuron_stack), neuron_labels),
                                         ("mlp_bias", to_diff(b_out).reshape(-1), [f"L{l}_b_out" for l in range(model.cfg.n_layers)])]:
                stacks.setdefault(name, []).append(values.numpy())
                labels_of[name] = list(labels)
            logits = model(tokens[row:row + 1])
            stacks.setdefault("logit_diff", []).append(
                np.array([float(logits[0, -1, answers[row][0]] - logits[0, -1, answers[row][1]])]))
    for name, rows in stacks.items():
        out[name] = np.mean(rows, axis=0)
    with torch.no_grad():
        # HookedTransformer.loss_fn(per_token=True) on the whole batch: −log p(next token) [batch, pos − 1].
        out["loss_per_token"] = model(tokens, return_type="loss", loss_per_token=True).numpy()
    # evals.induction_loss on given ids: its torch.randint(100, 20000, (batch, subseq_len)) (out of a tiny vocabulary)
    # answers with 2 rows of 10 seeded ids; it repeats them, puts the tokenizer's BOS (here 1) first and averages the
    # per-token loss over the second copy.
    import transformer_lens.evals as evals
    half = torch.randint(2, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(1))
    randint = torch.randint
    torch.randint = lambda low, high, size, *a, **k: half.clone() if (low, high) == (100, 20000) else randint(low, high, size, *a, **k)
    model.tokenizer = GenerationTokenizer("right")
    model.tokenizer.bos_token_id = 1
    try:
        out["induction_half"] = half.numpy()
        out["induction_loss"] = np.array([float(evals.induction_loss(model, batch_size=2, subseq_len=10, prepend_bos=True, device="cpu"))])
    finally:
        torch.randint, model.tokenizer = randint, None
    g = torch.Generator().manual_seed(0)
    prompts = [torch.cat([torch.tensor([1]), torch.randint(2, model.cfg.d_vocab, (6,), generator=g).repeat(2)])
               for _ in range(2)]
    out["detect_prompts"] = torch.stack(prompts).numpy()
    model.to_tokens = lambda seq, *a, **k: prompts[int(seq)].unsqueeze(0)   # the tokens stand for the strings
    with torch.no_grad():
        for head_type in ["previous_token_head", "duplicate_token_head", "induction_head"]:
            for measure in ["mul", "abs"]:
                # one prompt per call, then the mean: detect_head's own list form drops error_measure in its recursion
                out[f"detect_{head_type}_{measure}"] = torch.stack(
                    [hd.detect_head(model, str(i), head_type, error_measure=measure) for i in range(2)]).mean(0).numpy()
    return out, labels_of


def complex_parts(out, name, z):
    """A complex array as two float arrays (Npy reads no complex dtype)."""
    out[name + "_real"] = z.real.numpy()
    out[name + "_imag"] = z.imag.numpy()


def run_circuits(folder, tensors_aliases):
    """HookedTransformer's W_Q/W_K/W_V/W_O (and b_Q..b_O) properties, model.QK.AB, model.OV.AB, model.OV.eigenvalues and the
    Main Demo's OV copying score sum(λ).real / sum(|λ|) on the processed model; for GPT-2 also after
    refactor_factored_attn_matrices=True ("refactored/"), with its logits on the reference tokens."""
    tokens = torch.from_numpy(np.load(os.path.join(folder, "reference.npz"))["tokens"])
    out = {}
    settings = [("", PROCESSED, False)]
    if json.load(open(os.path.join(folder, "config.json")))["model_type"] == "gpt2":
        settings.append(("refactored/", PROCESSED, True))
    with torch.no_grad():
        for prefix, flags, refactor in settings:
            model = tl_model(folder, tensors_aliases, flags, refactor)
            for n in ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"]:
                out[prefix + n] = getattr(model, n).numpy()
            out[prefix + "QK_AB"] = model.QK.AB.numpy()
            out[prefix + "OV_AB"] = model.OV.AB.numpy()
            evals = model.OV.eigenvalues
            complex_parts(out, prefix + "OV_eigenvalues", evals)
            out[prefix + "OV_copying_score"] = (evals.sum(-1).real / evals.abs().sum(-1)).numpy()
            if refactor:
                out[prefix + "logits"] = model(tokens).numpy()
    return out


class GenerationTokenizer:
    """What generate() and its LocallyOverridenDefaults read of a tokenizer when given tokens: padding_side, and for
    left padding the pad id (leading pads are masked; -1: none) and a bos id that differs from it."""

    def __init__(self, padding_side, pad_token_id=-1):
        self.padding_side, self.pad_token_id, self.bos_token_id, self.eos_token_id = padding_side, pad_token_id, -1, None


def run_generate(folder, tensors_aliases, new_tokens, left_pad):
    """model.generate(tokens, max_new_tokens, do_sample=False, use_past_kv_cache=True, stop_at_eos=False) on the raw model
    from the reference tokens (and without the cache); with `left_pad` = (pad id, pads per row) also a left-padded batch
    (padding_side="left": leading pad ids are masked, positions, learned or rotary, count from each row's first real token)."""
    model = tl_model(folder, tensors_aliases, RAW)
    tokens = torch.from_numpy(np.load(os.path.join(folder, "reference.npz"))["tokens"])
    out = {"prompt": tokens.numpy()}
    with torch.no_grad():
        model.tokenizer = GenerationTokenizer("right")
        out["greedy"] = model.generate(tokens, max_new_tokens=new_tokens, do_sample=False, use_past_kv_cache=True,
                                       stop_at_eos=False, verbose=False).numpy()
        out["greedy_no_cache"] = model.generate(tokens, max_new_tokens=new_tokens, do_sample=False,
                                                use_past_kv_cache=False, stop_at_eos=False, verbose=False).numpy()
        if left_pad:
            pad, pads = left_pad
            rows = [torch.cat([torch.full((p,), pad), tokens[i, : tokens.shape[1] - p]]) for i, p in enumerate(pads)]
            padded = torch.stack(rows)
            out["padded_prompt"] = padded.numpy()
            out["padded_mask"] = (torch.arange(padded.shape[1])[None, :] >= torch.tensor(pads)[:, None]).long().numpy()
            model.tokenizer = GenerationTokenizer("left", pad)
            out["padded_greedy"] = model.generate(padded, max_new_tokens=new_tokens, do_sample=False, use_past_kv_cache=True,
                                                  stop_at_eos=False, verbose=False, padding_side="left").numpy()
            # A new token equal to the pad id would be masked as a leading pad in its KV-cached step: not a fair reference.
            assert pad not in out["padded_greedy"][:, padded.shape[1]:] and pad not in padded[:, max(pads)]
        model.tokenizer = None
    return out


def run_family(folder, tensors_aliases):
    tokens = torch.from_numpy(np.load(os.path.join(folder, "reference.npz"))["tokens"])
    out = {"tokens": tokens.numpy()}
    for setting, flags in [("raw", RAW), ("processed", PROCESSED)]:
        model = tl_model(folder, tensors_aliases, flags)
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens)
        out[f"{setting}/logits"] = logits.numpy()
        names = HOOKS + [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers) for h in LAYER_HOOKS]
        for n in names:
            if n in cache.cache_dict:
                out[f"{setting}/{n}"] = cache[n].numpy()
    return out


FAMILIES = {
    "gpt2": {"lm_head.weight": "transformer.wte.weight"},
    "gpt_neo": {"lm_head.weight": "transformer.wte.weight"},
    "gptj": {},
    "opt": {"lm_head.weight": "model.decoder.embed_tokens.weight"},
    "gpt_neox-parallel": {},
    "gpt_neox-sequential": {},
    "llama3": {"lm_head.weight": "model.embed_tokens.weight"},
    "mistral": {"lm_head.weight": "model.embed_tokens.weight"},
    "qwen2": {"lm_head.weight": "model.embed_tokens.weight"},
    "phi": {},
    "phi3": {"lm_head.weight": "model.embed_tokens.weight"},
    "bloom": {"lm_head.weight": "transformer.word_embeddings.weight"},
}


# Families whose activation patching is recorded (the two token ids of the logit diff): GPT-2 (one key-value head per
# head, a sequential block), NeoX (parallel attention and MLP: no resid_mid) and Llama 3 (grouped-query: 2 key-value heads for 4).
PATCHING = {"gpt2": (5, 17), "gpt_neox-parallel": (5, 17), "llama3": (5, 17)}

# Families whose direct logit attribution and head-detector scores are recorded (LayerNorm and RMSNorm, grouped-query).
ANALYSIS = ["gpt2", "llama3"]

# Families whose attention weights and QK/OV circuits are recorded, processed (LayerNorm, parallel NeoX, grouped-query
# RMSNorm, Phi's parallel block with partial rotary), GPT-2 also refactored.
CIRCUITS = ["gpt2", "gpt_neox-parallel", "llama3", "phi"]

# Families whose KV-cached greedy generation is recorded, with (pad id, leading pads per row) for a left-padded batch
# (learned positions: GPT-2; rotary: Llama 3, Phi-3 with a sliding window; ALiBi: BLOOM).
GENERATE = {"gpt2": (0, [0, 3]), "llama3": (0, [0, 3]), "bloom": (0, [0, 3]), "phi3": (0, [0, 3])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tl", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    install_stubs(a.tl)
    import transformer_lens.HookedTransformer  # noqa: F401  (in TransformerLens's own import order)
    from transformer_lens.components.abstract_attention import AbstractAttention
    # `import transformer_lens.utils as utils` inside an import cycle reads the attribute off the stub package before the
    # submodule is set on it, and gets the stub's placeholder: point such names at the loaded submodules.
    for mod in [m for k, m in list(sys.modules.items()) if k.startswith("transformer_lens.")]:
        for attr, value in list(vars(mod).items()):
            if value is _Any and "transformer_lens." + attr in sys.modules:
                setattr(mod, attr, sys.modules["transformer_lens." + attr])
    AbstractAttention.create_alibi_multipliers = staticmethod(hf_alibi_multipliers)
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    written = {}
    for fam, aliases in FAMILIES.items():
        if a.only and fam not in a.only:
            continue
        out = run_family(os.path.join(a.models, fam), aliases)
        np.savez_compressed(os.path.join(a.out, fam + ".npz"), **out)
        with open(os.path.join(a.models, fam, "config.json")) as f:
            written[fam] = overrides(HfConfig(json.load(f)))
        print(fam, len(out), "arrays")
    for fam, (answer, wrong) in PATCHING.items():
        if a.only and fam not in a.only:
            continue
        out = run_patching(os.path.join(a.models, fam), FAMILIES[fam], answer, wrong)
        np.savez_compressed(os.path.join(a.out, "patching_" + fam + ".npz"), **out)
        print("patching", fam, len(out), "arrays")
    for fam in ANALYSIS:
        if a.only and fam not in a.only:
            continue
        out, labels = run_analysis(os.path.join(a.models, fam), FAMILIES[fam], [(5, 17), (9, 3)])
        np.savez_compressed(os.path.join(a.out, "analysis_" + fam + ".npz"), **out)
        with open(os.path.join(a.out, "analysis_" + fam + "_labels.json"), "w") as f:
            json.dump(labels, f, indent=1)
        print("analysis", fam, len(out), "arrays")
    for fam in CIRCUITS:
        if a.only and fam not in a.only:
            continue
        out = run_circuits(os.path.join(a.models, fam), FAMILIES[fam])
        np.savez_compressed(os.path.join(a.out, "circuits_" + fam + ".npz"), **out)
        print("circuits", fam, len(out), "arrays")
    for fam, left_pad in GENERATE.items():
        if a.only and fam not in a.only:
            continue
        out = run_generate(os.path.join(a.models, fam), FAMILIES[fam], 8, left_pad)
        np.savez_compressed(os.path.join(a.out, "generate_" + fam + ".npz"), **out)
        print("generate", fam, len(out), "arrays")
    # The HookedTransformerConfig fields set from config.json by hand (overrides() above), for the reader.
    with open(os.path.join(a.out, "overrides.json"), "w") as f:
        json.dump(written, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
