using System.Text.Json;
using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// TransformerLens weight processing (the <c>model_from_pretrained_kwargs</c> an SAE was trained with). All false is
/// TransformerLens <c>from_pretrained_no_processing</c>, which SAELens uses to load a model for an SAE.
/// </summary>
public sealed record WeightProcessingOptions
{
    /// <summary><c>fold_ln</c>: fold each block's LayerNorm weight and bias into the layer reading it and centre that layer's
    /// reading weights, leaving a pure normalisation (TransformerLens <c>LNPre</c>); q/k/v or an MLP input without a bias (GPT-Neo,
    /// GPT-J) gains one. <c>ln_final</c> is folded into W_U and b_U (a tied W_U — GPT-2, GPT-Neo, OPT, BLOOM — is first given a matrix
    /// of its own, <c>lm_head</c>, and W_E stays; an unembedding without a bias gains b_U), so <c>ln_final.hook_normalized</c>
    /// is the pure normalisation. A parallel block's one norm (GPT-J, Phi) is folded into attention and MLP alike.
    /// Llama-style decoders: each RMSNorm's weight (Gemma's 1 + w) is folded into q/k/v_proj, gate/up_proj and, for
    /// ln_final, W_U, without centring, leaving RMSPre norms (Gemma 2/3's post-norms stay).</summary>
    public bool FoldLn { get; init; }
    /// <summary><c>center_writing_weights</c>: subtract the mean over d_model from every matrix and bias writing to the
    /// residual stream (W_E, W_pos, W_O, b_O, W_out, b_out; OPT's W_pos with its two offset rows). Residual-stream, attn_out and mlp_out activations become their
    /// centred versions; logits are unchanged because every reader of the residual stream is a LayerNorm. Skipped, as
    /// TransformerLens skips it, for RMSNorm models.</summary>
    public bool CenterWritingWeights { get; init; }
    /// <summary><c>center_unembed</c>: subtract the mean over the vocabulary from W_U and b_U (a per-position constant on the
    /// logits, softmax unchanged), on every family; a tied W_U (GPT-2, GPT-Neo, OPT, tied Llama-style decoders) is untied
    /// first, W_E unchanged.</summary>
    public bool CenterUnembed { get; init; }
    /// <summary><c>fold_value_biases</c>: move b_V into b_O (attention patterns sum to one), so hook_v / hook_z have no bias.
    /// With grouped-query attention each key/value head's b_V counts once for every query head sharing it; an o_proj without
    /// a bias gains one (TransformerLens's b_O).</summary>
    public bool FoldValueBiases { get; init; }

    /// <summary>Processing keys of TransformerLens <c>from_pretrained</c> this class understands.</summary>
    public static readonly IReadOnlyList<string> Keys = ["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases", "refactor_factored_attn_matrices"];

    /// <summary>Reads SAELens <c>model_from_pretrained_kwargs</c>: the processing flags are taken (default false, as
    /// <c>from_pretrained_no_processing</c>); loading keys TransformerLens also accepts (dtype, device, ...) are listed in
    /// <paramref name="ignored"/>. <c>refactor_factored_attn_matrices: true</c> is not supported.</summary>
    public static WeightProcessingOptions FromKwargs(IReadOnlyDictionary<string, JsonElement>? kwargs, out IReadOnlyList<string> ignored)
    {
        var ign = new List<string>();
        ignored = ign;
        if (kwargs is null) return new WeightProcessingOptions();
        bool Flag(string key)
        {
            if (!kwargs.TryGetValue(key, out var v)) return false;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False or JsonValueKind.Null => false,
                _ => throw new SaeSharpException($"model_from_pretrained_kwargs: '{key}' must be true or false, got {v.GetRawText()}"),
            };
        }
        if (Flag("refactor_factored_attn_matrices"))
            throw new SaeSharpException("model_from_pretrained_kwargs: refactor_factored_attn_matrices=true is not supported for an SAE's model " +
                                        "(its hook_q/k/v/z would differ from the run SaeSharp makes); `sae model circuits --refactor-factored-attn-matrices` refactors a GPT-2");
        ign.AddRange(kwargs.Keys.Where(k => !Keys.Contains(k)));
        return new WeightProcessingOptions
        {
            FoldLn = Flag("fold_ln"), CenterWritingWeights = Flag("center_writing_weights"),
            CenterUnembed = Flag("center_unembed"), FoldValueBiases = Flag("fold_value_biases"),
        };
    }

    /// <summary>The flags as <c>model_from_pretrained_kwargs</c> (only the true ones).</summary>
    public Dictionary<string, bool> ToKwargs()
    {
        var d = new Dictionary<string, bool>(StringComparer.Ordinal);
        if (FoldLn) d["fold_ln"] = true;
        if (CenterWritingWeights) d["center_writing_weights"] = true;
        if (CenterUnembed) d["center_unembed"] = true;
        if (FoldValueBiases) d["fold_value_biases"] = true;
        return d;
    }

    /// <summary>TransformerLens <c>from_pretrained</c>'s default processing (HookedTransformer.from_pretrained:
    /// <c>fold_ln</c>, <c>center_writing_weights</c>, <c>center_unembed</c>, <c>fold_value_biases</c> all true), the weights
    /// its demos compute circuits on.</summary>
    public static WeightProcessingOptions TransformerLensDefaults => new()
    {
        FoldLn = true, CenterWritingWeights = true, CenterUnembed = true, FoldValueBiases = true,
    };

    /// <summary>True when any processing step is on.</summary>
    public bool Any => FoldLn || CenterWritingWeights || CenterUnembed || FoldValueBiases;
}

/// <summary>
/// A model with its weight processing. <see cref="Hooks"/> are hook functions that complete the processing where a
/// weight cannot be changed in place (GPT-2's W_E is also its unembedding, so centring W_E is done by centring
/// <c>hook_embed</c>): pass them with every run (<c>ModelHooks</c> of the activation sources and the evaluator).
/// </summary>
public sealed class ProcessedModel : IDisposable
{
    internal ProcessedModel(HookedTransformer model, WeightProcessingOptions options, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> hooks)
    {
        Model = model;
        Options = options;
        Hooks = hooks;
    }

    /// <summary>The processed model (owned: disposed with this object).</summary>
    public HookedTransformer Model { get; }
    /// <summary>The processing that was applied.</summary>
    public WeightProcessingOptions Options { get; }
    /// <summary>One line per step TransformerLens skips for this model (skipped here too, and left out of
    /// <see cref="Options"/>): for the user's stderr.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
    /// <summary>Hook functions completing the processing; pass them with every run.</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> Hooks { get; }

    /// <summary>Logits of a plain forward pass with <see cref="Hooks"/> applied.</summary>
    public Tensor Forward(Tensor tokens, Tensor? attentionMask = null) =>
        Model.Run(tokens, new RunOptions { AttentionMask = attentionMask, Hooks = Hooks }).Logits!;

    /// <summary>Disposes the model.</summary>
    public void Dispose() => Model.Dispose();
}

/// <summary>
/// TransformerLens's <c>fold_layer_norm</c>, <c>center_writing_weights</c>, <c>center_unembed</c> and
/// <c>fold_value_biases</c> applied in place to a loaded GPT-2 or GPT-NeoX (Hugging Face weight layout: Conv1D [in, out]
/// for GPT-2, Linear [out, in] for NeoX), GPT-Neo, GPT-J, OPT, Phi or BLOOM (their HF Linear layers, as TransformerLens's
/// converters map them: a parallel block's one norm is both ln1 and ln2; BLOOM's word_embeddings_layernorm kept, as
/// TransformerLens keeps <c>embed.ln</c>), or a Llama-layout decoder (<see cref="LlamaFamilyModel"/>: Llama, Mistral,
/// Qwen2/3, Gemma 1/2/3, OLMo, Phi-3, ...) as TransformerLens processes its RMSNorm models
/// (transformer_lens/weight_processing.py <c>process_weights</c>): fold_ln folds each RMSNorm's weight (Gemma's 1 + w)
/// into the layers reading it and ln_final's into W_U, without centring (RMSNorm does not subtract the mean), leaving
/// RMSPre norms; Gemma 2/3's post-norms (<c>ln1_post</c>, <c>ln2_post</c>) and Qwen3 / Gemma 3's q/k norms are kept as
/// they are; center_writing_weights is skipped for RMSNorm models, fold_ln for a mixture of experts and OLMo-2/3's
/// post-norms, center_unembed under a final logit soft cap (Gemma 2), each with a warning, as TransformerLens skips them;
/// tied embeddings are untied so W_U changes without W_E.
/// </summary>
public static class WeightProcessing
{
    /// <summary>Processes <paramref name="model"/> in place; returns the hooks that complete it (see <see cref="ProcessedModel"/>).
    /// Options that ask for nothing leave any model as it is. A step TransformerLens skips for the model (fold_ln for a
    /// mixture of experts or OLMo-2's post-norms, center_writing_weights for an RMSNorm model, center_unembed under a final
    /// logit soft cap) is skipped with a warning
    /// (<see cref="ProcessedModel.Warnings"/>) and left out of <see cref="ProcessedModel.Options"/>.</summary>
    public static ProcessedModel Apply(HookedTransformer model, WeightProcessingOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var hooks = new List<(string, Func<Tensor, Tensor?>)>();
        if (!options.Any) return new ProcessedModel(model, options, hooks);
        string arch = model.Config.Architecture;
        string asked = string.Join(", ", options.ToKwargs().Keys);
        if (model is LlamaFamilyModel decoder) return ApplyDecoder(decoder, options, asked);
        if (LayerNormLayout.Of(model) is { } layout)
        {
            if (PostNormOrProjected(model) is { } why && (options.FoldLn || options.CenterWritingWeights))
                throw new SaeSharpException($"weight processing ({string.Join(", ", new[] { options.FoldLn ? "fold_ln" : null, options.CenterWritingWeights ? "center_writing_weights" : null }.OfType<string>())}) " +
                    $"is not supported for {model.Config.ModelName}: {why}; load it without --fold-ln, --center-writing-weights or --process-weights");
            return ApplyLayerNormFamily(model, layout, options);
        }
        bool gpt2 = arch == "gpt2";
        if (!gpt2 && arch != "gpt_neox")
            throw new SaeSharpException($"weight processing ({asked}) supports gpt2, gpt_neox, gpt_neo, gptj, opt, phi, bloom and the Llama-style " +
                                        $"decoders, not {arch}: load it unprocessed (without --fold-ln, --center-writing-weights or --process-weights)");
        using var _ = no_grad();
        // New parameters before the dispose scope: GPT-2's W_U (W_E) gets a matrix of its own, and b_U, for ln_final.
        string unembed = gpt2 ? "lm_head" : "embed_out", finalNorm = gpt2 ? "transformer.ln_f" : "gpt_neox.final_layer_norm";
        if (options.FoldLn || options.CenterUnembed) model.UntieEmbeddings();
        if (options.FoldLn) LinearModule(Modules(model), unembed).EnsureBias();
        using var scope = NewDisposeScope();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        // Order as TransformerLens process_weights_: fold_ln, center_writing_weights, center_unembed, fold_value_biases.
        if (options.FoldLn)
        {
            FoldLayerNorms(model, p, gpt2);
            FoldNorm(p, finalNorm, [unembed], false, true);
        }
        if (options.CenterWritingWeights)
        {
            if (gpt2) hooks.Add((HookPoints.Embed, x => x - x.mean([-1], keepdim: true)));
            CenterWriting(model, p, gpt2);
        }
        if (options.CenterUnembed) CenterUnembedding(p, unembed);
        if (options.FoldValueBiases) FoldValueBiases(model, p, gpt2);
        return new ProcessedModel(model, options, hooks);
    }

    /// <summary>TransformerLens <c>process_weights</c> on a Llama-layout decoder (HF names, Linear weights [out, in]).</summary>
    private static ProcessedModel ApplyDecoder(LlamaFamilyModel model, WeightProcessingOptions options, string asked)
    {
        var c = model.Config;
        string arch = c.Architecture;
        if (c.KvLoraRank > 0 || arch.StartsWith("deepseek", StringComparison.Ordinal))
            throw new SaeSharpException($"weight processing ({asked}): {arch}'s multi-head latent attention has no per-head W_V and W_O as " +
                                        "TransformerLens processes them; load it unprocessed (without --fold-ln, --center-writing-weights or --process-weights)");
        if (c.AttentionSinks)
            throw new SaeSharpException($"weight processing ({asked}): {arch}'s attention sinks take part of each softmax, so its patterns do not " +
                                        "sum to one over the positions and b_V cannot move into b_O; load it unprocessed (without --process-weights)");
        bool ln = c.NormalizationType == "LN";                        // OLMo 1's weightless LayerNorm
        bool moe = c.NumExperts > 0;
        bool postNormsOnly = arch is "olmo2" or "olmo3";
        var effective = options;
        var warnings = new List<string>();
        if (options.FoldLn && postNormsOnly)
        {
            warnings.Add($"fold_ln skipped for {c.ModelName}: {arch} normalises each sublayer's output (post_attention_layernorm, " +
                                        "post_feedforward_layernorm), not the residual stream a layer reads, as TransformerLens skips it for OLMo 2");
            effective = effective with { FoldLn = false };
        }
        if (options.CenterUnembed && c.OutputLogitsSoftCap is not null)
        {
            warnings.Add($"center_unembed skipped for {c.ModelName}: its final logit soft cap (tanh) is not invariant to adding " +
                                        "a constant to every logit, as TransformerLens skips it");
            effective = effective with { CenterUnembed = false };
        }
        if (effective.FoldLn && moe)
        {
            warnings.Add($"fold_ln skipped for {c.ModelName}: TransformerLens does not fold norms into a mixture of experts");
            effective = effective with { FoldLn = false };
        }
        if (options.CenterWritingWeights && !ln)
        {
            warnings.Add($"center_writing_weights skipped for {c.ModelName}: TransformerLens centres the writing weights only " +
                                        "for LayerNorm models, and an RMSNorm does not remove the mean it would take away");
            effective = effective with { CenterWritingWeights = false };
        }
        using var _ = no_grad();
        // New parameters before the dispose scope (it would dispose them): TransformerLens's W_U is its own matrix, so tied
        // embeddings are untied before W_U changes; every layer whose b_V moves gets a b_O.
        if (effective.FoldLn || effective.CenterUnembed) model.UntieEmbeddings();
        var modules = model.named_modules().ToDictionary(kv => kv.name, kv => kv.module, StringComparer.Ordinal);
        var p0 = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        if (effective.FoldValueBiases)
            for (int i = 0; i < c.NLayers; i++)
                if (p0.ContainsKey($"model.layers.{i}.self_attn.v_proj.bias")) ((Linear)modules[$"model.layers.{i}.self_attn.o_proj"]).EnsureBias();
        using var scope = NewDisposeScope();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        bool gemma = arch.StartsWith("gemma", StringComparison.Ordinal);
        if (effective.FoldLn)
        {
            for (int i = 0; i < c.NLayers; i++)
            {
                string b = $"model.layers.{i}.";
                FoldNorm(p, b + "input_layernorm", [b + "self_attn.q_proj", b + "self_attn.k_proj", b + "self_attn.v_proj"], gemma, ln);
                // Gemma 2/3: pre_feedforward_layernorm reads the residual stream for the MLP (TransformerLens's ln2), while
                // post_attention_layernorm normalises the attention output (ln1_post) and stays; elsewhere post_attention_layernorm is ln2.
                string ln2 = p.ContainsKey(b + "pre_feedforward_layernorm.weight") ? "pre_feedforward_layernorm" : "post_attention_layernorm";
                FoldNorm(p, b + ln2, [b + "mlp.gate_proj", b + "mlp.up_proj"], gemma, ln);
            }
            FoldNorm(p, "model.norm", ["lm_head"], gemma, ln);
        }
        if (effective.CenterWritingWeights)                           // LayerNorm models only (OLMo 1)
        {
            CenterRows(Get(p, "model.embed_tokens.weight"));
            for (int i = 0; i < c.NLayers; i++)
                foreach (var layer in new[] { $"model.layers.{i}.self_attn.o_proj", $"model.layers.{i}.mlp.down_proj" })
                    CenterWriter(p, layer);
        }
        if (effective.CenterUnembed) CenterUnembedding(p, "lm_head");
        if (effective.FoldValueBiases)
            for (int i = 0; i < c.NLayers; i++)
            {
                string b = $"model.layers.{i}.self_attn.";
                // no b_V: TransformerLens's b_O gains zeros
                if (p.TryGetValue(b + "v_proj.bias", out var bv)) FoldValueBias(c, bv, (Linear)modules[b + "o_proj"], effective.CenterWritingWeights);
            }
        return new ProcessedModel(model, effective, []) { Warnings = warnings };
    }

    /// <summary>Why fold_ln and center_writing_weights cannot process an OPT laid out as facebook/opt-350m, or null: they
    /// assume pre-norm layers (a norm reading the residual stream, whose weights the layers after it absorb; the residual
    /// stream's mean thrown away before anything reads it) and one d_model from W_E to W_U. center_unembed (softmax-invariant)
    /// and fold_value_biases need neither.</summary>
    private static string? PostNormOrProjected(HookedTransformer model)
    {
        if (model is not OptModel opt) return null;
        var c = model.Config;
        var why = new List<string>();
        if (opt.PostNorm)
            why.Add("do_layer_norm_before=false makes its layers post-norm (each LayerNorm normalises the residual stream itself, " +
                    "after the sublayer's output is added, and the next attention reads it unnormalised; there is no final_layer_norm)");
        if (c.WordEmbedProjDim is int we)
            why.Add($"word_embed_proj_dim={we} ≠ hidden_size={c.DModel} puts project_in / project_out between the embeddings and the residual stream");
        return why.Count == 0 ? null : string.Join("; ", why);
    }

    /// <summary>HF parameter names of a LayerNorm family whose layers are nn.Linear [out, in] (GPT-Neo, GPT-J, OPT, Phi, BLOOM), in
    /// TransformerLens's terms: <see cref="Ln2"/> null for a parallel block (one norm feeding attention and MLP, which
    /// TransformerLens's converters copy into ln2); <see cref="AttnIn"/> the layers reading ln1 for the attention (q, k, v
    /// projections, or BLOOM's fused <c>query_key_value</c> laid out [head, (q, k, v), head_dim], <see cref="FusedQkv"/>);
    /// <see cref="Unembed"/> the unembedding layer, a tied one (GPT-Neo's, OPT's, BLOOM's) after
    /// <see cref="HookedTransformer.UntieEmbeddings"/>. BLOOM's <c>word_embeddings_layernorm</c> (TransformerLens's
    /// <c>embed.ln</c>) is in no field: TransformerLens's process_weights never folds it (its Embed keeps a full LayerNorm
    /// under fold_ln), and center_writing_weights centres W_E, which that LayerNorm reads, and not its output.</summary>
    private sealed record LayerNormLayout(string Embed, string? PosEmbed, string Layer, string Ln1, string? Ln2, string[] AttnIn,
        string O, string MlpIn, string MlpOut, string FinalNorm, string Unembed, bool FusedQkv = false)
    {
        public static LayerNormLayout? Of(HookedTransformer m) => m.Config.Architecture switch
        {
            "gpt_neo" => new("transformer.wte", "transformer.wpe", "transformer.h.{0}.", "ln_1", "ln_2", ["attn.attention.q_proj",
                "attn.attention.k_proj", "attn.attention.v_proj"], "attn.attention.out_proj", "mlp.c_fc", "mlp.c_proj", "transformer.ln_f", "lm_head"),
            "gptj" => new("transformer.wte", null, "transformer.h.{0}.", "ln_1", null, ["attn.q_proj", "attn.k_proj", "attn.v_proj"],
                "attn.out_proj", "mlp.fc_in", "mlp.fc_out", "transformer.ln_f", "lm_head"),
            "opt" => new("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.layers.{0}.", "self_attn_layer_norm",
                "final_layer_norm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "self_attn.out_proj", "fc1", "fc2",
                "model.decoder.final_layer_norm", "lm_head"),
            "phi" => new("model.embed_tokens", null, "model.layers.{0}.", "input_layernorm", null, ["self_attn.q_proj", "self_attn.k_proj",
                "self_attn.v_proj"], "self_attn.dense", "mlp.fc1", "mlp.fc2", "model.final_layernorm", "lm_head"),
            "bloom" => new("transformer.word_embeddings", null, "transformer.h.{0}.", "input_layernorm", "post_attention_layernorm",
                ["self_attention.query_key_value"], "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", "transformer.ln_f", "lm_head",
                FusedQkv: true),
            _ => null,
        };

        public string At(int layer, string name) => string.Format(System.Globalization.CultureInfo.InvariantCulture, Layer, layer) + name;

        /// <summary>The parameter holding layer <paramref name="layer"/>'s b_V, or null without one.</summary>
        public string ValueBiasParameter(int layer) => At(layer, AttnIn[FusedQkv ? 0 : 2] + ".bias");

        /// <summary>Layer <paramref name="layer"/>'s b_V [n_heads·d_head] (a view: writing it writes the model), or null
        /// without one; BLOOM's is every third d_head block of the fused bias, as TransformerLens's converter splits it.</summary>
        public Tensor? ValueBias(Dictionary<string, Parameter> p, int layer, TransformerConfig c) =>
            !p.TryGetValue(ValueBiasParameter(layer), out var b) ? null
                : FusedQkv ? b.view(c.NHeads, 3, c.DHead).select(1, 2) : b;
    }

    /// <summary>TransformerLens <c>process_weights</c> on GPT-Neo, GPT-J, OPT, Phi or BLOOM (see <see cref="LayerNormLayout"/>), in
    /// its order: fold_ln folds each LayerNorm's weight and bias into the layers reading it (a parallel block's one norm into
    /// q/k/v and the MLP's input alike; q/k/v and MLP input without a bias gain one, TransformerLens's b_Q/b_K/b_V/b_in) and
    /// centres their weights over d_model, then ln_final into W_U and b_U (an untied W_U; OPT's tied one is untied first and
    /// gains its b_U); center_writing_weights centres W_E, W_pos, W_O, b_O, W_out, b_out over d_model (a tied W_E through
    /// <c>hook_embed</c>, as GPT-2's); center_unembed centres W_U over the vocabulary and b_U; fold_value_biases moves b_V
    /// into b_O (GPT-J's out_proj gains one).</summary>
    private static ProcessedModel ApplyLayerNormFamily(HookedTransformer model, LayerNormLayout l, WeightProcessingOptions options)
    {
        var c = model.Config;
        using var _ = no_grad();
        // New parameters before the dispose scope (it would dispose them): TransformerLens's W_U is its own matrix, so a tied
        // W_U is untied before W_E or W_U changes; the layers a folded bias lands in get one.
        if (options.FoldLn || options.CenterWritingWeights || options.CenterUnembed) model.UntieEmbeddings();
        var modules = Modules(model);
        Linear Module(string name) => LinearModule(modules, name);
        if (options.FoldLn)
        {
            for (int i = 0; i < c.NLayers; i++)
                foreach (var layer in l.AttnIn.Append(l.MlpIn)) Module(l.At(i, layer)).EnsureBias();
            Module(l.Unembed).EnsureBias();
        }
        var p0 = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        if (options.FoldValueBiases)
            for (int i = 0; i < c.NLayers; i++)
                if (p0.ContainsKey(l.ValueBiasParameter(i))) Module(l.At(i, l.O)).EnsureBias();
        using var scope = NewDisposeScope();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter, StringComparer.Ordinal);
        if (options.FoldLn)
        {
            for (int i = 0; i < c.NLayers; i++)
            {
                var attnIn = l.AttnIn.Select(layer => l.At(i, layer));
                if (l.Ln2 is null) FoldNorm(p, l.At(i, l.Ln1), [.. attnIn, l.At(i, l.MlpIn)], false, true);
                else
                {
                    FoldNorm(p, l.At(i, l.Ln1), [.. attnIn], false, true);
                    FoldNorm(p, l.At(i, l.Ln2), [l.At(i, l.MlpIn)], false, true);
                }
            }
            FoldNorm(p, l.FinalNorm, [l.Unembed], false, true);
        }
        if (options.CenterWritingWeights)
        {
            CenterRows(Get(p, l.Embed + ".weight"));
            if (l.PosEmbed is not null) CenterRows(Get(p, l.PosEmbed + ".weight"));
            for (int i = 0; i < c.NLayers; i++)
                foreach (var layer in new[] { l.At(i, l.O), l.At(i, l.MlpOut) }) CenterWriter(p, layer);
        }
        if (options.CenterUnembed) CenterUnembedding(p, l.Unembed);
        if (options.FoldValueBiases)
            for (int i = 0; i < c.NLayers; i++)
                if (l.ValueBias(p, i, c) is { } bv) FoldValueBias(c, bv, Module(l.At(i, l.O)), options.CenterWritingWeights);
        return new ProcessedModel(model, options, []);
    }

    private static Dictionary<string, nn.Module> Modules(HookedTransformer model) =>
        model.named_modules().ToDictionary(kv => kv.name, kv => kv.module, StringComparer.Ordinal);

    private static Linear LinearModule(Dictionary<string, nn.Module> modules, string name) =>
        modules.TryGetValue(name, out var m) && m is Linear lin ? lin : throw new SaeSharpException($"weight processing: the model has no layer '{name}'");

    /// <summary>TransformerLens <c>center_writing_weights</c> on one Linear writing to the residual stream (W [d_model, in]
    /// centred over d_model, and its bias).</summary>
    private static void CenterWriter(Dictionary<string, Parameter> p, string layer)
    {
        var W = Get(p, layer + ".weight");
        W.sub_(W.mean([0], keepdim: true));
        if (p.TryGetValue(layer + ".bias", out var bias)) bias.sub_(bias.mean());
    }

    /// <summary>TransformerLens <c>center_unembed</c>: W_U [vocab, d] centred over the vocabulary, and b_U where there is one.</summary>
    private static void CenterUnembedding(Dictionary<string, Parameter> p, string unembed)
    {
        var wu = Get(p, unembed + ".weight");
        wu.sub_(wu.mean([0], keepdim: true));
        if (p.TryGetValue(unembed + ".bias", out var bu)) bu.sub_(bu.mean());
    }

    /// <summary>TransformerLens <c>fold_value_biases</c> for one layer: b_O += W_O·b_V (b_V per key/value head, repeated for
    /// the query heads sharing it: HF repeat_kv, query head j reads head j / (h / g)), in float32, then b_V = 0; b_O is
    /// centred again under center_writing_weights, as TransformerLens does.</summary>
    private static void FoldValueBias(TransformerConfig c, Tensor bv, Linear oProj, bool center)
    {
        int h = c.NHeads, g = c.NKvHeads, hd = c.DHead;
        var perHead = bv.reshape(g, hd).repeat_interleave(h / g, 0).reshape(-1);
        var bO = oProj.EnsureBias();
        var W = oProj.Weight;                                         // [d_model, h·hd]
        bO.copy_(bO.to(ScalarType.Float32).add(matmul(W.to(ScalarType.Float32), perHead.to(ScalarType.Float32)), TorchScalars.One));
        bv.fill_(TorchScalars.Of(0));
        if (center) bO.sub_(bO.mean());
    }

    /// <summary>Folds the norm <paramref name="norm"/>'s bias β (a LayerNorm's: b ← b + W·β) and weight (Gemma: 1 + w) into
    /// the Linear layers reading it (W ← W·diag(w)), in float32, then, for a LayerNorm, centres their rows over d_model (TransformerLens's
    /// <c>center_weights</c>); the norm is left the identity scale (w = 1; Gemma's w = 0). A weightless norm (OLMo 1's) is only
    /// centred into its readers. A norm with a bias leaves it zero.</summary>
    internal static void FoldNorm(Dictionary<string, Parameter> p, string norm, string[] readers, bool gemma, bool ln)
    {
        p.TryGetValue(norm + ".weight", out var w);
        p.TryGetValue(norm + ".bias", out var beta);
        var scale = w is null ? null : gemma ? w.to(ScalarType.Float32).add(TorchScalars.Of(1.0), TorchScalars.One) : w.to(ScalarType.Float32);
        foreach (var layer in readers)
        {
            var W = Get(p, layer + ".weight");                        // [out, d_model]
            var folded = W.to(ScalarType.Float32);
            if (beta is not null)                                     // b += W·β, with W before the scale
            {
                var b = Get(p, layer + ".bias");
                b.copy_(b.to(ScalarType.Float32).add(matmul(folded, beta.to(ScalarType.Float32)), TorchScalars.One));
            }
            if (scale is not null) folded = folded * scale.unsqueeze(0);
            if (ln) folded = folded - folded.mean([1], keepdim: true);
            W.copy_(folded);
        }
        if (w is not null) w.fill_(TorchScalars.Of(gemma ? 0 : 1));
        beta?.fill_(TorchScalars.Of(0));
    }

    private static void CenterRows(Tensor w) => w.sub_(w.mean([1], keepdim: true));

    private static Parameter Get(Dictionary<string, Parameter> p, string name) =>
        p.TryGetValue(name, out var t) ? t : throw new SaeSharpException($"weight processing: the model has no parameter '{name}'");

    private static void FoldLayerNorms(HookedTransformer model, Dictionary<string, Parameter> p, bool gpt2)
    {
        for (int i = 0; i < model.Config.NLayers; i++)
        {
            if (gpt2)
            {
                string b = $"transformer.h.{i}.";
                FoldIntoConv1D(p, b + "ln_1", b + "attn.c_attn");
                FoldIntoConv1D(p, b + "ln_2", b + "mlp.c_fc");
            }
            else
            {
                string b = $"gpt_neox.layers.{i}.";
                FoldIntoLinear(p, b + "input_layernorm", b + "attention.query_key_value");
                FoldIntoLinear(p, b + "post_attention_layernorm", b + "mlp.dense_h_to_4h");
            }
        }
    }

    /// <summary>Conv1D y = x·W + b, W [d, out]: b += b_ln·W, W ← diag(w_ln)·W, then W's columns centred over d.</summary>
    private static void FoldIntoConv1D(Dictionary<string, Parameter> p, string ln, string layer)
    {
        var (w, b) = (Get(p, ln + ".weight"), Get(p, ln + ".bias"));
        var (W, bias) = (Get(p, layer + ".weight"), Get(p, layer + ".bias"));
        bias.add_(matmul(b.unsqueeze(0), W).squeeze(0), TorchScalars.One);
        W.mul_(w.unsqueeze(1));
        W.sub_(W.mean([0], keepdim: true));
        w.fill_(TorchScalars.Of(1));
        b.fill_(TorchScalars.Of(0));
    }

    /// <summary>Linear y = x·Wᵀ + b, W [out, d]: b += W·b_ln, W ← W·diag(w_ln), then W's rows centred over d.</summary>
    private static void FoldIntoLinear(Dictionary<string, Parameter> p, string ln, string layer)
    {
        var (w, b) = (Get(p, ln + ".weight"), Get(p, ln + ".bias"));
        var W = Get(p, layer + ".weight");
        if (p.TryGetValue(layer + ".bias", out var bias)) bias.add_(matmul(W, b), TorchScalars.One);
        else if (b.abs().max().item<float>() != 0)
            throw new SaeSharpException($"fold_ln: '{layer}' has no bias to absorb the bias of '{ln}' (attention_bias=false)");
        W.mul_(w.unsqueeze(0));
        W.sub_(W.mean([1], keepdim: true));
        w.fill_(TorchScalars.Of(1));
        b.fill_(TorchScalars.Of(0));
    }

    private static void CenterWriting(HookedTransformer model, Dictionary<string, Parameter> p, bool gpt2)
    {
        if (gpt2)
        {
            var wpe = Get(p, "transformer.wpe.weight");
            wpe.sub_(wpe.mean([1], keepdim: true));
            for (int i = 0; i < model.Config.NLayers; i++)
            {
                foreach (var layer in new[] { $"transformer.h.{i}.attn.c_proj", $"transformer.h.{i}.mlp.c_proj" })
                {
                    var W = Get(p, layer + ".weight");              // [in, d_model]
                    W.sub_(W.mean([1], keepdim: true));
                    var b = Get(p, layer + ".bias");
                    b.sub_(b.mean());
                }
            }
        }
        else
        {
            var we = Get(p, "gpt_neox.embed_in.weight");
            we.sub_(we.mean([1], keepdim: true));
            for (int i = 0; i < model.Config.NLayers; i++)
            {
                foreach (var layer in new[] { $"gpt_neox.layers.{i}.attention.dense", $"gpt_neox.layers.{i}.mlp.dense_4h_to_h" })
                {
                    var W = Get(p, layer + ".weight");              // [d_model, in]
                    W.sub_(W.mean([0], keepdim: true));
                    if (p.TryGetValue(layer + ".bias", out var b)) b.sub_(b.mean());
                }
            }
        }
    }

    private static void FoldValueBiases(HookedTransformer model, Dictionary<string, Parameter> p, bool gpt2)
    {
        int d = model.Config.DModel, h = model.Config.NHeads, hd = model.Config.DHead;
        for (int i = 0; i < model.Config.NLayers; i++)
        {
            if (gpt2)
            {
                string b = $"transformer.h.{i}.attn.";
                var qkvBias = Get(p, b + "c_attn.bias");               // [3d]: q, k, v
                var bv = qkvBias.narrow(0, 2 * d, d);
                var W = Get(p, b + "c_proj.weight");                   // [d, d_model]
                Get(p, b + "c_proj.bias").add_(matmul(bv.unsqueeze(0), W).squeeze(0), TorchScalars.One);
                bv.fill_(TorchScalars.Of(0));
            }
            else
            {
                string b = $"gpt_neox.layers.{i}.attention.";
                if (!p.TryGetValue(b + "query_key_value.bias", out var qkvBias)) continue;
                var bv = qkvBias.view(h, 3, hd).select(1, 2);           // [h, hd], z is laid out head-major
                var W = Get(p, b + "dense.weight");                    // [d_model, h·hd]
                var outBias = p.TryGetValue(b + "dense.bias", out var ob) ? ob
                    : throw new SaeSharpException($"fold_value_biases: '{b}dense' has no bias to absorb b_V");
                outBias.add_(matmul(W, bv.reshape(-1)), TorchScalars.One);
                bv.fill_(TorchScalars.Of(0));
            }
        }
    }
}
