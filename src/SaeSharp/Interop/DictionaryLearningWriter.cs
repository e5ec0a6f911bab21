using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

public static partial class DictionaryLearning
{
    /// <summary>The dictionary_learning trainer class that writes each dictionary class (config.json's <c>trainer_class</c>).</summary>
    private static readonly Dictionary<string, string> TrainerOfClass = new(StringComparer.Ordinal)
    {
        ["AutoEncoder"] = "StandardTrainer",
        ["GatedAutoEncoder"] = "GatedSAETrainer",
        ["JumpReluAutoEncoder"] = "JumpReluTrainer",
        ["AutoEncoderTopK"] = "TopKTrainer",
        ["BatchTopKSAE"] = "BatchTopKTrainer",
        ["MatryoshkaBatchTopKSAE"] = "MatryoshkaBatchTopKTrainer",
    };

    /// <summary>
    /// Writes <paramref name="sae"/> into the folder <paramref name="dir"/> as dictionary_learning's trainers leave it:
    /// <c>ae.pt</c> (the class's <c>state_dict()</c>, <c>torch.save</c>d by <see cref="TorchSave"/>, keys in the class's
    /// order, with its <c>_metadata</c>) and <c>config.json</c> (<c>{"trainer": {...}, "buffer": {...}}</c>). The exact
    /// inverse of <see cref="ReadCheckpoint(string, string?)"/>: standard → <c>AutoEncoder</c>, topk →
    /// <c>AutoEncoderTopK</c>, batchtopk → <c>BatchTopKSAE</c>, gated → <c>GatedAutoEncoder</c>, jumprelu →
    /// <c>JumpReluAutoEncoder</c>, matryoshka_batchtopk → <c>MatryoshkaBatchTopKSAE</c>. Where dictionary_learning's
    /// class subtracts b_dec from the input and the SAE does not (or the reverse, JumpReLU), the difference b_dec·W_enc is
    /// folded into the encoder biases, so encode and decode give the same outputs. Refused, naming the reason: other
    /// architectures, transcoders (d_out ≠ d_in), skip connections, run-time input normalisation (layer_norm,
    /// constant_norm_rescale) and a BatchTopK threshold that differs between latents (dictionary_learning keeps one
    /// scalar). Training hyperparameters the SAE does not carry (lr, steps, seed, l1_penalty, buffer sizes) are written as
    /// null.
    /// </summary>
    public static void Save(Sae sae, string dir)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(dir);
        if (File.Exists(dir)) throw new SaeSharpException($"{dir}: is a file; a folder is expected (dictionary_learning: ae.pt and config.json in a folder).");
        var cfg = sae.Cfg;
        string dictClass = ClassOfArchitecture.GetValueOrDefault(cfg.Architecture)
            ?? throw new SaeSharpException(
                $"architecture '{cfg.Architecture}' has no dictionary_learning class (it has {string.Join(", ", ClassOfArchitecture.Select(kv => $"{kv.Key} → {kv.Value}"))}); convert it --to saelens instead");
        if (cfg.DOut is { } dOut && dOut != cfg.DIn)
            throw new SaeSharpException($"this {cfg.Architecture} SAE is a transcoder (d_in={cfg.DIn}, d_out={dOut}); dictionary_learning's {dictClass} reconstructs its input only.");
        if (sae.HasSkip) throw new SaeSharpException($"this {cfg.Architecture} SAE has a skip connection W_skip, which dictionary_learning's {dictClass} lacks.");
        if (cfg.NormalizeActivations != "none")
            throw new SaeSharpException(
                $"normalize_activations is '{cfg.NormalizeActivations}': dictionary_learning's {dictClass} has no run-time input normalisation, so the converted SAE would encode other activations.");
        if (cfg.ReshapeActivations != "none")
            throw new SaeSharpException($"reshape_activations is '{cfg.ReshapeActivations}': dictionary_learning's {dictClass} reads flat activations only.");

        Directory.CreateDirectory(dir);
        using var group = new AtomicFileGroup();
        using (NewDisposeScope())
        using (no_grad())
        {
            var (stateDict, prefixes) = StateDict(sae, dictClass);
            TorchSave.SaveStateDict(Path.Combine(dir, WeightsFile), stateDict, prefixes, group);
        }
        group.WriteAllText(Path.Combine(dir, ConfigFile), TrainerConfig(cfg, dictClass).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        group.Commit();
    }

    /// <summary>The dictionary class's state dict (in its <c>state_dict()</c> order) and module prefixes, in the caller's
    /// dispose scope.</summary>
    private static (List<KeyValuePair<string, Tensor>> StateDict, string[] Prefixes) StateDict(Sae sae, string dictClass)
    {
        var cfg = sae.Cfg;
        var w = sae.WeightsByName();
        var wEnc = w["W_enc"].detach();
        var bDec = w["b_dec"].detach();
        // dictionary_learning's classes all subtract b_dec from the input except JumpReluAutoEncoder.
        bool dlSubtracts = dictClass != "JumpReluAutoEncoder";
        Tensor? shift = null; // added to the encoder's pre-activation bias
        if (dlSubtracts != cfg.ApplyBDecToInput)
        {
            var c = bDec.to(wEnc.dtype).matmul(wEnc);
            shift = dlSubtracts ? c : -c;
        }
        Tensor Shifted(Tensor b) => shift is null ? b.detach() : b.detach().add(shift.to(b.dtype), TorchScalars.One);
        var sd = new List<KeyValuePair<string, Tensor>>();
        void Add(string key, Tensor t) => sd.Add(KeyValuePair.Create(key, t.contiguous()));
        var kBuffer = cfg.K is { } kv ? tensor(kv, dtype: ScalarType.Int32) : null;
        switch (dictClass)
        {
            case "AutoEncoder":
                Add("bias", bDec);
                Add("encoder.weight", wEnc.t());
                Add("encoder.bias", Shifted(w["b_enc"]));
                Add("decoder.weight", w["W_dec"].detach().t());
                return (sd, ["", "encoder", "decoder"]);
            case "GatedAutoEncoder":
            {
                var rMag = w["r_mag"].detach();
                Add("decoder_bias", bDec);
                Add("r_mag", rMag);
                Add("gate_bias", Shifted(w["b_gate"]));
                // π_mag = exp(r_mag)·(x̃·W_enc) + b_mag: the shift enters scaled by exp(r_mag)
                Add("mag_bias", shift is null ? w["b_mag"].detach() : w["b_mag"].detach().add(rMag.exp().mul(shift.to(rMag.dtype)), TorchScalars.One));
                Add("encoder.weight", wEnc.t());
                Add("decoder.weight", w["W_dec"].detach().t());
                return (sd, ["", "encoder", "decoder"]);
            }
            case "JumpReluAutoEncoder":
                Add("W_enc", wEnc);
                Add("b_enc", Shifted(w["b_enc"]));
                Add("W_dec", w["W_dec"].detach());
                Add("b_dec", bDec);
                Add("threshold", w["threshold"].detach());
                return (sd, [""]);
            case "AutoEncoderTopK":
            case "BatchTopKSAE":
                Add("b_dec", bDec);
                Add("k", kBuffer!);
                Add("threshold", dictClass == "AutoEncoderTopK" ? tensor(-1f) : ScalarThreshold(w["threshold"], cfg));
                Add("decoder.weight", w["W_dec"].detach().t());
                Add("encoder.weight", wEnc.t());
                Add("encoder.bias", Shifted(w["b_enc"]));
                return (sd, ["", "decoder", "encoder"]);
            case "MatryoshkaBatchTopKSAE":
            {
                var widths = cfg.MatryoshkaWidths!;
                var groups = new long[widths.Length];
                for (int i = 0; i < widths.Length; i++) groups[i] = widths[i] - (i == 0 ? 0 : widths[i - 1]);
                Add("W_enc", wEnc);
                Add("b_enc", Shifted(w["b_enc"]));
                Add("W_dec", w["W_dec"].detach());
                Add("b_dec", bDec);
                Add("k", kBuffer!);
                Add("threshold", ScalarThreshold(w["threshold"], cfg));
                Add("group_sizes", tensor(groups, dtype: ScalarType.Int64));
                return (sd, [""]);
            }
            default:
                throw new SaeSharpException($"dictionary_learning class '{dictClass}' cannot be written.");
        }
    }

    /// <summary>BatchTopK's per-latent threshold buffer (every entry equal) as dictionary_learning's float32 scalar.</summary>
    private static Tensor ScalarThreshold(Tensor perLatent, SaeConfig cfg)
    {
        var t = perLatent.detach().to(ScalarType.Float32);
        var first = t[0];
        if (!t.eq(first).all().item<bool>())
            throw new SaeSharpException(
                $"this {cfg.Architecture} SAE's threshold differs between latents (from {t.min().item<float>()} to {t.max().item<float>()}); dictionary_learning's BatchTopK classes keep one scalar threshold.");
        return first.clone();
    }

    /// <summary>config.json as dictionary_learning's trainers write it, with the fields of their <c>config</c> that the SAE
    /// determines; the others are null.</summary>
    private static JsonObject TrainerConfig(SaeConfig cfg, string dictClass)
    {
        var (layer, submodule) = SubmoduleOf(cfg.Metadata.HookName);
        var trainer = new JsonObject
        {
            ["trainer_class"] = TrainerOfClass[dictClass],
            ["dict_class"] = dictClass,
        };
        switch (dictClass)
        {
            case "AutoEncoder":
            case "GatedAutoEncoder":
                trainer["l1_penalty"] = null;
                break;
            case "JumpReluAutoEncoder":
                trainer["target_l0"] = null;
                trainer["bandwidth"] = null;
                trainer["sparsity_penalty"] = null;
                break;
            default:
                trainer["k"] = cfg.K;
                break;
        }
        if (dictClass == "MatryoshkaBatchTopKSAE")
        {
            var widths = cfg.MatryoshkaWidths!;
            trainer["group_sizes"] = new JsonArray(widths.Select((x, i) => (JsonNode?)(x - (i == 0 ? 0 : widths[i - 1]))).ToArray());
        }
        trainer["activation_dim"] = cfg.DIn;
        trainer["dict_size"] = cfg.DSae;
        trainer["lr"] = null;
        trainer["seed"] = null;
        trainer["device"] = "cpu";
        trainer["layer"] = layer;
        trainer["lm_name"] = cfg.Metadata.ModelName;
        trainer["submodule_name"] = submodule;
        trainer["wandb_name"] = dictClass;
        trainer["steps"] = null;
        var buffer = new JsonObject
        {
            ["d_submodule"] = cfg.DIn,
            ["io"] = "out",
            ["n_ctxs"] = null,
            ["ctx_len"] = cfg.Metadata.ContextSize,
            ["refresh_batch_size"] = null,
            ["out_batch_size"] = null,
            ["device"] = "cpu",
        };
        return new JsonObject { ["trainer"] = trainer, ["buffer"] = buffer };
    }

    /// <summary>The layer and dictionary_learning submodule name of a TransformerLens hook: <c>blocks.3.hook_mlp_out</c> →
    /// (3, <c>mlp_out_layer3</c>), the inverse of <see cref="HookName"/>; (layer or null, null) for other hooks.</summary>
    internal static (int? Layer, string? Submodule) SubmoduleOf(string? hookName)
    {
        if (hookName is null) return (null, null);
        var m = Regex.Match(hookName, @"^blocks\.(\d+)\.hook_(resid_post|resid_pre|mlp_out|attn_out)$");
        if (m.Success) return (int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), $"{m.Groups[2].Value}_layer{m.Groups[1].Value}");
        var layer = Regex.Match(hookName, @"^blocks\.(\d+)\.");
        return (layer.Success ? int.Parse(layer.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : null, null);
    }
}
