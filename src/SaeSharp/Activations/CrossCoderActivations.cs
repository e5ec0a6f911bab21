using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>
/// Activations with a layer axis for crosscoders, [N, L, d] float32 in memory: one <c>.safetensors</c> (tensor
/// <c>activations</c> or its only tensor) or <c>.npy</c> file holding [N, L, d], or one [N, d] file per layer (the files'
/// rows aligned: row i of every file from the same token), stacked in the order given.
/// </summary>
public static class CrossCoderActivations
{
    /// <summary>Loads <paramref name="paths"/> as described on the type; every file is checked for rank, widths, row
    /// counts and finite values, and named in the error.</summary>
    public static Tensor Load(IReadOnlyList<string> paths, long? maxRows = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new SaeSharpException("crosscoder activations: no file given");
        using var scope = NewDisposeScope();
        var parts = paths.Select(LoadOne).ToList();
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
                    throw new SaeSharpException($"{paths[i]}: activations have shape [{string.Join(", ", parts[i].shape)}]; with one file per layer each holds [N, d]");
                if (parts[i].shape[0] != parts[0].shape[0] || parts[i].shape[1] != parts[0].shape[1])
                    throw new SaeSharpException($"{paths[i]}: shape [{string.Join(", ", parts[i].shape)}] differs from {paths[0]}'s [{string.Join(", ", parts[0].shape)}]; the layers' files must hold the same rows and width");
            }
            x = stack(parts, 1);
        }
        if (maxRows is { } m && m < x.shape[0]) x = x.narrow(0, 0, m);
        if (!x.isfinite().all().item<bool>())
            throw new SaeSharpException($"{string.Join(", ", paths)}: activations hold NaN or Inf");
        return x.contiguous().MoveToOuterDisposeScope();
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
