using SaeSharp.Interop;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>Activations with a layer axis and, when the files say, the hook and model of each layer slot.</summary>
/// <param name="X">[N, L, d] float32.</param>
/// <param name="Hooks">The hook of each slot (null entries: unknown).</param>
/// <param name="Models">The model of each slot (null entries: unknown).</param>
public sealed record CrossCoderData(Tensor X, IReadOnlyList<string?> Hooks, IReadOnlyList<string?> Models) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() => X.Dispose();

    /// <summary>
    /// Refuses rows whose slots record another hook than the crosscoder at <paramref name="ccPath"/> recorded for that
    /// slot (<paramref name="sources"/>), or the models of a diffing pair in the other order: caches given in another
    /// order than the crosscoder's slots would be evaluated as plausible but meaningless numbers. A slot unrecorded on
    /// either side is not checked; model names are compared only for their order (one model may be named two ways).
    /// </summary>
    public void CheckSlotsMatch(CrossCoderSources sources, string ccPath)
    {
        ArgumentNullException.ThrowIfNull(sources);
        int slots = Hooks.Count;
        if (sources.HookNames is { } recorded && recorded.Count == slots)
            for (int l = 0; l < slots; l++)
                if (Hooks[l] is { } h && h != recorded[l])
                    throw new SaeSharpException($"slot {l}: the activations are of hook '{h}' (the cache's manifest.json), but {ccPath} reads '{recorded[l]}' there " +
                                                $"(its slots: {string.Join(", ", recorded)}); give the caches in the order of its slots");
        var models = sources.ModelNames is { } m && m.Count == slots ? m : null;
        if (models is null || Models.Any(x => x is null)) return;
        for (int l = 0; l < slots; l++)
            if (Models[l] != models[l] && models.Contains(Models[l]!))
                throw new SaeSharpException($"slot {l}: the activations are of model '{Models[l]}' (the cache's manifest.json), but {ccPath} reads '{models[l]}' there " +
                                            $"(its slots: {string.Join(", ", models)}); give the caches in the order of its slots");
    }
}

/// <summary>
/// Activations with a layer axis for crosscoders, [N, L, d] float32 in memory: one <c>.safetensors</c> (tensor
/// <c>activations</c> or its only tensor) or <c>.npy</c> file holding [N, L, d]; or several sources of [N, d] rows, one
/// per layer slot, stacked in the order given: <c>.safetensors</c>/<c>.npy</c> files, or <c>sae cache</c> folders (their
/// shards in row order; a cache written with a target hook gives two slots, its hook and its target hook). Caches name
/// their hook and model, and their token ids must agree row for row (the same dataset, context size and tokenizer):
/// several hooks of one model, or one hook of a base and a chat model (model diffing).
/// </summary>
public static class CrossCoderActivations
{
    /// <summary>Loads <paramref name="paths"/> as described on the type; every file is checked for rank, widths, row
    /// counts and finite values, and named in the error.</summary>
    public static Tensor Load(IReadOnlyList<string> paths, long? maxRows = null)
    {
        using var data = LoadWithSources(paths, maxRows);
        return data.X.alias();
    }

    /// <summary><see cref="Load"/>, with the hook and model of each slot where the sources record them.</summary>
    public static CrossCoderData LoadWithSources(IReadOnlyList<string> paths, long? maxRows = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new SaeSharpException("crosscoder activations: no file given");
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>();
        var hooks = new List<string?>();
        var models = new List<string?>();
        Tensor? tokens = null;
        string? tokensFrom = null;
        foreach (var path in paths)
        {
            if (Directory.Exists(path) && File.Exists(Path.Combine(path, ActivationCacheFolder.ManifestName)))
            {
                var m = ActivationCacheManifest.Read(path);
                var shards = ActivationCacheFolder.ShardFiles(path, m).Select(f => SafeTensors.Load(f)).ToList();
                parts.Add(cat(shards.Select(s => s["activations"].to(ScalarType.Float32)).ToList(), 0));
                (hooks, models) = (hooks.Append(m.Hook).ToList(), models.Append(m.Model).ToList());
                if (m.TargetHook is { } th)
                {
                    parts.Add(cat(shards.Select(s => s["targets"].to(ScalarType.Float32)).ToList(), 0));
                    (hooks, models) = (hooks.Append(th).ToList(), models.Append(m.Model).ToList());
                }
                if (shards.All(s => s.ContainsKey("token_ids")))
                {
                    var t = cat(shards.Select(s => s["token_ids"]).ToList(), 0);
                    if (tokens is null) (tokens, tokensFrom) = (t, path);
                    else if (t.shape[0] != tokens.shape[0])
                        throw new SaeSharpException($"{path}: {t.shape[0]} rows, but {tokensFrom} has {tokens.shape[0]}; cache every hook or model on the same dataset, --tokens and --context-size");
                    else if (!t.shape.SequenceEqual(tokens.shape) || !t.eq(tokens).all().item<bool>())
                        throw new SaeSharpException($"{path}: its rows are not the tokens of {tokensFrom}'s rows (token_ids differ); cache every hook or model on the same dataset, --tokens and --context-size");
                }
            }
            else
            {
                parts.Add(LoadOne(path));
                (hooks, models) = (hooks.Append(null).ToList(), models.Append(null).ToList());
            }
        }
        Tensor x;
        if (parts.Count == 1)
        {
            x = parts[0];
            if (x.Dimensions != 3)
                throw new SaeSharpException($"{paths[0]}: activations have shape [{string.Join(", ", x.shape)}]; a crosscoder reads [N, n_layers, d] (or give one [N, d] file per layer, comma-separated)");
        }
        else
        {
            for (int i = 0; i < parts.Count; i++)
            {
                if (parts[i].Dimensions != 2)
                    throw new SaeSharpException($"{paths[Math.Min(i, paths.Count - 1)]}: activations have shape [{string.Join(", ", parts[i].shape)}]; with one file per layer each holds [N, d]");
                if (parts[i].shape[0] != parts[0].shape[0] || parts[i].shape[1] != parts[0].shape[1])
                    throw new SaeSharpException($"{paths[Math.Min(i, paths.Count - 1)]}: shape [{string.Join(", ", parts[i].shape)}] differs from {paths[0]}'s [{string.Join(", ", parts[0].shape)}]; the layers' files must hold the same rows and width");
            }
            x = stack(parts, 1);
        }
        if (maxRows is { } limit && limit < x.shape[0]) x = x.narrow(0, 0, limit);
        if (!x.isfinite().all().item<bool>())
            throw new SaeSharpException($"{string.Join(", ", paths)}: activations hold NaN or Inf");
        if (parts.Count == 1) (hooks, models) = (Enumerable.Repeat<string?>(null, (int)x.shape[1]).ToList(), Enumerable.Repeat<string?>(null, (int)x.shape[1]).ToList());
        return new CrossCoderData(x.contiguous().MoveToOuterDisposeScope(), hooks, models);
    }

    private static Tensor LoadOne(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: activation file not found");
        var ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext == ".npy") return Npy.Load(path).to(ScalarType.Float32);
        if (ext != ".safetensors")
            throw new SaeSharpException($"{path}: unsupported activation file type '{ext}' for a crosscoder (expected .safetensors or .npy)");
        var all = SafeTensors.Load(path);
        string name = all.ContainsKey("activations") ? "activations"
            : all.Count == 1 ? all.Keys.First()
            : throw new SaeSharpException($"{path}: cannot tell which tensor holds the activations: no tensor named 'activations' (has: {string.Join(", ", all.Keys)})");
        return all[name].to(ScalarType.Float32);
    }
}
