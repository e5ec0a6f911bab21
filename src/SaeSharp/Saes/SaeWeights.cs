using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>Copies named tensors into an SAE's parameters and buffers, checking names and shapes first.</summary>
public static class SaeWeights
{
    /// <summary>
    /// Refuses a config whose sizes do not match the weights before the SAE is built: <c>W_enc</c> must be
    /// [d_in, d_sae] (where the architecture has one) and <c>W_dec</c> [d_sae, d_out], as every architecture stores them;
    /// a temporal SAE's <c>n_attn_layers</c> must be the number of <c>attn_layers.&lt;i&gt;</c> present.
    /// </summary>
    public static void CheckDeclaredSizes(SaeConfig cfg, IReadOnlyDictionary<string, Tensor> weights, string cfgPath, string source)
    {
        void Expect(string name, long[] shape)
        {
            if (!weights.TryGetValue(name, out var w))
                throw new SaeSharpException($"{source}: missing tensor '{name}' (expected shape [{string.Join(", ", shape)}] for architecture '{cfg.Architecture}')");
            if (!w.shape.SequenceEqual(shape))
                throw new SaeSharpException($"{cfgPath}: d_in={cfg.DIn}, d_sae={cfg.DSae} imply '{name}' of shape [{string.Join(", ", shape)}] but {source} holds [{string.Join(", ", w.shape)}]");
        }
        if (SaeArchitectures.Find(cfg.Architecture)?.HasEncoderWeights?.Invoke(cfg) ?? true) Expect("W_enc", [cfg.DIn, cfg.DSae]);
        Expect("W_dec", [cfg.DSae, cfg.DOutOrIn]);
        // A temporal SAE builds n_attn_layers attention layers: a huge count would allocate (or loop) without bound.
        if (cfg.Architecture == SaeArchitectures.Temporal && cfg.Extra?.GetValueOrDefault("n_attn_layers") is { ValueKind: System.Text.Json.JsonValueKind.Number } n
            && n.TryGetInt64(out long layers))
        {
            int present = weights.Keys.Where(k => k.StartsWith("attn_layers.", StringComparison.Ordinal)).Select(k => k.Split('.')[1]).Distinct(StringComparer.Ordinal).Count();
            if (layers != present)
                throw new SaeSharpException($"{cfgPath}: n_attn_layers={layers} but {source} holds {present} attention layers (attn_layers.<i>.*)");
        }
    }

    /// <summary>A new SAE of <paramref name="cfg"/> holding <paramref name="weights"/>: the config validated, its declared
    /// sizes checked against the tensors before anything is allocated (<see cref="CheckDeclaredSizes"/>), then
    /// <see cref="Load"/>; the SAE is disposed if loading fails.</summary>
    public static Sae Create(SaeConfig cfg, IReadOnlyDictionary<string, Tensor> weights, string cfgSource, string weightsSource)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        cfg.Validate(cfgSource);
        CheckDeclaredSizes(cfg, weights, cfgSource, weightsSource);
        var sae = SaeFactory.Create(cfg);
        try
        {
            Load(sae, weights, weightsSource);
        }
        catch
        {
            sae.Dispose();
            throw;
        }
        return sae;
    }

    /// <summary>
    /// Loads <paramref name="weights"/> (SAELens names) into <paramref name="sae"/>. Every parameter and buffer of the
    /// SAE must be present with its exact shape; tensors the SAE does not have are an error unless listed in
    /// <paramref name="ignore"/>. Floating dtypes are converted; an integer tensor for a floating weight is an error. Nothing is copied unless everything checks out.
    /// </summary>
    public static void Load(Sae sae, IReadOnlyDictionary<string, Tensor> weights, string source, IEnumerable<string>? ignore = null)
    {
        var targets = sae.state_dict();
        var ignored = new HashSet<string>(ignore ?? [], StringComparer.Ordinal);
        foreach (var (name, target) in targets)
        {
            if (!weights.TryGetValue(name, out var w))
                throw new SaeSharpException($"{source}: missing tensor '{name}' (expected shape [{string.Join(", ", target.shape)}] for architecture '{sae.Cfg.Architecture}')");
            if (!w.shape.SequenceEqual(target.shape))
                throw new SaeSharpException($"{source}: tensor '{name}' has shape [{string.Join(", ", w.shape)}] but the cfg (d_in={sae.Cfg.DIn}, d_sae={sae.Cfg.DSae}) needs [{string.Join(", ", target.shape)}]");
            // An integer or bool tensor where a weight belongs is not an SAE's weight: converting it would load garbage.
            if (target.is_floating_point() && !w.is_floating_point())
                throw new SaeSharpException($"{source}: tensor '{name}' is {w.dtype}, expected floating point (float32, float16, bfloat16 or float64)");
        }
        foreach (var name in weights.Keys)
            if (!targets.ContainsKey(name) && !ignored.Contains(name))
                throw new SaeSharpException($"{source}: unexpected tensor '{name}' for architecture '{sae.Cfg.Architecture}' (expected: {string.Join(", ", targets.Keys)})"
                    + (name == "W_enc" && !sae.HasEncoderWeights ? "; its encoder is tied to the decoder (W_decᵀ), so SAELens saves no W_enc" : ""));
        using var _ = no_grad();
        using var scope = torch.NewDisposeScope();
        foreach (var (name, target) in targets)
        {
            var w = weights[name];
            if (!w.isfinite().all().item<bool>())
                throw new SaeSharpException($"{source}: tensor '{name}' holds NaN or Inf");
            target.copy_(w.to(target.dtype));
        }
    }
}
