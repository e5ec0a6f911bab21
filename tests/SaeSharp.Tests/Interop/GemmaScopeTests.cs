using System.IO.Compression;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

public sealed class GemmaScopeTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-gemma-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Writes an .npz archive exactly as <c>numpy.savez</c> does: one stored <c>name.npy</c> entry per array.</summary>
    internal static void WriteNpz(string path, IEnumerable<KeyValuePair<string, Tensor>> arrays)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var (name, t) in arrays)
        {
            var tmp = Path.GetTempFileName();
            try
            {
                Npy.Save(tmp, t);
                zip.CreateEntryFromFile(tmp, name + ".npy", CompressionLevel.NoCompression);
            }
            finally
            {
                File.Delete(tmp);
            }
        }
    }

    /// <summary>Gemma Scope's arrays with random values: thresholds in [0.05, 0.35] so some latents fire and some do not.</summary>
    internal static Dictionary<string, Tensor> RandomParams(int dIn, int dSae, int seed)
    {
        var g = new Generator((ulong)seed);
        return new Dictionary<string, Tensor>
        {
            ["W_enc"] = randn(dIn, dSae, generator: g) * 0.5,
            ["W_dec"] = randn(dSae, dIn, generator: g) * 0.5,
            ["threshold"] = rand(dSae, generator: g) * 0.3 + 0.05,
            ["b_enc"] = randn(dSae, generator: g) * 0.1,
            ["b_dec"] = randn(dIn, generator: g),
        };
    }

    /// <summary>Writes a params.npz into <paramref name="folder"/> and returns the arrays written.</summary>
    internal static Dictionary<string, Tensor> WriteParams(string folder, int dIn = 5, int dSae = 12, int seed = 1)
    {
        var p = RandomParams(dIn, dSae, seed);
        WriteNpz(Path.Combine(folder, "params.npz"), p);
        return p;
    }

    /// <summary>The Gemma Scope tutorial's JumpReLUSAE, elementwise in double precision:
    /// pre = x·W_enc + b_enc, f = [pre &gt; θ]·ReLU(pre), x̂ = f·W_dec + b_dec.</summary>
    static (double[,] F, double[,] Y) Reference(Dictionary<string, Tensor> p, float[,] x)
    {
        int n = x.GetLength(0);
        int dIn = (int)p["W_enc"].shape[0], dSae = (int)p["W_enc"].shape[1];
        var wEnc = p["W_enc"].data<float>().ToArray();
        var wDec = p["W_dec"].data<float>().ToArray();
        var bEnc = p["b_enc"].data<float>().ToArray();
        var bDec = p["b_dec"].data<float>().ToArray();
        var th = p["threshold"].data<float>().ToArray();
        var f = new double[n, dSae];
        var y = new double[n, dIn];
        for (int r = 0; r < n; r++)
        {
            for (int j = 0; j < dSae; j++)
            {
                double pre = bEnc[j];
                for (int i = 0; i < dIn; i++) pre += x[r, i] * (double)wEnc[i * dSae + j];
                f[r, j] = pre > th[j] ? Math.Max(pre, 0) : 0;
            }
            for (int i = 0; i < dIn; i++)
            {
                double s = bDec[i];
                for (int j = 0; j < dSae; j++) s += f[r, j] * wDec[j * dIn + i];
                y[r, i] = s;
            }
        }
        return (f, y);
    }

    internal static float[,] RandomRows(int n, int d, int seed, double scale = 1.0)
    {
        var t = randn(n, d, generator: new Generator((ulong)seed)) * scale;
        var a = t.data<float>().ToArray();
        var x = new float[n, d];
        for (int r = 0; r < n; r++)
            for (int i = 0; i < d; i++) x[r, i] = a[r * d + i];
        return x;
    }

    internal static Tensor ToTensor(float[,] x)
    {
        int n = x.GetLength(0), d = x.GetLength(1);
        var flat = new float[n * d];
        Buffer.BlockCopy(x, 0, flat, 0, flat.Length * sizeof(float));
        return tensor(flat).reshape(n, d);
    }

    internal static void AssertClose(double[,] expected, Tensor actual, double tol, string what)
    {
        Assert.Equal(new long[] { expected.GetLength(0), expected.GetLength(1) }, actual.shape);
        var a = actual.contiguous().data<float>().ToArray();
        int cols = expected.GetLength(1);
        double max = 0;
        for (int r = 0; r < expected.GetLength(0); r++)
            for (int c = 0; c < cols; c++) max = Math.Max(max, Math.Abs(expected[r, c] - a[r * cols + c]));
        Assert.True(max <= tol, $"{what}: max |difference| {max} exceeds {tol}");
    }

    [Fact]
    public void Loaded_sae_matches_the_tutorial_formula_without_b_dec_subtraction()
    {
        var folder = Path.Combine(_dir, "sae");
        var p = WriteParams(folder, dIn: 5, dSae: 12, seed: 3);
        using var sae = GemmaScope.Load(folder);
        Assert.Equal(SaeArchitectures.JumpReLU, sae.Cfg.Architecture);
        Assert.False(sae.Cfg.ApplyBDecToInput);
        Assert.Equal((5, 12), (sae.Cfg.DIn, sae.Cfg.DSae));

        var x = RandomRows(7, 5, seed: 4, scale: 2.0);
        var (fRef, yRef) = Reference(p, x);
        var xt = ToTensor(x);
        var f = sae.Encode(xt);
        int active = (int)f.gt(0).sum().item<long>();
        Assert.InRange(active, 1, 7 * 12 - 1); // the thresholds matter: neither all nor none fire
        AssertClose(fRef, f, 1e-4, "feature activations");
        AssertClose(yRef, sae.forward(xt), 1e-4, "reconstruction");
    }

    [Fact]
    public void Lower_case_w_keys_and_the_file_path_itself_load_through_the_registry()
    {
        var p = RandomParams(4, 6, seed: 5);
        var file = Path.Combine(_dir, "params.npz");
        WriteNpz(file, p.Select(kv => new KeyValuePair<string, Tensor>(kv.Key.Replace("W_", "w_"), kv.Value)));
        Assert.Equal("Gemma Scope", SaeLoader.DetectFormat(file));
        Assert.Equal("Gemma Scope", SaeLoader.DetectFormat(_dir));
        using var sae = SaeLoader.Load(file);
        Assert.True(sae.WEnc.equal(p["W_enc"]).all().item<bool>());
        Assert.True(sae.WDec.equal(p["W_dec"]).all().item<bool>());
        Assert.True(((JumpReluSae)sae).Threshold.equal(p["threshold"]).all().item<bool>());
    }

    [Theory]
    [InlineData("gemma-scope-2b-pt-res", "gemma-2-2b", "blocks.12.hook_resid_post", "none")]
    [InlineData("models--google--gemma-scope-9b-it-mlp", "gemma-2-9b-it", "blocks.12.hook_mlp_out", "none")]
    [InlineData("gemma-scope-2b-pt-att", "gemma-2-2b", "blocks.12.attn.hook_z", "hook_z")]
    public void Folder_names_give_model_hook_and_dataset(string repo, string model, string hook, string reshape)
    {
        var folder = Path.Combine(_dir, repo, "layer_12", "width_4k", "average_l0_82");
        WriteParams(folder, dIn: 2, dSae: 4096, seed: 6);
        using var sae = SaeLoader.Load(folder);
        Assert.Equal(model, sae.Cfg.Metadata.ModelName);
        Assert.Equal(hook, sae.Cfg.Metadata.HookName);
        Assert.Equal(reshape, sae.Cfg.ReshapeActivations);
        Assert.Equal(1024, sae.Cfg.Metadata.ContextSize);
        Assert.Equal("monology/pile-uncopyrighted", sae.Cfg.Metadata.DatasetPath);
    }

    [Fact]
    public void Embedding_saes_are_rescaled_as_SAELens_does_to_read_the_scaled_hook_embed()
    {
        // SAELens's gemma_2 loader: "embedding" in the folder → hook_embed (a res repo), W_enc / √d_in and W_dec · √d_in,
        // since TransformerLens's Gemma W_E (and so hook_embed) holds the √d_model factor the SAE was not trained with.
        var folder = Path.Combine(_dir, "gemma-scope-2b-pt-res", "embedding", "width_4k", "average_l0_6");
        var p = WriteParams(folder, dIn: 4, dSae: 4096, seed: 9);
        using var sae = SaeLoader.Load(folder);
        Assert.Equal("hook_embed", sae.Cfg.Metadata.HookName);
        Assert.Equal("gemma-2-2b", sae.Cfg.Metadata.ModelName);
        Assert.True(sae.WEnc.allclose(p["W_enc"] * 0.5));                      // √4 = 2
        Assert.True(sae.WDec.allclose(p["W_dec"] * 2.0));
        Assert.True(sae.BDec.equal(p["b_dec"]).all().item<bool>());
        Assert.True(((JumpReluSae)sae).Threshold.equal(p["threshold"]).all().item<bool>());
        // On hook_embed = 2·e the loaded SAE fires exactly as the stored params on the unscaled embedding e.
        var e = RandomRows(6, 4, seed: 10, scale: 2.0);
        var (fRef, _) = Reference(p, e);
        var f = sae.Encode(ToTensor(e) * 2.0);
        Assert.InRange((int)f.gt(0).sum().item<long>(), 1, 6 * 4096 - 1);
        AssertClose(fRef, f, 1e-4, "feature activations on the scaled embedding");
    }

    [Fact]
    public void Embedding_folders_outside_a_res_repo_are_rescaled_but_get_no_hook()
    {
        var folder = Path.Combine(_dir, "gemma-scope-2b-pt-mlp", "embedding", "width_4k", "average_l0_6");
        var p = WriteParams(folder, dIn: 9, dSae: 4096, seed: 11);
        using var sae = GemmaScope.Load(folder);
        Assert.Null(sae.Cfg.Metadata.HookName);
        Assert.True(sae.WEnc.allclose(p["W_enc"] / 3.0));                      // √9 = 3
    }

    [Fact]
    public void Unrecognised_folders_leave_the_hook_unset()
    {
        var folder = Path.Combine(_dir, "layer_3", "mine");
        WriteParams(folder, seed: 7);
        using var sae = GemmaScope.Load(folder);
        Assert.Null(sae.Cfg.Metadata.HookName);
        Assert.Null(sae.Cfg.Metadata.ModelName);
    }

    [Theory]
    [InlineData("width_4k", 4096)]
    [InlineData("width_16k", 16384)]
    [InlineData("width_65k", 65536)]
    [InlineData("width_262k", 262144)]
    public void Width_folders_name_powers_of_two_by_their_leading_digits(string width, int dSae)
    {
        // gemma-scope-2b-pt-res/layer_12/width_65k/average_l0_72 holds 65536 latents (was refused: 65·1024 ≠ 65536).
        var folder = Path.Combine(_dir, "gemma-scope-2b-pt-res", "layer_12", width, "average_l0_72");
        WriteParams(folder, dIn: 1, dSae: dSae, seed: 3);
        using var sae = SaeLoader.Load(folder);
        Assert.Equal(dSae, sae.Cfg.DSae);
    }

    [Fact]
    public void A_width_folder_that_disagrees_with_the_arrays_is_refused()
    {
        var folder = Path.Combine(_dir, "gemma-scope-2b-pt-res", "layer_1", "width_16k", "average_l0_10");
        WriteParams(folder, dIn: 3, dSae: 8, seed: 8);
        var e = Assert.Throws<SaeSharpException>(() => GemmaScope.Load(folder));
        Assert.Contains("folder 'width_16k' claims 16k latents (16000 to 16999) but W_enc holds d_sae = 8", e.Message);
        Assert.Contains("params.npz", e.Message);
    }

    [Theory]
    [InlineData("threshold", null, "missing array 'threshold'")]
    [InlineData("b_enc", new long[] { 13 }, "'b_enc' has shape [13], expected [12]")]
    [InlineData("W_dec", new long[] { 5, 12 }, "'W_dec' has shape [5, 12], expected [12, 5]")]
    public void Missing_or_misshapen_arrays_are_refused_naming_file_and_key(string key, long[]? shape, string expected)
    {
        var p = RandomParams(5, 12, seed: 9);
        if (shape is null) p.Remove(key);
        else p[key] = zeros(shape);
        var file = Path.Combine(_dir, "params.npz");
        WriteNpz(file, p);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(file));
        Assert.Contains(file, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void An_array_whose_header_claims_more_data_than_it_holds_is_refused()
    {
        var file = Path.Combine(_dir, "params.npz");
        WriteNpz(file, RandomParams(5, 12, seed: 10));
        // Rewrite W_dec.npy with its header intact and half of its data.
        using (var zip = ZipFile.Open(file, ZipArchiveMode.Update))
        {
            var entry = zip.GetEntry("W_dec.npy")!;
            byte[] bytes;
            using (var s = entry.Open())
            using (var ms = new MemoryStream())
            {
                s.CopyTo(ms);
                bytes = ms.ToArray();
            }
            entry.Delete();
            using var w = zip.CreateEntry("W_dec.npy", CompressionLevel.NoCompression).Open();
            w.Write(bytes, 0, bytes.Length - 5 * 12 * 2);
        }
        var e = Assert.Throws<SaeSharpException>(() => GemmaScope.Load(file));
        Assert.Contains("W_dec.npy", e.Message);
        Assert.Contains(file, e.Message);
    }

    [Fact]
    public void A_scaling_factor_other_than_one_is_refused_and_ones_are_dropped()
    {
        var p = RandomParams(3, 4, seed: 11);
        p["scaling_factor"] = ones(4);
        var folder = Path.Combine(_dir, "ones");
        WriteNpz(Path.Combine(folder, "params.npz"), p);
        using (var sae = GemmaScope.Load(folder)) Assert.Equal(4, sae.Cfg.DSae);

        p["scaling_factor"] = full(4, 2f);
        folder = Path.Combine(_dir, "twos");
        WriteNpz(Path.Combine(folder, "params.npz"), p);
        var e = Assert.Throws<SaeSharpException>(() => GemmaScope.Load(folder));
        Assert.Contains("scaling_factor", e.Message);
    }
}
