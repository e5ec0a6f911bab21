using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.IO;
using TorchSharp;
using static SaeSharp.Tests.Interop.GemmaScopeTests;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

public sealed class OpenAiSaeTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-openai-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>OpenAI's <c>Autoencoder.state_dict()</c> tensors with random values (n latents, d inputs).</summary>
    internal static List<KeyValuePair<string, Tensor>> RandomStateDict(int d, int n, int seed)
    {
        var g = new Generator((ulong)seed);
        return
        [
            new("pre_bias", randn(d, generator: g)),
            new("latent_bias", randn(n, generator: g) * 0.1),
            new("stats_last_nonzero", randint(0, 100, [n], dtype: ScalarType.Int64, generator: g)),
            new("latents_activation_frequency", rand(n, generator: g)),
            new("latents_mean_square", rand(n, generator: g)),
            new("encoder.weight", randn(n, d, generator: g) * 0.5),
            new("decoder.weight", randn(d, n, generator: g) * 0.5),
        ];
    }

    /// <summary>Writes what <c>torch.save(autoencoder.state_dict(), path)</c> produces: an OrderedDict of tensors (one
    /// storage each), then <c>activation</c> and, when given, <c>activation_state_dict</c> {k, postact_fn} and <c>normalize</c>.</summary>
    internal static void WriteCheckpoint(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, string? activation,
        long? k = null, string? postact = "ReLU", bool? normalize = null, IReadOnlyDictionary<string, long[]>? claimedShapes = null)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var w = new PickleWriter().Proto(2).Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark();
        var storages = new Dictionary<string, byte[]>();
        foreach (var (name, t) in tensors)
        {
            string key = storages.Count.ToString();
            var shape = claimedShapes?.GetValueOrDefault(name) ?? t.shape;
            var stride = new long[shape.Length];
            for (int i = shape.Length - 1, s = 1; i >= 0; s *= (int)shape[i], i--) stride[i] = s;
            bool isLong = t.dtype == ScalarType.Int64;
            w.Str(name).Tensor(isLong ? "LongStorage" : "FloatStorage", key, t.numel(), 0, shape, stride);
            storages[key] = isLong
                ? t.data<long>().ToArray().SelectMany(BitConverter.GetBytes).ToArray()
                : t.data<float>().ToArray().SelectMany(BitConverter.GetBytes).ToArray();
        }
        if (activation is not null) w.Str("activation").Str(activation);
        if (k is not null || postact is not null && activation == "TopK")
        {
            w.Str("activation_state_dict").EmptyDict().Mark();
            if (k is not null) w.Str("k").Int(k.Value);
            if (postact is not null) w.Str("postact_fn").Str(postact);
            w.SetItems();
        }
        if (normalize is not null) w.Str("normalize").Op(normalize.Value ? (byte)0x88 : (byte)0x89);
        PickleWriter.WriteCheckpoint(path, w.SetItems().Stop().ToArray(), storages);
    }

    /// <summary>OpenAI's model.py elementwise in double precision: LN(x) = (x − μ)/(σ + 1e-5) with σ the unbiased
    /// standard deviation (when normalising), latents = TopK-then-ReLU (or ReLU) of W(x' − pre_bias) + latent_bias,
    /// recons = (Dᵀ·latents + pre_bias)·σ + μ.</summary>
    static (double[,] F, double[,] Y) Reference(List<KeyValuePair<string, Tensor>> sd, float[,] x, long? k, bool normalize)
    {
        var m = sd.ToDictionary(kv => kv.Key, kv => kv.Value);
        int rows = x.GetLength(0);
        int n = (int)m["encoder.weight"].shape[0], d = (int)m["encoder.weight"].shape[1];
        var enc = m["encoder.weight"].data<float>().ToArray();
        var dec = m["decoder.weight"].data<float>().ToArray();
        var preBias = m["pre_bias"].data<float>().ToArray();
        var latentBias = m["latent_bias"].data<float>().ToArray();
        var f = new double[rows, n];
        var y = new double[rows, d];
        for (int r = 0; r < rows; r++)
        {
            var xr = new double[d];
            for (int i = 0; i < d; i++) xr[i] = x[r, i];
            double mu = 0, std = 1;
            if (normalize)
            {
                mu = xr.Average();
                double ss = xr.Sum(v => (v - mu) * (v - mu));
                std = Math.Sqrt(ss / (d - 1));
                for (int i = 0; i < d; i++) xr[i] = (xr[i] - mu) / (std + 1e-5);
            }
            var pre = new double[n];
            for (int j = 0; j < n; j++)
            {
                double s = latentBias[j];
                for (int i = 0; i < d; i++) s += (xr[i] - preBias[i]) * enc[j * d + i];
                pre[j] = s;
            }
            var keep = k is null ? Enumerable.Range(0, n) : Enumerable.Range(0, n).OrderByDescending(j => pre[j]).Take((int)k);
            foreach (int j in keep) f[r, j] = Math.Max(pre[j], 0);
            for (int i = 0; i < d; i++)
            {
                double s = preBias[i];
                for (int j = 0; j < n; j++) s += dec[i * n + j] * f[r, j];
                y[r, i] = normalize ? s * std + mu : s;
            }
        }
        return (f, y);
    }

    [Fact]
    public void TopK_checkpoint_matches_OpenAIs_layer_normed_encode_and_decode()
    {
        var path = Path.Combine(_dir, "gpt2-small", "resid_post_mlp_v5_32k", "autoencoders", "6.pt");
        var sd = RandomStateDict(d: 6, n: 16, seed: 1);
        WriteCheckpoint(path, sd, "TopK", k: 4);
        Assert.Equal("OpenAI sparse_autoencoder", SaeLoader.DetectFormat(path));
        using var sae = SaeLoader.Load(path);
        Assert.Equal(SaeArchitectures.TopK, sae.Cfg.Architecture);
        Assert.Equal(4, sae.Cfg.K);
        Assert.Equal("layer_norm", sae.Cfg.NormalizeActivations);
        Assert.True(sae.Cfg.ApplyBDecToInput);
        Assert.Equal("blocks.6.hook_resid_post", sae.Cfg.Metadata.HookName);
        Assert.Equal("gpt2-small", sae.Cfg.Metadata.ModelName);

        // Rows with a large offset and scale: without the layer norm the answers would be far off.
        var x = RandomRows(5, 6, seed: 2, scale: 3.0);
        for (int r = 0; r < 5; r++)
            for (int i = 0; i < 6; i++) x[r, i] += 10 * (r + 1);
        var (fRef, yRef) = Reference(sd, x, k: 4, normalize: true);
        var xt = ToTensor(x);
        AssertClose(fRef, sae.Encode(xt), 1e-4, "latents");
        AssertClose(yRef, sae.forward(xt), 1e-3, "reconstruction");
        var (y, f) = sae.Run(xt);
        AssertClose(fRef, f, 1e-4, "Run latents");
        AssertClose(yRef, y, 1e-3, "Run reconstruction");
    }

    [Fact]
    public void Decode_alone_stays_in_the_normalised_space()
    {
        var path = Path.Combine(_dir, "ae.pt");
        var sd = RandomStateDict(d: 5, n: 8, seed: 3);
        WriteCheckpoint(path, sd, "TopK", k: 3);
        using var sae = OpenAiSae.Load(path);
        var x = ToTensor(RandomRows(4, 5, seed: 4, scale: 4.0)) + 7;
        using var _ = no_grad();
        var normalisedRecon = sae.Decode(sae.Encode(x));
        // forward = Decode(Encode(x))·σ + μ with σ, μ of each row of x: undo it by hand and compare.
        var mu = x.mean([1], keepdim: true);
        var std = (x - mu).std(1, keepdim: true);
        Assert.True(((sae.forward(x) - mu) / std).allclose(normalisedRecon, rtol: 1e-4, atol: 1e-4));
        Assert.False(sae.forward(x).allclose(normalisedRecon, rtol: 1e-2, atol: 1e-2));
    }

    [Fact]
    public void ReLU_checkpoint_without_activation_entry_is_a_standard_sae_without_normalisation()
    {
        var path = Path.Combine(_dir, "resid_delta_mlp_v4", "autoencoders", "3.pt");
        var sd = RandomStateDict(d: 4, n: 9, seed: 5);
        WriteCheckpoint(path, sd, activation: null);
        using var sae = SaeLoader.Load(path);
        Assert.Equal(SaeArchitectures.Standard, sae.Cfg.Architecture);
        Assert.Equal("none", sae.Cfg.NormalizeActivations);
        Assert.Equal("blocks.3.hook_mlp_out", sae.Cfg.Metadata.HookName);
        Assert.Null(sae.Cfg.Metadata.ModelName);
        var x = RandomRows(6, 4, seed: 6, scale: 2.0);
        var (fRef, yRef) = Reference(sd, x, k: null, normalize: false);
        AssertClose(fRef, sae.Encode(ToTensor(x)), 1e-4, "latents");
        AssertClose(yRef, sae.forward(ToTensor(x)), 1e-4, "reconstruction");
    }

    [Fact]
    public void A_folder_holding_the_checkpoint_as_ae_pt_loads()
    {
        // hf:ORG/REPO/PATH downloads a folder's ae.pt; an OpenAI checkpoint saved under that name was "not a recognised SAE".
        var folder = Path.Combine(_dir, "sae");
        var sd = RandomStateDict(d: 4, n: 9, seed: 5);
        WriteCheckpoint(Path.Combine(folder, "ae.pt"), sd, activation: null);
        Assert.Equal("OpenAI sparse_autoencoder", SaeLoader.DetectFormat(folder));
        using var sae = SaeLoader.Load(folder);
        var x = RandomRows(6, 4, seed: 6, scale: 2.0);
        var (fRef, yRef) = Reference(sd, x, k: null, normalize: false);
        AssertClose(fRef, sae.Encode(ToTensor(x)), 1e-4, "latents");
        AssertClose(yRef, sae.forward(ToTensor(x)), 1e-4, "reconstruction");
    }

    [Fact]
    public void A_normalize_entry_overrides_the_TopK_default()
    {
        var path = Path.Combine(_dir, "ae.pt");
        var sd = RandomStateDict(d: 4, n: 8, seed: 7);
        WriteCheckpoint(path, sd, "TopK", k: 2, normalize: false);
        using var sae = OpenAiSae.Load(path);
        Assert.Equal("none", sae.Cfg.NormalizeActivations);
        var x = RandomRows(3, 4, seed: 8);
        var (fRef, yRef) = Reference(sd, x, k: 2, normalize: false);
        AssertClose(fRef, sae.Encode(ToTensor(x)), 1e-4, "latents");
        AssertClose(yRef, sae.forward(ToTensor(x)), 1e-4, "reconstruction");
    }

    [Theory]
    [InlineData("Identity", 2L, "ReLU", "activation 'Identity' is not supported")]
    [InlineData("TopK", 2L, "Identity", "postact_fn 'Identity'")]
    [InlineData("TopK", null, "ReLU", "needs an integer 'k'")]
    [InlineData("TopK", 9L, "ReLU", "k = 9")]
    public void Unsupported_activations_are_refused_naming_the_file(string activation, long? k, string postact, string expected)
    {
        var path = Path.Combine(_dir, "ae.pt");
        WriteCheckpoint(path, RandomStateDict(d: 4, n: 8, seed: 9), activation, k, postact);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("decoder.weight", new long[] { 4, 7 }, "'decoder.weight' has shape [4, 7], expected [4, 8]")]
    [InlineData("pre_bias", new long[] { 5 }, "'pre_bias' has shape [5], expected [4]")]
    [InlineData("stats_last_nonzero", new long[] { 3 }, "'stats_last_nonzero' has shape [3], expected [8]")]
    [InlineData("latent_bias", null, "no entry 'latent_bias'")]
    public void Missing_or_misshapen_tensors_are_refused_naming_file_and_key(string key, long[]? shape, string expected)
    {
        var sd = RandomStateDict(d: 4, n: 8, seed: 10);
        int i = sd.FindIndex(kv => kv.Key == key);
        if (shape is null) sd.RemoveAt(i);
        else sd[i] = new(key, zeros(shape, dtype: sd[i].Value.dtype));
        var path = Path.Combine(_dir, "ae.pt");
        WriteCheckpoint(path, sd, "TopK", k: 2);
        var e = Assert.Throws<SaeSharpException>(() => OpenAiSae.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void A_tensor_claiming_more_elements_than_its_storage_holds_is_refused()
    {
        var path = Path.Combine(_dir, "ae.pt");
        WriteCheckpoint(path, RandomStateDict(d: 4, n: 8, seed: 12), "TopK", k: 2,
            claimedShapes: new Dictionary<string, long[]> { ["decoder.weight"] = [4, 9] });
        var e = Assert.Throws<SaeSharpException>(() => OpenAiSae.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("size [4,9]", e.Message); // the pickle reader names the storage; keys are not known at that point
    }

    [Fact]
    public void Unknown_entries_are_refused()
    {
        var sd = RandomStateDict(d: 4, n: 8, seed: 11);
        sd.Add(new("decoder.linear.weight", zeros(8, 4)));
        var path = Path.Combine(_dir, "ae.pt");
        WriteCheckpoint(path, sd, "TopK", k: 2);
        var e = Assert.Throws<SaeSharpException>(() => OpenAiSae.Load(path));
        Assert.Contains("decoder.linear.weight", e.Message);
    }

    [Fact]
    public void A_hostile_pickle_posing_as_an_OpenAI_checkpoint_is_refused_without_running()
    {
        var marker = Path.Combine(_dir, "pwned");
        // {'pre_bias': ..., 'latent_bias': posix.system('touch marker')}
        var pickle = new PickleWriter().Proto(2).EmptyDict().Mark()
            .Str("pre_bias").Tensor("FloatStorage", "0", 2, 0, [2], [1])
            .Str("latent_bias").Global("posix", "system").Mark().Str("touch " + marker).Tuple().Reduce()
            .SetItems().Stop().ToArray();
        var path = Path.Combine(_dir, "evil.pt");
        PickleWriter.WriteCheckpoint(path, pickle, new Dictionary<string, byte[]> { ["0"] = new byte[8] });
        Assert.Equal("OpenAI sparse_autoencoder", SaeLoader.DetectFormat(path));
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("posix", e.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void A_non_checkpoint_file_is_not_detected()
    {
        var path = Path.Combine(_dir, "6.pt");
        File.WriteAllText(path, "not a zip");
        Assert.False(OpenAiSae.IsOpenAiCheckpoint(path));
        Assert.Throws<SaeSharpException>(() => SaeLoader.Load(path));
    }
}
