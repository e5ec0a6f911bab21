"""Writes tests/data/peer_eval: activations, a ReLU SAE and the metrics SAELens and dictionary_learning report on them,
computed by those libraries' own evaluation code (their metric functions run unchanged; only the model, activation
store and SAE they are handed are stand-ins returning these tensors).

Run with Debian's python3-torch (PyTorch 1.13) from the repository root:
    /usr/bin/python3 bench/reference/peer_eval_fixture.py \
        --saelens /work/.mirror/jbloomAus+SAELens/repo --dictionary-learning /work/ref/dictionary_learning
SAELens is read at the mirror's HEAD (v6.18.0, sae_lens/evals.py); dictionary_learning from its checkout
(dictionary_learning/evaluation.py).

With --downstream DIR it instead runs SAELens's get_downstream_reconstruction_metrics (and so get_recons_loss and _kl)
on the dump that PeerDownstreamTests writes into DIR when SAESHARP_PEER_DOWNSTREAM_OUT=DIR is set: tokens, the clean
activation at ln_final.hook_normalized, W_U, b_U and the SAE. The stand-in model computes logits = hook(activation)
@ W_U + b_U (all of GPT-2 after that hook) and TransformerLens's per-token loss; it writes DIR/expected.json.
"""
import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--saelens", required=True)
p.add_argument("--dictionary-learning", required=True)
p.add_argument("--out", default="tests/data/peer_eval")
p.add_argument("--downstream")
a = p.parse_args()

# --- data: 3 batches of 4 windows of 16 tokens, d = 8, a residual-like mean; token 0 is "BOS" and is excluded ---
B, W, S, D, F, BOS = 3, 4, 16, 8, 24, 0
rng = np.random.default_rng(7)
tokens = rng.integers(1, 50, size=(B, W, S))
tokens[:, :, 0] = BOS
tokens[1, 2, 5] = BOS  # an excluded position inside a window
mu = rng.normal(size=D) * 3.0
x = (rng.normal(size=(B, W, S, D)) * 0.7 + mu).astype(np.float32)
w_enc = (rng.normal(size=(D, F)) * 0.4).astype(np.float32)
b_enc = (rng.normal(size=F) * 0.3 - 0.2).astype(np.float32)
b_enc[:3] = -100.0  # three latents that never fire
w_dec = (w_enc.T * 0.5 + rng.normal(size=(F, D)) * 0.05).astype(np.float32)
b_dec = (mu + rng.normal(size=D) * 0.1).astype(np.float32)
T = {k: torch.from_numpy(v) for k, v in dict(w_enc=w_enc, b_enc=b_enc, w_dec=w_dec, b_dec=b_dec).items()}


def encode(v):  # SAELens StandardSAE / dictionary_learning AutoEncoder with b_dec subtracted from the input
    return torch.relu((v - T["b_dec"]) @ T["w_enc"] + T["b_enc"])


def decode(f):
    return f @ T["w_dec"] + T["b_dec"]


# --- stubs for the modules evals.py imports but the metric functions do not use ---
def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


for n in ["pandas", "tqdm", "transformer_lens", "transformer_lens.hook_points", "sae_lens", "sae_lens.loading",
          "sae_lens.loading.pretrained_saes_directory", "sae_lens.saes", "sae_lens.saes.sae", "sae_lens.training",
          "sae_lens.training.activation_scaler", "sae_lens.training.activations_store", "sae_lens.util"]:
    stub(n)
sys.modules["tqdm"].auto = stub("tqdm.auto", tqdm=lambda it, **k: it)
sys.modules["transformer_lens"].HookedTransformer = object
sys.modules["transformer_lens.hook_points"].HookedRootModule = object
sys.modules["sae_lens.loading.pretrained_saes_directory"].get_pretrained_saes_directory = None
sys.modules["sae_lens.saes.sae"].SAE = sys.modules["sae_lens.saes.sae"].SAEConfig = type("SAE", (), {"__class_getitem__": classmethod(lambda c, k: c)})
sys.modules["sae_lens.training.activation_scaler"].ActivationScaler = object
sys.modules["sae_lens.training.activations_store"].ActivationsStore = object
sys.modules["sae_lens.util"].extract_stop_at_layer_from_tlens_hook_name = lambda h: None
sys.modules["sae_lens.util"].get_special_token_ids = None

src = subprocess.run(["git", "-C", a.saelens, "show", "HEAD:sae_lens/evals.py"], capture_output=True, text=True, check=True).stdout
evals = types.ModuleType("sae_lens.evals")
evals.__file__ = "/nonexistent/sae_lens/evals.py"
exec(compile(src, "sae_lens/evals.py", "exec"), evals.__dict__)


class Store:
    def __init__(self):
        self.i = 0

    def get_batch_tokens(self, n):
        t = torch.from_numpy(tokens[self.i])
        self.i += 1
        return t


class Model:
    """run_with_cache returns the fixed activations of the batch whose tokens it is given."""

    def run_with_cache(self, batch_tokens, names_filter, **k):
        i = next(j for j in range(B) if torch.equal(torch.from_numpy(tokens[j]), batch_tokens))
        return None, {names_filter[0]: torch.from_numpy(x[i])}


class Scaler:
    scale = unscale = staticmethod(lambda v: v)


class Sae:
    cfg = types.SimpleNamespace(metadata=types.SimpleNamespace(hook_name="blocks.0.hook_resid_pre", hook_head_index=None), d_sae=F)
    device = "cpu"
    encode = staticmethod(encode)
    decode = staticmethod(decode)


def saelens(n_batches):
    m, fm = evals.get_sparsity_and_variance_metrics(
        Sae(), Model(), Store(), Scaler(), n_batches=n_batches, compute_l2_norms=True, compute_sparsity_metrics=True,
        compute_variance_metrics=True, compute_featurewise_density_statistics=True, eval_batch_size_prompts=W,
        model_kwargs={}, ignore_tokens=[BOS])
    return {**m, "feature_density": fm["feature_density"]}


if a.downstream:
    dd = Path(a.downstream)
    L = {n: torch.from_numpy(np.load(dd / f"{n}.npy")) for n in
         ["tokens", "normalized", "w_u", "b_u", "w_enc", "b_enc", "w_dec", "b_dec"]}
    T.update(w_enc=L["w_enc"], b_enc=L["b_enc"], w_dec=L["w_dec"], b_dec=L["b_dec"])
    WINDOWS_PER_BATCH, DS_BOS = 3, 49
    Sae.cfg = types.SimpleNamespace(metadata=types.SimpleNamespace(hook_name="ln_final.hook_normalized", hook_head_index=None), d_sae=L["w_enc"].shape[1])

    class DsStore:
        def __init__(self):
            self.i = 0

        def get_batch_tokens(self, n):
            t = L["tokens"][self.i:self.i + n]
            self.i += n
            return t

    class DsModel:
        """GPT-2 after ln_final.hook_normalized: the unembedding; TransformerLens's per-token loss."""

        def _rows(self, toks):
            i = next(j for j in range(0, len(L["tokens"]), WINDOWS_PER_BATCH) if torch.equal(L["tokens"][j:j + len(toks)], toks))
            return L["normalized"][i:i + len(toks)].clone()

        def _out(self, act, toks):
            logits = act @ L["w_u"] + L["b_u"]
            lp = torch.nn.functional.log_softmax(logits, dim=-1)
            return logits, -lp[..., :-1, :].gather(dim=-1, index=toks[..., 1:, None])[..., 0]

        def __call__(self, toks, return_type, loss_per_token, **k):
            return self._out(self._rows(toks), toks)

        def run_with_hooks(self, toks, return_type, fwd_hooks, loss_per_token, **k):
            (name, fn), = fwd_hooks
            assert name == "ln_final.hook_normalized"
            return self._out(fn(self._rows(toks), hook=None), toks)

    n_batches = len(L["tokens"]) // WINDOWS_PER_BATCH
    m = evals.get_downstream_reconstruction_metrics(Sae(), DsModel(), DsStore(), Scaler(), compute_kl=True, compute_ce_loss=True,
                                                    n_batches=n_batches, eval_batch_size_prompts=WINDOWS_PER_BATCH, ignore_tokens=[DS_BOS])
    (dd / "expected.json").write_text(json.dumps({"saelens_version": "6.18.0", **m}, indent=1))
    print(json.dumps(m, indent=1))
    sys.exit(0)

# --- dictionary_learning's evaluate() on the kept rows as one batch ---
dl_root = Path(a.dictionary_learning) / "dictionary_learning"
pkg = stub("dictionary_learning")
pkg.__path__ = [str(dl_root)]
stub("dictionary_learning.buffer", ActivationBuffer=type("A", (), {}), NNsightActivationBuffer=type("N", (), {}))
stub("dictionary_learning.config", DEBUG=False)
stub("nnsight", LanguageModel=object)
dl = types.ModuleType("dictionary_learning.evaluation")
dl.__package__ = "dictionary_learning"
dl.__file__ = str(dl_root / "evaluation.py")
exec(compile((dl_root / "evaluation.py").read_text(), "dictionary_learning/evaluation.py", "exec"), dl.__dict__)


class Dictionary:
    dict_size, activation_dim = F, D

    def __call__(self, v, output_features=False):
        f = encode(v)
        return (decode(f), f) if output_features else decode(f)


keep = tokens != BOS
rows = torch.from_numpy(x[keep])                                   # [kept, D], in batch order
rows_b0 = torch.from_numpy(x[0][keep[0]])
dl_all = dl.evaluate(Dictionary(), iter([rows]), n_batches=1)
dl_b0 = dl.evaluate(Dictionary(), iter([rows_b0]), n_batches=1)
dl_3 = dl.evaluate(Dictionary(), iter([torch.from_numpy(x[b][keep[b]]) for b in range(B)]), n_batches=3)

out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
for name, arr in dict(x=x[keep], w_enc=w_enc, b_enc=b_enc, w_dec=w_dec, b_dec=b_dec,
                      f=encode(rows).numpy(), rows_per_batch=keep.reshape(B, -1).sum(1).astype(np.int64)).items():
    np.save(out / f"{name}.npy", arr)
expected = {
    "saelens_version": "6.18.0",
    "saelens_1_batch": saelens(1),
    "saelens_3_batches": saelens(B),
    "dictionary_learning_all_rows_1_batch": dl_all,
    "dictionary_learning_batch0": dl_b0,
    "dictionary_learning_3_batches": dl_3,
}
(out / "expected.json").write_text(json.dumps(expected, indent=1))
print(json.dumps({k: {m: v for m, v in d.items() if m != "feature_density"} for k, d in expected.items() if isinstance(d, dict)}, indent=1))
