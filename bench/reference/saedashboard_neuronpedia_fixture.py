"""Writes tests/data/neuronpedia/expected/: what SAEDashboard's NeuronpediaRunner writes (batch-N.json,
skipped_indexes.json) for the hand-made `sae features` folder tests/data/neuronpedia/features/, for
NeuronpediaExport to be compared with.

  /usr/bin/python3 bench/reference/saedashboard_neuronpedia_fixture.py \
      --features tests/data/neuronpedia/features --vocab tests/data/gpt2-tokenizer/vocab.json \
      --w-dec tests/data/neuronpedia/w_dec.json --out tests/data/neuronpedia/expected

Source: SAEDashboard (jbloomAus/SAEDashboard, MIT licence) at commit db4839a41116d729fc9f43c1878e7b8b157748ea.
Copied verbatim: sae_dashboard/neuronpedia/neuronpedia_dashboard.py (the dataclasses), neuronpedia_runner_config.py,
and from neuronpedia_converter.py the classes NpEncoder, FeatureProcessor and NeuronpediaConverter; from
neuronpedia_runner.py HTML_ANOMALIES, the body of get_vocab_dict, get_feature_batches, record_skipped_features and
the batch-file write; from data_parsing_fns.py add_neuron_alignment_data and from utils_fns.py the class TopK (the
neuron alignment table), with TransformerLens's utils.to_numpy and SAELens 6.37.6's SAE.fold_W_dec_norm (its W_dec
lines), which the runner calls first for every architecture but topk and temporal. SAEDashboard cannot be installed here (no PyPI; it needs transformer_lens), so its imports of
model classes are replaced by stand-ins; numpy and torch come from Debian (python3-numpy 1.24, python3-torch 1.13).

What is not SAEDashboard's own code is the adapter at the end (marked): it builds, from the features folder, the
FeatureData the runner would have had in hand, using SAEDashboard's own title formats and histogram formula
(sequence_data_generator.get_indices_dict, sae_vis_runner's ACTIVATIONS title, utils_fns.HistogramData.from_data)
and SaeSharp's documented mapping (docs/features.md, "Neuronpedia export"): activations and logit values are float32
as torch holds them; intervals' CONTAINS is count / counted tokens; an example's window position 0 is left out as the
runner's sequences start at position 1; correlation tables are absent. The neuron alignment table is computed by
SAEDashboard's code from the decoder tests/data/neuronpedia/w_dec.json (--w-dec), and the script checks that
features.jsonl's `neuron_alignment` (what `sae features` writes) holds the same float32 values where it is present.
It also writes expected/neuron_alignment.json: the table of every decoder row, with and without fold_W_dec_norm,
unrounded (float32 values), for FeatureWeights.NeuronAlignments.
"""
import argparse
import json
import os
import types
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch


# ---- stand-ins for the model / data classes the verbatim code names in annotations and isinstance checks ----
HookedTransformer = PreTrainedModel = FeatureData = Any


class SaeVisData:
    def __init__(self, feature_data_dict):
        self.feature_data_dict = feature_data_dict


class VectorVisData:
    pass


# ---- verbatim: sae_dashboard/neuronpedia/neuronpedia_dashboard.py ----
EQUAL_VALUE_TOLERANCE = 0.1


# function to check that each value in a list is a float
def check_list_floats(li: list[float]):
    for i in range(len(li)):
        if not isinstance(li[i], float):
            return False
    return True


def equalish(a: Any, b: Any, tol: float = EQUAL_VALUE_TOLERANCE):
    assert type(a) == type(b), f"types do not match: {type(a)} and {type(b)}"

    if (
        isinstance(a, list)
        and isinstance(b, list)
        and check_list_floats(a)
        and check_list_floats(b)
    ):
        close = np.allclose(a, b, tol)
        if not close:
            print(f"Does not match within tolerance: {a} and {b} with tolerance {tol}")
        return close
    elif isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < tol
    else:
        return a == b


@dataclass
class NeuronpediaDashboardActivation:
    def __init__(
        self,
        bin_min: float = 0,
        bin_max: float = 0,
        bin_contains: float = 0,
        tokens: list[str] = [],
        values: list[float] = [],
        qualifying_token_index: int = 0,
        dfa_values: Optional[List[float]] = None,
        dfa_maxValue: Optional[float] = None,
        dfa_targetIndex: Optional[int] = None,
    ):
        self.bin_min = bin_min
        self.bin_max = bin_max
        self.bin_contains = bin_contains
        self.tokens = tokens
        self.values = values
        self.qualifying_token_index = qualifying_token_index
        self.dfa_values = dfa_values
        self.dfa_maxValue = dfa_maxValue
        self.dfa_targetIndex = dfa_targetIndex

    def __eq__(self, other: Any):
        if equalish(self.bin_min, other.bin_min) is False:
            print(f"bin_min does not match: {self.bin_min} and {other.bin_min}")
            return False
        if equalish(self.bin_max, other.bin_max) is False:
            print(f"bin_max does not match: {self.bin_max} and {other.bin_max}")
            return False
        if equalish(self.bin_contains, other.bin_contains, 0.001) is False:
            print(
                f"bin_contains does not match: {self.bin_contains} and {other.bin_contains}"
            )
            return False
        if self.tokens != other.tokens:
            print(f"tokens does not match: {self.tokens} and {other.tokens}")
            return False
        if equalish(self.values, other.values, 0.5) is False:
            print(f"values does not match: {self.values} and {other.values}")
            return False
        return True

    def to_dict(self):
        res = {
            "bin_min": self.bin_min,
            "bin_max": self.bin_max,
            "bin_contains": self.bin_contains,
            "tokens": self.tokens,
            "values": self.values,
            "qualifying_token_index": self.qualifying_token_index,
        }
        if self.dfa_values is not None:
            res["dfa_values"] = self.dfa_values
        if self.dfa_maxValue is not None:
            res["dfa_maxValue"] = self.dfa_maxValue
        if self.dfa_targetIndex is not None:
            res["dfa_targetIndex"] = self.dfa_targetIndex

        return res


@dataclass
class NeuronpediaDashboardFeature:
    def __init__(
        self,
        feature_index: int = 0,
        neuron_alignment_indices: list[int] = [],
        neuron_alignment_values: list[float] = [],
        neuron_alignment_l1: list[float] = [],
        correlated_neurons_indices: list[int] = [],
        correlated_neurons_l1: list[float] = [],
        correlated_neurons_pearson: list[float] = [],
        correlated_features_indices: list[int] = [],
        correlated_features_l1: list[float] = [],
        correlated_features_pearson: list[float] = [],
        neg_str: list[str] = [],
        neg_values: list[float] = [],
        pos_str: list[str] = [],
        pos_values: list[float] = [],
        frac_nonzero: float = 0,
        freq_hist_data_bar_values: list[float] = [],
        freq_hist_data_bar_heights: list[float] = [],
        logits_hist_data_bar_heights: list[float] = [],
        logits_hist_data_bar_values: list[float] = [],
        n_prompts_total: int = 0,
        n_tokens_in_prompt: int = 0,
        dataset: str = "",
        activations: list[dict[str, Any]] = [],
        decoder_weights_dist: list[float] = [],
        vector: list[float] = [],
    ):
        self.feature_index = feature_index
        self.neuron_alignment_indices = neuron_alignment_indices
        self.neuron_alignment_values = neuron_alignment_values
        self.neuron_alignment_l1 = neuron_alignment_l1
        self.correlated_neurons_indices = correlated_neurons_indices
        self.correlated_neurons_l1 = correlated_neurons_l1
        self.correlated_neurons_pearson = correlated_neurons_pearson
        self.correlated_features_indices = correlated_features_indices
        self.correlated_features_l1 = correlated_features_l1
        self.correlated_features_pearson = correlated_features_pearson
        self.neg_str = neg_str
        self.neg_values = neg_values
        self.pos_str = pos_str
        self.pos_values = pos_values
        self.frac_nonzero = frac_nonzero
        self.freq_hist_data_bar_values = freq_hist_data_bar_values
        self.freq_hist_data_bar_heights = freq_hist_data_bar_heights
        self.logits_hist_data_bar_heights = logits_hist_data_bar_heights
        self.logits_hist_data_bar_values = logits_hist_data_bar_values
        self.n_prompts_total = n_prompts_total
        self.n_tokens_in_prompt = n_tokens_in_prompt
        self.dataset = dataset
        self.activations: list[NeuronpediaDashboardActivation] = []
        self.decoder_weights_dist = decoder_weights_dist
        self.vector = vector
        for activation in activations:
            self.activations.append(NeuronpediaDashboardActivation(**activation))

    def __eq__(self, other: Any):
        if self.feature_index != other.feature_index:
            print(
                f"feature_index does not match: {self.feature_index} and {other.feature_index}"
            )
            return False
        if self.neuron_alignment_indices != other.neuron_alignment_indices:
            print(
                f"neuron_alignment_indices does not match: {self.neuron_alignment_indices} and {other.neuron_alignment_indices}"
            )
            return False
        if (
            equalish(self.neuron_alignment_values, other.neuron_alignment_values)
            is False
        ):
            print(equalish(self.neuron_alignment_values, other.neuron_alignment_values))
            print(
                f"neuron_alignment_values does not match: {self.neuron_alignment_values} and {other.neuron_alignment_values}"
            )
            return False
        if equalish(self.neuron_alignment_l1, other.neuron_alignment_l1) is False:
            print(
                f"neuron_alignment_l1 does not match: {self.neuron_alignment_l1} and {other.neuron_alignment_l1}"
            )
            return False

        if self.neg_str != other.neg_str:
            print(f"neg_str does not match: {self.neg_str} and {other.neg_str}")
            return False
        if equalish(self.neg_values, other.neg_values) is False:
            print(
                f"neg_values does not match: {self.neg_values} and {other.neg_values}"
            )
            return False
        if self.pos_str != other.pos_str:
            print(f"pos_str does not match: {self.pos_str} and {other.pos_str}")
            return False
        if equalish(self.pos_values, other.pos_values) is False:
            print(
                f"pos_values does not match: {self.pos_values} and {other.pos_values}"
            )
            return False
        if equalish(self.frac_nonzero, other.frac_nonzero, 0.001) is False:
            print(
                f"frac_nonzero does not match: {self.frac_nonzero} and {other.frac_nonzero}"
            )
            return False
        if (
            equalish(self.freq_hist_data_bar_values, other.freq_hist_data_bar_values)
            is False
        ):
            print(
                f"freq_hist_data_bar_values does not match: {self.freq_hist_data_bar_values} and {other.freq_hist_data_bar_values}"
            )
            return False
        if self.freq_hist_data_bar_heights != other.freq_hist_data_bar_heights:
            print(
                f"freq_hist_data_bar_heights does not match: {self.freq_hist_data_bar_heights} and {other.freq_hist_data_bar_heights}"
            )
            return False
        if self.logits_hist_data_bar_heights != other.logits_hist_data_bar_heights:
            print(
                f"logits_hist_data_bar_heights does not match: {self.logits_hist_data_bar_heights} and {other.logits_hist_data_bar_heights}"
            )
            return False
        if (
            equalish(
                self.logits_hist_data_bar_values, other.logits_hist_data_bar_values
            )
            is False
        ):
            print(
                f"logits_hist_data_bar_values does not match: {self.logits_hist_data_bar_values} and {other.logits_hist_data_bar_values}"
            )
            return False
        if self.n_prompts_total != other.n_prompts_total:
            print(
                f"n_prompts_total does not match: {self.n_prompts_total} and {other.n_prompts_total}"
            )
            return False
        if self.n_tokens_in_prompt != other.n_tokens_in_prompt:
            print(
                f"n_tokens_in_prompt does not match: {self.n_tokens_in_prompt} and {other.n_tokens_in_prompt}"
            )
            return False
        if self.dataset != other.dataset:
            print(f"dataset does not match: {self.dataset} and {other.dataset}")
            return False
        for i, activation in enumerate(self.activations):
            if activation != other.activations[i]:
                print("".join(other.activations[i].tokens))
                print(" ==================================== ")
                print("".join(activation.tokens))
                print(
                    f"activation {i} does not match: {activation} and {other.activations[i]}"
                )
                return False
        if self.decoder_weights_dist != other.decoder_weights_dist:
            print(
                f"decoder_weights_dist does not match: {self.decoder_weights_dist} and {other.decoder_weights_dist}"
            )
            return False
        return True

    def to_dict(self):
        return {
            "feature_index": self.feature_index,
            "neuron_alignment_indices": self.neuron_alignment_indices,
            "neuron_alignment_values": self.neuron_alignment_values,
            "neuron_alignment_l1": self.neuron_alignment_l1,
            "correlated_neurons_indices": self.correlated_neurons_indices,
            "correlated_neurons_l1": self.correlated_neurons_l1,
            "correlated_neurons_pearson": self.correlated_neurons_pearson,
            "correlated_features_indices": self.correlated_features_indices,
            "correlated_features_l1": self.correlated_features_l1,
            "correlated_features_pearson": self.correlated_features_pearson,
            "neg_str": self.neg_str,
            "neg_values": self.neg_values,
            "pos_str": self.pos_str,
            "pos_values": self.pos_values,
            "frac_nonzero": self.frac_nonzero,
            "freq_hist_data_bar_values": self.freq_hist_data_bar_values,
            "freq_hist_data_bar_heights": self.freq_hist_data_bar_heights,
            "logits_hist_data_bar_heights": self.logits_hist_data_bar_heights,
            "logits_hist_data_bar_values": self.logits_hist_data_bar_values,
            "n_prompts_total": self.n_prompts_total,
            "n_tokens_in_prompt": self.n_tokens_in_prompt,
            "dataset": self.dataset,
            "decoder_weights_dist": self.decoder_weights_dist,
            "activations": [activation.to_dict() for activation in self.activations],
            "vector": self.vector,
        }


# TODO: just add the NPRunnerConfig instead


@dataclass
class NeuronpediaDashboardBatch:
    def __init__(
        self,
        model_id: str = "",
        layer: int = 0,
        sae_set: str = "",
        sae_id_suffix: Optional[str] = None,
        features: list[dict[str, Any]] = [],
        # settings: NeuronpediaDashboardSettings = NeuronpediaDashboardSettings(),
    ):
        self.model_id = model_id
        self.layer = layer
        self.sae_set = sae_set
        self.sae_id_suffix = sae_id_suffix
        self.features: list[NeuronpediaDashboardFeature] = []
        for feature in features:
            self.features.append(NeuronpediaDashboardFeature(**feature))
        # self.settings = settings

    def __eq__(self, other: Any):
        if self.model_id != other.model_id:
            print(f"model_id does not match: {self.model_id} and {other.model_id}")
            return False
        if self.layer != other.layer:
            print(f"layer does not match: {self.layer} and {other.layer}")
            return False
        if self.sae_set != other.sae_set:
            print(f"sae_set does not match: {self.sae_set} and {other.sae_set}")
            return False
        if self.sae_id_suffix != other.sae_id_suffix:
            print(
                f"sae_id_suffix does not match: {self.sae_id_suffix} and {other.sae_id_suffix}"
            )
            return False
        for i, feature in enumerate(self.features):
            if feature != other.features[i]:
                print(
                    f"feature {feature.feature_index} does not match: {feature} and {other.features[i]}"
                )
                return False
        # if self.settings != other.settings:
        #     print(f"settings does not match: {self.settings} and {other.settings}")
        #     return False
        return True

    def to_dict(self):
        return {
            "model_id": self.model_id,
            "layer": self.layer,
            "sae_set": self.sae_set,
            "sae_id_suffix": self.sae_id_suffix,
            "features": [feature.to_dict() for feature in self.features],
            # "settings": self.settings.to_dict(),
        }


# ---- verbatim: sae_dashboard/neuronpedia/neuronpedia_runner_config.py ----
DEFAULT_SPARSITY_THRESHOLD = -6


@dataclass
class NeuronpediaRunnerConfig:
    sae_set: str
    sae_path: str
    outputs_dir: str
    np_sae_id_suffix: Optional[str] = (
        None  # this is the __[np_sae_id_suffix] after the SAE Set
    )
    np_set_name: Optional[str] = None
    from_local_sae: bool = False
    sparsity_threshold: int = DEFAULT_SPARSITY_THRESHOLD
    huggingface_dataset_path: str = ""

    # ACTIVATION STORE PARAMETERS
    # token pars
    n_prompts_total: int = 24576
    n_tokens_in_prompt: int = 128
    n_prompts_in_forward_pass: int = 32

    # batching
    n_features_at_a_time: int = 128
    quantile_feature_batch_size: int = 64
    start_batch: int = 0
    end_batch: Optional[int] = None

    # quantiles
    n_quantiles: int = 5
    top_acts_group_size: int = 20
    quantile_group_size: int = 5

    # additional calculations
    use_dfa: bool = False

    model_dtype: str = ""
    sae_dtype: str = ""
    model_id: Optional[str] = None
    layer: Optional[int] = None

    sae_device: str | None = None
    activation_store_device: str | None = None
    model_device: str | None = None
    model_n_devices: int | None = None
    use_wandb: bool = False

    shuffle_tokens: bool = True
    prefix_str: Optional[str] = None
    suffix_str: Optional[str] = None
    ignore_positions: Optional[List[int]] = None
    prepend_bos: Optional[bool] = None  # Override SAE default if specified

    # If set, filter out activations at token positions whose hidden-state norm
    # exceeds `median_norm * ignore_high_activation_norm_multiple` (computed
    # per forward-pass minibatch). Useful for models like Qwen which exhibit
    # random, unpredictable high-norm activation "sinks" hundreds of tokens
    # into the sequence that otherwise dominate max activating examples and
    # correlation statistics. A typical value is 10. None disables filtering.
    ignore_high_activation_norm_multiple: Optional[float] = None

    # If True, replace transformer blocks above the SAE's hook layer with
    # ``nn.Identity()`` after loading the model. This frees VRAM since those
    # blocks are never executed (the forward pass already uses
    # ``stop_at_layer=hook_layer + 1`` in the TransformerLens wrapper). The
    # embedding, ``ln_final``, and ``unembed`` (``W_U``) layers are preserved
    # for logit-direction calculations. Defaults to False to preserve the
    # previous behaviour; enable to reduce memory usage when generating
    # dashboards for SAEs on early/middle layers of large models.
    free_unused_model_layers: bool = False

    hf_model_path: Optional[str] = None

    # If true, we load a Transcoder (inherits from SAE) instead of a standard SAE.
    use_transcoder: bool = False

    # If true, we load a SkipTranscoder (inherits from Transcoder) instead.
    use_skip_transcoder: bool = False

    # CLT (Cross-Layer Transcoder) specific parameters
    use_clt: bool = False
    clt_layer_idx: Optional[int] = None
    clt_dtype: str = ""
    # Optional filename for CLT weights (supports .safetensors or .pt). If empty, default search order will be used.
    clt_weights_filename: str = ""

    # Optional sae_lens loader/converter name used when loading SAEs from
    # HuggingFace (passed to SAE.from_pretrained's `converter` arg). Accepts a
    # short registry name from sae_lens' NAMED_PRETRAINED_SAE_LOADERS
    # (e.g. "dictionary_learning_1", "gemma_2", "sparsify",
    # "connor_rob_hook_z") or the full function name exported by
    # sae_lens.loading.pretrained_sae_loaders (e.g.
    # "dictionary_learning_sae_huggingface_loader_1"). If None, sae_lens infers
    # the loader from the release.
    sae_converter_name: Optional[str] = None

    # HuggingFace mode - use HuggingFace Transformers directly instead of TransformerLens
    use_huggingface: bool = False

    # ------------------------------------------------------------------
    # Neuronpedia bulk-import export options
    # ------------------------------------------------------------------
    # When True, after generating ``batch-*.json`` files, the runner will
    # additionally convert them to the Neuronpedia bulk-import directory
    # layout (release.jsonl / model.jsonl / sourceset.jsonl / source.jsonl
    # plus gzipped per-batch features and activations). See
    # ``sae_dashboard.neuronpedia.neuronpedia_export`` for details.
    output_neuronpedia_exports: bool = False

    # Where to write the converted exports. Defaults to
    # ``{outputs_dir}/../neuronpedia_exports`` when None.
    neuronpedia_exports_dir: Optional[str] = None

    # Author / release metadata. Required when ``output_neuronpedia_exports``
    # is True.
    neuronpedia_creator_name: Optional[str] = None
    neuronpedia_creator_id: Optional[str] = None  # falls back to env var
    neuronpedia_release_id: Optional[str] = None
    neuronpedia_release_title: Optional[str] = None
    neuronpedia_release_url: Optional[str] = None
    neuronpedia_source_set_description: Optional[str] = None

    # Override the model name written to the export. Used as ``Model.id``,
    # the export ``{model_name}/`` subdirectory, and ``modelId`` on every
    # Feature / Activation / Source / SourceSet row. Defaults to the
    # TransformerLens model name auto-detected from the SAE config.
    neuronpedia_model_name: Optional[str] = None

    # Override values for the Source row. Defaults to ``sae_set`` /
    # ``sae_path`` respectively when None.
    neuronpedia_hf_weights_repo_id: Optional[str] = None
    neuronpedia_hf_weights_path: Optional[str] = None

    # If True, zero out activations on tokens matching ``<bos>`` /
    # ``<|endoftext|>`` in the exported activations. Useful for models like
    # Gemma 2 that weren't trained with a BOS token.
    neuronpedia_zero_out_bos_token: bool = False


@dataclass
class NeuronpediaVectorRunnerConfig:
    # Vector loading parameters
    outputs_dir: str  # Where to save outputs
    vector_names: Optional[List[str]] = None  # Names for each vector (optional)

    # Token generation parameters
    n_prompts_total: int = 24576
    n_tokens_in_prompt: int = 128
    n_prompts_in_forward_pass: int = 32
    prepend_bos: bool = True  # TODO: eventually include this in vector set export
    prepend_chat_template_text: Optional[str] = None

    # Batching parameters
    n_vectors_at_a_time: int = 128  # Similar to n_features_at_a_time
    quantile_vector_batch_size: int = 64
    start_batch: int = 0
    end_batch: Optional[int] = None

    # additional calculations
    use_dfa: bool = False
    include_original_vectors_in_output: bool = False
    activation_thresholds: Optional[dict[int, float | int]] = None
    # Quantile parameters for activation analysis
    n_quantiles: int = 5
    top_acts_group_size: int = 30
    quantile_group_size: int = 5

    # Device and dtype settings
    model_dtype: str = ""
    vector_dtype: str = ""
    model_id: Optional[str] = None
    layer: Optional[int] = None
    activation_store_device: str | None = None
    model_device: Optional[str] = None
    vector_device: Optional[str] = None
    model_n_devices: Optional[int] = None

    # Dataset parameters
    huggingface_dataset_path: str = ""

    # Additional settings
    use_wandb: bool = False
    shuffle_tokens: bool = True
    prefix_str: Optional[str] = None
    suffix_str: Optional[str] = None
    ignore_positions: Optional[List[int]] = None


# ---- verbatim: sae_dashboard/neuronpedia/neuronpedia_converter.py (from the type alias on) ----
# Type alias for model types
ModelType = Union[HookedTransformer, PreTrainedModel]


class NpEncoder(json.JSONEncoder):
    def default(self, o: Any):
        if isinstance(o, NeuronpediaDashboardBatch):
            return o.to_dict()
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return super(NpEncoder, self).default(o)


class FeatureProcessor:
    """
    Class for processing feature data.
    """

    @staticmethod
    def round_list(to_round: List[float]) -> List[float]:
        """Round a list of floats to 5 decimal places."""
        return list(np.round(to_round, 5))

    @staticmethod
    def ensure_list(input_value: Any) -> List[Any]:
        """Ensure the input is a list."""
        return [input_value] if not isinstance(input_value, list) else input_value

    @staticmethod
    def to_str_tokens_safe(
        model: ModelType, vocab_dict: Dict[int, str], tokens: Any
    ) -> Any:
        """Convert tokens to string tokens safely."""
        OUT_OF_RANGE_TOKEN = "<|outofrange|>"

        # Get vocab size from the appropriate source
        if hasattr(model, "cfg") and hasattr(model.cfg, "d_vocab"):
            # TransformerLens model
            vocab_max_index = model.cfg.d_vocab - 1
        elif hasattr(model, "config") and hasattr(model.config, "vocab_size"):
            # HuggingFace model
            vocab_max_index = model.config.vocab_size - 1
        else:
            # Fallback to vocab_dict size
            vocab_max_index = len(vocab_dict) - 1

        if isinstance(tokens, int):
            return (
                OUT_OF_RANGE_TOKEN if tokens > vocab_max_index else vocab_dict[tokens]
            )

        if isinstance(tokens, list):
            tokens = np.array(tokens)

        str_tokens = [
            vocab_dict[t] if t <= vocab_max_index else OUT_OF_RANGE_TOKEN
            for t in tokens.flatten()
        ]

        return np.reshape(str_tokens, tokens.shape).tolist()


class NeuronpediaConverter:
    """
    Class for converting SaeVisData to Neuronpedia format.
    """

    @staticmethod
    def convert_to_np_json(
        model: ModelType,
        vis_data: Union[SaeVisData, VectorVisData],
        np_cfg: Union[NeuronpediaRunnerConfig, NeuronpediaVectorRunnerConfig],
        vocab_dict: Dict[int, str],
        original_vectors: Optional[torch.Tensor] = None,
    ) -> str:
        """
        Convert SaeVisData to Neuronpedia JSON format.

        Args:
            sae_data (SaeVisData): The SAE visualization data.
            np_cfg (NeuronpediaRunnerConfig): Configuration for Neuronpedia runner.
            vocab_dict (Dict[int, str]): Dictionary mapping token IDs to strings.

        Returns:
            str: JSON string representation of the feature data.
        """
        if isinstance(vis_data, VectorVisData):
            data_dict = vis_data.vector_data_dict
        else:  # SaeVisData
            data_dict = vis_data.feature_data_dict

        features_outputs = NeuronpediaConverter._process_features(
            model,
            data_dict,
            np_cfg,
            vocab_dict,
            original_vectors,
        )
        batch_data = NeuronpediaConverter._create_batch_data(np_cfg, features_outputs)
        return json.dumps(batch_data, cls=NpEncoder)

    @staticmethod
    def _process_features(
        model: ModelType,
        data_dict: Dict[int, FeatureData],  # Update to use data_dict directly
        np_cfg: Union[NeuronpediaRunnerConfig, NeuronpediaVectorRunnerConfig],
        vocab_dict: Dict[int, str],
        original_vectors: Optional[torch.Tensor] = None,
    ) -> List[NeuronpediaDashboardFeature]:
        """Process all features and create NeuronpediaDashboardFeature objects."""
        features_outputs = []
        for feature_index, feature_data in data_dict.items():
            feature_output = NeuronpediaDashboardFeature()
            feature_output.feature_index = feature_index

            NeuronpediaConverter._process_feature_tables(feature_output, feature_data)
            NeuronpediaConverter._process_feature_logits(
                feature_output, feature_data, model, vocab_dict
            )
            NeuronpediaConverter._process_feature_histograms(
                feature_output, feature_data
            )
            NeuronpediaConverter._process_feature_activations(
                feature_output, feature_data, model, vocab_dict
            )
            NeuronpediaConverter._process_feature_decoder_weight_dist(
                feature_output, feature_data
            )

            feature_output.n_prompts_total = np_cfg.n_prompts_total
            feature_output.n_tokens_in_prompt = np_cfg.n_tokens_in_prompt
            feature_output.dataset = np_cfg.huggingface_dataset_path

            if original_vectors is not None:
                feature_output.vector = original_vectors[feature_index].tolist()

            features_outputs.append(feature_output)
        return features_outputs

    @staticmethod
    def _process_feature_tables(
        feature_output: NeuronpediaDashboardFeature, feature_data: FeatureData
    ) -> None:
        """Process feature tables data and update the feature output."""
        if feature_data.feature_tables_data:
            feature_output.neuron_alignment_indices = (
                feature_data.feature_tables_data.neuron_alignment_indices
            )
            feature_output.neuron_alignment_values = FeatureProcessor.round_list(
                feature_data.feature_tables_data.neuron_alignment_values
            )
            feature_output.neuron_alignment_l1 = FeatureProcessor.round_list(
                feature_data.feature_tables_data.neuron_alignment_l1
            )
            feature_output.correlated_neurons_indices = (
                feature_data.feature_tables_data.correlated_neurons_indices
            )
            feature_output.correlated_neurons_l1 = FeatureProcessor.round_list(
                feature_data.feature_tables_data.correlated_neurons_cossim
            )
            feature_output.correlated_neurons_pearson = FeatureProcessor.round_list(
                feature_data.feature_tables_data.correlated_neurons_pearson
            )
            feature_output.correlated_features_indices = (
                feature_data.feature_tables_data.correlated_features_indices
            )
            feature_output.correlated_features_l1 = FeatureProcessor.round_list(
                feature_data.feature_tables_data.correlated_features_cossim
            )
            feature_output.correlated_features_pearson = FeatureProcessor.round_list(
                feature_data.feature_tables_data.correlated_features_pearson
            )

    @staticmethod
    def _process_feature_logits(
        feature_output: NeuronpediaDashboardFeature,
        feature_data: FeatureData,
        model: ModelType,
        vocab_dict: Dict[int, str],
    ) -> None:
        """Process feature logits data and update the feature output."""
        top_logits = FeatureProcessor.round_list(
            feature_data.logits_table_data.top_logits
        )
        bottom_logits = FeatureProcessor.round_list(
            feature_data.logits_table_data.bottom_logits
        )

        feature_output.neg_str = FeatureProcessor.ensure_list(
            FeatureProcessor.to_str_tokens_safe(
                model, vocab_dict, feature_data.logits_table_data.bottom_token_ids
            )
        )
        feature_output.neg_values = bottom_logits
        feature_output.pos_str = FeatureProcessor.ensure_list(
            FeatureProcessor.to_str_tokens_safe(
                model, vocab_dict, feature_data.logits_table_data.top_token_ids
            )
        )
        feature_output.pos_values = top_logits

    @staticmethod
    def _process_feature_histograms(
        feature_output: NeuronpediaDashboardFeature, feature_data: FeatureData
    ) -> None:
        """Process feature histogram data and update the feature output."""
        if feature_data.acts_histogram_data.title:
            feature_output.frac_nonzero = (
                float(
                    feature_data.acts_histogram_data.title.split(" = ")[1].split("%")[0]
                )
                / 100
            )
        else:
            feature_output.frac_nonzero = 0

        freq_hist_data = feature_data.acts_histogram_data
        feature_output.freq_hist_data_bar_values = FeatureProcessor.round_list(
            freq_hist_data.bar_values
        )
        feature_output.freq_hist_data_bar_heights = FeatureProcessor.round_list(
            freq_hist_data.bar_heights
        )

        logits_hist_data = feature_data.logits_histogram_data
        feature_output.logits_hist_data_bar_heights = FeatureProcessor.round_list(
            logits_hist_data.bar_heights
        )
        feature_output.logits_hist_data_bar_values = FeatureProcessor.round_list(
            logits_hist_data.bar_values
        )

    @staticmethod
    def _process_feature_decoder_weight_dist(
        feature_output: NeuronpediaDashboardFeature,
        feature_data: FeatureData,
    ) -> None:
        """Process feature logits data and update the feature output."""
        if feature_data.decoder_weights_data:
            feature_output.decoder_weights_dist = (
                feature_data.decoder_weights_data.allocation_by_head
            )

    @staticmethod
    def _process_feature_activations(
        feature_output: NeuronpediaDashboardFeature,
        feature_data: FeatureData,
        model: ModelType,
        vocab_dict: Dict[int, str],
    ) -> None:
        """Process feature activations data and update the feature output."""
        activations = []
        for sequence_group in feature_data.sequence_data.seq_group_data:
            bin_min, bin_max, bin_contains = (
                NeuronpediaConverter._parse_sequence_group_title(sequence_group.title)
            )

            for sequence in sequence_group.seq_data:
                if (
                    sequence.top_token_ids is not None
                    and sequence.bottom_token_ids is not None
                    and sequence.top_logits is not None
                    and sequence.bottom_logits is not None
                ):
                    activation = NeuronpediaConverter._create_activation(
                        sequence,
                        bin_min,
                        bin_max,
                        bin_contains,
                        feature_data,
                        model,
                        vocab_dict,
                        feature_output.feature_index,
                    )
                    activations.append(activation)

        feature_output.activations = activations

    @staticmethod
    def _parse_sequence_group_title(title: str) -> tuple[float, float, float]:
        """Parse the sequence group title to extract bin information."""
        bin_min, bin_max, bin_contains = 0, 0, 0
        if "TOP ACTIVATIONS" in title:
            bin_min, bin_max, bin_contains = -1, 99, -1
            try:
                bin_max = float(title.split(" = ")[-1])
            except ValueError:
                print(f"Error parsing top activations: {title}")
        elif "INTERVAL" in title:
            try:
                split = title.split("<br>")
                first_split = split[0].split(" ")
                bin_min = float(first_split[1])
                bin_max = float(first_split[-1])
                second_split = split[1].split(" ")
                bin_contains = float(second_split[-1].rstrip("%")) / 100
            except ValueError:
                print(f"Error parsing interval: {title}")
        return bin_min, bin_max, bin_contains

    @staticmethod
    def _create_activation(
        sequence: Any,
        bin_min: float,
        bin_max: float,
        bin_contains: float,
        feature_data: FeatureData,
        model: ModelType,
        vocab_dict: Dict[int, str],
        feature_index: int,
        activation_thresholds: Optional[dict[int, float | int]] = None,
    ) -> NeuronpediaDashboardActivation:
        """Create a NeuronpediaDashboardActivation object from sequence data."""
        activation = NeuronpediaDashboardActivation()
        activation.bin_min = bin_min
        activation.bin_max = bin_max
        activation.bin_contains = bin_contains

        if feature_data.dfa_data is not None:
            if sequence.original_index in feature_data.dfa_data:
                dfa_data = feature_data.dfa_data[sequence.original_index]
                # Round DFA values to three decimal points
                activation.dfa_values = [
                    round(v, 3) for v in dfa_data["dfaValues"][1:]
                ]  # Skip BOS token
                activation.dfa_maxValue = round(
                    max(activation.dfa_values), 3
                )  # Recalculate max to skip BOS token
                activation.dfa_targetIndex = (
                    dfa_data["dfaTargetIndex"] - 1
                )  # Adjust for BOS token
            else:
                # print(
                #     f"Warning: DFA data not found for sequence index {sequence.original_index}"
                # )
                activation.dfa_values = []
                activation.dfa_maxValue = 0
                activation.dfa_targetIndex = -1

        activation.tokens = [
            FeatureProcessor.to_str_tokens_safe(model, vocab_dict, token_id)
            for token_id in sequence.token_ids
        ]
        activation.values = FeatureProcessor.round_list(sequence.feat_acts)
        if activation_thresholds is not None:
            threshold = activation_thresholds[feature_index]
            activation.values = [
                v if v >= threshold else 0.0 for v in activation.values
            ]

        activation.qualifying_token_index = sequence.qualifying_token_index - 1

        return activation

    @staticmethod
    def _create_batch_data(
        np_cfg: Union[NeuronpediaRunnerConfig, NeuronpediaVectorRunnerConfig],
        features_outputs: List[NeuronpediaDashboardFeature],
    ) -> NeuronpediaDashboardBatch:
        """Create a NeuronpediaDashboardBatch object from processed features."""
        batch_data = NeuronpediaDashboardBatch()

        if isinstance(np_cfg, NeuronpediaRunnerConfig):
            # Handle SAE case
            if np_cfg.model_id is not None and np_cfg.layer is not None:
                batch_data.model_id = np_cfg.model_id
                batch_data.layer = np_cfg.layer
            batch_data.sae_set = (
                np_cfg.sae_set if not np_cfg.np_set_name else np_cfg.np_set_name
            )
            if np_cfg.np_sae_id_suffix is not None:
                batch_data.sae_id_suffix = np_cfg.np_sae_id_suffix
        else:
            # Handle Vector case
            if np_cfg.model_id is not None and np_cfg.layer is not None:
                batch_data.model_id = np_cfg.model_id
                batch_data.layer = np_cfg.layer
            # For vectors, we'll use the vector names if provided, otherwise a default name
            vector_set_name = (
                f"vector_set_{','.join(np_cfg.vector_names)}"
                if np_cfg.vector_names
                else "vector_set"
            )
            batch_data.sae_set = vector_set_name
            # No sae_id_suffix needed for vectors

        batch_data.features = features_outputs
        return batch_data


# ---- verbatim: sae_dashboard/neuronpedia/neuronpedia_runner.py (constants) ----
RUN_SETTINGS_FILE = "run_settings.json"
OUT_OF_RANGE_TOKEN = "<|outofrange|>"

# TODO: add more anomalies here
HTML_ANOMALIES = {
    "âĢĶ": "—",
    "âĢĵ": "–",
    "âĢľ": "“",
    "âĢĿ": "”",
    "âĢĺ": "‘",
    "âĢĻ": "’",
    "âĢĭ": " ",  # TODO: this is actually zero width space
    "Ġ": " ",
    "Ċ": "\n",
    "ĉ": "\t",
}


class RunnerParts:
    """NeuronpediaRunner's methods used here, verbatim but for `self.tokenizer.vocab` / `self.model.cfg.d_vocab`
    (set by the caller) and the tokenizer / model set-up they need."""

    def __init__(self, cfg, tokenizer_vocab, d_vocab, n_features):
        self.cfg = cfg
        self.tokenizer = types.SimpleNamespace(vocab=tokenizer_vocab)
        self.model = types.SimpleNamespace(cfg=types.SimpleNamespace(d_vocab=d_vocab))
        self.model_id = cfg.model_id
        self.layer = cfg.layer
        self.n_features = n_features

    def get_feature_batches(self):
        # divide into batches
        feature_idx = torch.tensor(self.target_feature_indexes)
        n_subarrays = np.ceil(len(feature_idx) / self.cfg.n_features_at_a_time).astype(
            int
        )
        feature_idx = np.array_split(feature_idx, n_subarrays)
        feature_idx = [x.tolist() for x in feature_idx]

        return feature_idx

    def record_skipped_features(self):
        # write dead into file so we can create them as dead in Neuronpedia
        skipped_indexes = set(range(self.n_features)) - set(self.target_feature_indexes)
        skipped_indexes_json = json.dumps(
            {
                "model_id": self.model_id,
                "layer": str(self.layer),
                "sae_set": self.cfg.sae_set,
                "log_sparsity": self.cfg.sparsity_threshold,
                "skipped_indexes": list(skipped_indexes),
            }
        )
        with open(f"{self.cfg.outputs_dir}/skipped_indexes.json", "w") as f:
            f.write(skipped_indexes_json)

    def get_vocab_dict(self) -> Dict[int, str]:
        # get vocab - use tokenizer which is set for both HuggingFace and TransformerLens
        vocab_dict: dict = self.tokenizer.vocab  # type: ignore
        new_vocab_dict = {}
        # Replace substrings in the keys of vocab_dict using HTML_ANOMALIES
        for k, v in vocab_dict.items():  # type: ignore
            modified_key = k
            for anomaly in HTML_ANOMALIES:
                modified_key = modified_key.replace(anomaly, HTML_ANOMALIES[anomaly])
            new_vocab_dict[v] = modified_key
        vocab_dict = new_vocab_dict

        # Get vocab size from the appropriate source
        vocab_size = self.model.cfg.d_vocab

        # pad with blank tokens to the actual vocab size
        for i in range(len(vocab_dict), vocab_size):
            vocab_dict[i] = OUT_OF_RANGE_TOKEN
        return vocab_dict


# ---- verbatim: transformer_lens/utilities/tensors.py to_numpy (the branches used here), as `utils` ----
def _to_numpy(tensor):
    if isinstance(tensor, np.ndarray):
        return tensor
    elif isinstance(tensor, (torch.Tensor, torch.nn.parameter.Parameter)):
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.to(torch.float32)
        return tensor.numpy()


utils = types.SimpleNamespace(to_numpy=_to_numpy)
Arr = np.ndarray
class _Subscriptable:
    def __getitem__(self, item):
        return Any


Bool = Float = _Subscriptable()
Tensor = torch.Tensor


# ---- verbatim: sae_dashboard/utils_fns.py class TopK ----
class TopK:
    """
    This function implements a version of torch.topk over the last dimension. It offers the following:

        (1) Nicer type signatures (the default obj returned by torck.topk isn't well typed)
        (2) Helper functions for indexing & other standard tensor operations like .ndim, .shape, etc.
        (3) An efficient topk calculation, which doesn't bother applying it to the zero elements of a tensor.
    """

    values: Arr
    indices: Arr

    def __init__(
        self,
        tensor: Float[Tensor, "... d"],
        k: int,
        largest: bool = True,
        tensor_mask: Bool[Tensor, "..."] | None = None,
    ):
        self.k = k
        self.largest = largest
        self.values, self.indices = self.topk(tensor, tensor_mask)

    def __getitem__(self, item: int) -> "TopK":
        new_topk = TopK.__new__(TopK)
        new_topk.k = self.k
        new_topk.largest = self.largest
        new_topk.values = self.values[item]
        new_topk.indices = self.indices[item]
        return new_topk

    def __len__(self) -> int:
        return len(self.values)

    @property
    def ndim(self) -> int:
        return self.values.ndim

    @property
    def shape(self) -> tuple[int]:
        return tuple(self.values.shape)  # type: ignore

    def numel(self) -> int:
        return self.values.size

    def topk(  # type: ignore
        self,
        tensor: Float[Tensor, "... d"],
        tensor_mask: Bool[Tensor, "..."] | None = None,
    ) -> tuple[Arr, Arr]:
        """
        This is an efficient version of `torch.topk(..., dim=-1)`. It saves time by only doing the topk calculation over
        the bits of `tensor` where `tensor_mask=True`. This is useful when `tensor` is very sparse, e.g. it has shape
        (batch, seq, d_vocab) and its elements are zero if the corresponding token has feature activation zero. In this
        case, we don't want to waste time taking topk over a tensor of zeros.
        """
        # If no tensor mask is provided, then we just return the topk values and indices
        if tensor_mask is None or not tensor_mask.any():
            k = min(self.k, tensor.shape[-1])
            topk = tensor.topk(k=k, largest=self.largest)
            return utils.to_numpy(topk.values), utils.to_numpy(topk.indices)

        # Get the topk of the tensor, but only computed over the values of the tensor which are nontrivial
        assert (
            tensor_mask.shape == tensor.shape[:-1]
        ), "Error: unexpected shape for tensor mask."
        tensor_nontrivial_values = tensor[tensor_mask]  # shape [rows d]
        k = min(self.k, tensor_nontrivial_values.shape[-1])
        k = self.k
        topk = tensor_nontrivial_values.topk(
            k=k, largest=self.largest
        )  # shape [rows k]

        # Get an array of indices and values (with unimportant elements) which we'll index into using the topk object
        topk_shape = (*tensor_mask.shape, k)
        topk_indices = torch.zeros(
            topk_shape, device=tensor.device, dtype=torch.long
        )  # ).long()  # shape [... k]
        topk_indices[tensor_mask] = topk.indices
        topk_values = torch.zeros(
            topk_shape, device=tensor.device, dtype=tensor.dtype
        )  # shape [... k]
        topk_values[tensor_mask] = topk.values

        return utils.to_numpy(topk_values), utils.to_numpy(topk_indices)


# ---- verbatim: sae_dashboard/data_parsing_fns.py add_neuron_alignment_data ----
def add_neuron_alignment_data(
    feature_out_dir: Any,
    feature_tables_data: dict[str, list[list[int]] | list[list[float]]],
    n_rows: int,
):
    top3_neurons_aligned = TopK(tensor=feature_out_dir.float(), k=n_rows, largest=True)
    feature_out_l1_norm = feature_out_dir.abs().sum(dim=-1, keepdim=True)
    pct_of_l1: Arr = np.absolute(top3_neurons_aligned.values) / utils.to_numpy(
        feature_out_l1_norm.float()
    )
    feature_tables_data["neuron_alignment_indices"] = (
        top3_neurons_aligned.indices.tolist()
    )
    feature_tables_data["neuron_alignment_values"] = (
        top3_neurons_aligned.values.tolist()
    )
    feature_tables_data["neuron_alignment_l1"] = pct_of_l1.tolist()


# ---- verbatim: sae_dashboard/utils_fns.py HistogramData.from_data, up to its bar values (ticks and title left out) ----
def from_data(data, n_bins):
    # There might be no data, if the feature never activates
    if data.numel() == 0:
        return None

    # Get min and max of data
    max_value = data.max().item()
    min_value = data.min().item()

    # Divide range up into 40 bins
    bin_size = (max_value - min_value) / n_bins
    bin_edges = torch.linspace(min_value, max_value, n_bins + 1)
    # Calculate the heights of each bin
    bar_heights = torch.histc(data, bins=n_bins).int().tolist()
    bar_values = [round(x, 5) for x in (bin_edges[:-1] + bin_size / 2).tolist()]
    return types.SimpleNamespace(bar_heights=bar_heights, bar_values=bar_values, bin_edges=bin_edges.tolist())


# ---- verbatim: sae_lens/saes/sae.py SAE.fold_W_dec_norm, its W_dec lines (W_enc / b_enc are not needed here) ----
def fold_W_dec_norm(self):
    W_dec_norms = self.W_dec.norm(dim=-1).clamp(min=1e-8).unsqueeze(1)
    self.W_dec.data = self.W_dec.data / W_dec_norms


# ---- adapter (not SAEDashboard's code): a `sae features` folder as the FeatureData the runner would hold ----
def f32(x):
    """A value as torch holds it (float32) and .tolist()/.item() returns it."""
    return float(np.float32(x))


def histogram_data(hist, title):
    """HistogramData.from_data's result for data whose bins are `hist` (equal width): bar_heights are the counts,
    bar_values `round(edge + bin_size / 2, 5)` as from_data computes them (float32 edges, as its torch.linspace makes
    them, plus a Python float); no data gives HistogramData()."""
    counts = hist["counts"]
    if len(counts) == 0:
        return types.SimpleNamespace(bar_heights=[], bar_values=[], title=None)
    bin_edges = torch.tensor(hist["edges"], dtype=torch.float32)
    max_value, min_value = bin_edges[-1].item(), bin_edges[0].item()
    n_bins = len(counts)
    bin_size = (max_value - min_value) / n_bins
    bar_values = [round(x, 5) for x in (bin_edges[:-1] + bin_size / 2).tolist()]
    return types.SimpleNamespace(bar_heights=list(counts), bar_values=bar_values, title=title)


def sequence(example):
    """SequenceData as package_sequences_data makes it: tokens from window position 1 (SaeSharp's example cut at the
    window's edges; position 0 left out unless it is the example's own token), feat_acts rounded to 4 places, and
    qualifying_token_index the window-relative index the converter takes 1 from."""
    start = 1 if example["position"] - example["index"] == 0 and example["index"] > 0 else 0
    return types.SimpleNamespace(
        original_index=example["window"],
        token_ids=example["context_tokens"][start:],
        feat_acts=[round(f, 4) for f in [f32(a) for a in example["context_acts"][start:]]],
        qualifying_token_index=example["index"] - start + 1,
        top_token_ids=[], top_logits=[], bottom_token_ids=[], bottom_logits=[],
    )


def neuron_alignment_tables(w_dec, architecture):
    """The runner's tables of every decoder row: fold_W_dec_norm unless the architecture is topk or temporal (as
    NeuronpediaRunner decides), then get_features_table_data's add_neuron_alignment_data with FeatureTablesConfig(n_rows=3)."""
    sae = types.SimpleNamespace(W_dec=torch.nn.Parameter(w_dec.clone(), requires_grad=False))
    if architecture not in ["temporal", "topk"]:
        fold_W_dec_norm(sae)
    tables = {}
    add_neuron_alignment_data(feature_out_dir=sae.W_dec.data, feature_tables_data=tables, n_rows=3)
    return tables


def feature_tables(tables, i):
    """FeatureTablesData(**{k: v[i] ...}) as sae_vis_runner builds it: the alignment row of feature i, no correlations."""
    return types.SimpleNamespace(
        neuron_alignment_indices=tables["neuron_alignment_indices"][i],
        neuron_alignment_values=tables["neuron_alignment_values"][i],
        neuron_alignment_l1=tables["neuron_alignment_l1"][i],
        correlated_neurons_indices=[], correlated_neurons_pearson=[], correlated_neurons_cossim=[],
        correlated_features_indices=[], correlated_features_pearson=[], correlated_features_cossim=[])


def check_features_jsonl(feature, tables):
    """features.jsonl's neuron_alignment (when present) must hold the runner's float32 values."""
    if "neuron_alignment" not in feature:
        return
    i = feature["feature"]
    got = [(a["neuron"], f32(a["value"]), f32(a["l1"])) for a in feature["neuron_alignment"]]
    want = list(zip(tables["neuron_alignment_indices"][i], tables["neuron_alignment_values"][i], tables["neuron_alignment_l1"][i]))
    assert got == want, f"feature {i}: features.jsonl has {got}, SAEDashboard computes {want}"


def feature_data(feature, counted_tokens, tables=None):
    groups = [types.SimpleNamespace(
        title=f"TOP ACTIVATIONS<br>MAX = {f32(feature['max_activation']):.3f}",
        seq_data=[sequence(e) for e in feature["top_examples"]])]
    for interval in reversed(feature["intervals"]):
        lower, upper = interval["lower"], interval["upper"]
        pct = interval["count"] / counted_tokens
        groups.append(types.SimpleNamespace(
            title=f"INTERVAL {lower:.3f} - {upper:.3f}<br>CONTAINS {pct:.3%}",
            seq_data=[sequence(e) for e in interval["samples"]]))
    frac_nonzero = feature["density"]
    logits_hist = feature.get("logit_histogram", {"edges": [], "counts": []})
    return types.SimpleNamespace(
        feature_tables_data=feature_tables(tables, feature["feature"]) if "neuron_alignment" in feature else None,
        logits_table_data=types.SimpleNamespace(
            top_logits=[f32(t["value"]) for t in feature["top_logits"]],
            top_token_ids=[t["token"] for t in feature["top_logits"]],
            bottom_logits=[f32(t["value"]) for t in feature["bottom_logits"]],
            bottom_token_ids=[t["token"] for t in feature["bottom_logits"]]),
        acts_histogram_data=histogram_data(feature["histogram"], f"ACTIVATIONS<br>DENSITY = {frac_nonzero:.3%}")
        if feature["firings"] > 0 else histogram_data({"edges": [], "counts": []}, None),
        logits_histogram_data=histogram_data(logits_hist, None),
        sequence_data=types.SimpleNamespace(seq_group_data=groups),
        dfa_data=None,
        decoder_weights_data=None,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", required=True)
    ap.add_argument("--vocab", required=True, help="GPT-2's vocab.json (Hugging Face tokenizer.vocab)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--w-dec", required=True, help="the decoder, a JSON [d_sae][d_in] (tests/data/neuronpedia/w_dec.json)")
    ap.add_argument("--n-features-per-batch", type=int, default=4)
    args = ap.parse_args()

    with open(os.path.join(args.features, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    features = []
    with open(os.path.join(args.features, "features.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                features.append(json.loads(line))
    with open(args.vocab, encoding="utf-8") as f:
        vocab = json.load(f)

    with open(args.w_dec, encoding="utf-8") as f:
        w_dec = torch.tensor(json.load(f), dtype=torch.float32)
    assert w_dec.shape[0] == summary["d_sae"]
    tables = neuron_alignment_tables(w_dec, summary["architecture"])
    for feature in features:
        check_features_jsonl(feature, tables)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "neuron_alignment.json"), "w", encoding="utf-8") as f:
        both = {"folded": neuron_alignment_tables(w_dec, "standard"), "raw": neuron_alignment_tables(w_dec, "topk")}
        json.dump({k: [{"feature": i, "indices": t["neuron_alignment_indices"][i], "values": t["neuron_alignment_values"][i],
                        "l1": t["neuron_alignment_l1"][i]} for i in range(w_dec.shape[0])] for k, t in both.items()}, f, indent=1)

    # from_data on logit vectors (LogitsHistogramConfig's 50 bins) for DashboardHistogram.FromData: a normal sample and
    # a narrow range; round_list's np.round(bar_values, 5) as the converter. (Values lying on bin edges are left out:
    # torch 1.13 and 2.x put some of them in different bins, their linspace edges differing in the last bit.)
    gen = torch.Generator().manual_seed(0)
    vectors = [torch.randn(2000, generator=gen) * 0.7 - 0.1,
               1 + torch.rand(300, generator=gen) * 1e-3]
    with open(os.path.join(args.out, "logit_histograms.json"), "w", encoding="utf-8") as f:
        json.dump([{"data": v.tolist(), "bar_heights": h.bar_heights, "bin_edges": h.bin_edges,
                    "bar_values": [float(x) for x in FeatureProcessor.round_list(h.bar_values)]}
                   for v in vectors for h in [from_data(v, 50)]], f)

    model_id, rest = summary["neuronpedia_id"].split("/", 1)
    layer, np_set = rest.split("-", 1)
    hf_path = summary["dataset"][len("hf:"):].split(":")[0]
    outputs_subdir = f"{model_id}_{np_set}_{summary['hook']}_{summary['d_sae']}"
    cfg = NeuronpediaRunnerConfig(
        sae_set=np_set, sae_path=summary["sae"], outputs_dir=os.path.join(args.out, outputs_subdir),
        np_set_name=np_set, huggingface_dataset_path=hf_path, n_prompts_total=summary["windows"],
        n_tokens_in_prompt=summary["context_size"], n_features_at_a_time=args.n_features_per_batch,
        model_id=model_id, layer=int(layer))
    os.makedirs(cfg.outputs_dir, exist_ok=True)
    runner = RunnerParts(cfg, vocab, d_vocab=50257, n_features=summary["d_sae"])
    vocab_dict = runner.get_vocab_dict()
    runner.target_feature_indexes = [f["feature"] for f in features]
    runner.record_skipped_features()
    by_index = {f["feature"]: f for f in features}
    for feature_batch_count, features_to_process in enumerate(runner.get_feature_batches()):
        vis_data = SaeVisData({i: feature_data(by_index[i], summary["tokens"], tables) for i in features_to_process})
        json_object = NeuronpediaConverter.convert_to_np_json(runner.model, vis_data, cfg, vocab_dict)
        with open(f"{cfg.outputs_dir}/batch-{feature_batch_count}.json", "w") as f:
            f.write(json_object)
        print(f"{cfg.outputs_dir}/batch-{feature_batch_count}.json: {features_to_process}")


if __name__ == "__main__":
    main()
