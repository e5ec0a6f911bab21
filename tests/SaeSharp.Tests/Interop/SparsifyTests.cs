using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static SaeSharp.Tests.Interop.GemmaScopeTests;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

public sealed class SparsifyTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-sparsify-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>sparsify's <c>save_to_disk</c> layout: cfg.json (SparseCoderConfig fields + d_in) and sae.safetensors.</summary>
    internal static Dictionary<string, Tensor> WriteSae(string folder, int dIn = 5, int numLatents = 12, int k = 3, bool transcode = false,
        int seed = 1, Action<JsonObject>? editCfg = null, Action<Dictionary<string, Tensor>>? editWeights = null)
    {
        Directory.CreateDirectory(folder);
        var cfg = new JsonObject
        {
            ["activation"] = "topk",
            ["expansion_factor"] = 32,
            ["normalize_decoder"] = true,
            ["num_latents"] = numLatents,
            ["k"] = k,
            ["multi_topk"] = false,
            ["skip_connection"] = false,
            ["transcode"] = transcode,
            ["d_in"] = dIn,
        };
        editCfg?.Invoke(cfg);
        File.WriteAllText(Path.Combine(folder, "cfg.json"), cfg.ToJsonString());
        int n = cfg["num_latents"]!.GetValue<int>() is > 0 and var nl ? nl : dIn * cfg["expansion_factor"]!.GetValue<int>();
        var g = new Generator((ulong)seed);
        var w = new Dictionary<string, Tensor>
        {
            ["encoder.weight"] = randn(n, dIn, generator: g) * 0.5,
            ["encoder.bias"] = randn(n, generator: g) * 0.1,
            ["W_dec"] = randn(n, dIn, generator: g) * 0.5,
            ["b_dec"] = randn(dIn, generator: g),
        };
        editWeights?.Invoke(w);
        SafeTensors.Save(Path.Combine(folder, "sae.safetensors"), w);
        return w;
    }

    /// <summary>sparsify's <c>encode</c>/<c>decode</c> elementwise: pre = ReLU((x − b_dec?)·encoder.weightᵀ + bias),
    /// keep the k largest (ties broken by lower index; the kept values are then the same whatever the tie rule),
    /// ŷ = Σ acts·W_dec[idx] + b_dec.</summary>
    static (double[,] F, double[,] Y) Reference(Dictionary<string, Tensor> w, float[,] x, int k, bool transcode)
    {
        int rows = x.GetLength(0);
        int n = (int)w["encoder.weight"].shape[0], d = (int)w["encoder.weight"].shape[1];
        var enc = w["encoder.weight"].data<float>().ToArray();
        var bias = w["encoder.bias"].data<float>().ToArray();
        var dec = w["W_dec"].data<float>().ToArray();
        var bDec = w["b_dec"].data<float>().ToArray();
        var f = new double[rows, n];
        var y = new double[rows, d];
        for (int r = 0; r < rows; r++)
        {
            var pre = new double[n];
            for (int j = 0; j < n; j++)
            {
                double s = bias[j];
                for (int i = 0; i < d; i++) s += (x[r, i] - (transcode ? 0 : bDec[i])) * (double)enc[j * d + i];
                pre[j] = Math.Max(s, 0);
            }
            foreach (int j in Enumerable.Range(0, n).OrderByDescending(j => pre[j]).ThenBy(j => j).Take(k)) f[r, j] = pre[j];
            for (int i = 0; i < d; i++)
            {
                double s = bDec[i];
                for (int j = 0; j < n; j++) s += f[r, j] * dec[j * d + i];
                y[r, i] = s;
            }
        }
        return (f, y);
    }

    [Theory]
    [InlineData(false, "layers.6", "blocks.6.hook_resid_post")]
    [InlineData(true, "layers.2.mlp", "blocks.2.ln2.hook_normalized")]
    public void Loaded_sae_matches_sparsify_encode_and_decode(bool transcode, string hookpoint, string hook)
    {
        var folder = Path.Combine(_dir, hookpoint);
        var w = WriteSae(folder, dIn: 5, numLatents: 12, k: 3, transcode: transcode, seed: 2);
        Assert.Equal("sparsify", SaeLoader.DetectFormat(folder));
        using var sae = SaeLoader.Load(folder);
        Assert.Equal(SaeArchitectures.TopK, sae.Cfg.Architecture);
        Assert.Equal(3, sae.Cfg.K);
        Assert.Equal(!transcode, sae.Cfg.ApplyBDecToInput);
        Assert.Equal(hook, sae.Cfg.Metadata.HookName);

        var x = RandomRows(6, 5, seed: 3, scale: 2.0);
        var (fRef, yRef) = Reference(w, x, 3, transcode);
        var xt = ToTensor(x);
        AssertClose(fRef, sae.Encode(xt), 1e-4, "latents");
        AssertClose(yRef, sae.forward(xt), 1e-4, "reconstruction");
        Assert.True(sae.Encode(xt).gt(0).sum(1).le(3).all().item<bool>());
    }

    [Fact]
    public void Num_latents_zero_means_expansion_factor_times_d_in_and_the_weights_file_path_also_loads()
    {
        var folder = Path.Combine(_dir, "gpt_neox.layers.1.attention");
        WriteSae(folder, dIn: 3, numLatents: 0, k: 2, editCfg: c => c["expansion_factor"] = 4);
        using var sae = SaeLoader.Load(Path.Combine(folder, "sae.safetensors"));
        Assert.Equal(12, sae.Cfg.DSae);
        Assert.Equal("blocks.1.hook_attn_out", sae.Cfg.Metadata.HookName);
    }

    [Fact]
    public void Unrecognised_hookpoints_are_kept_and_the_run_config_gives_the_model()
    {
        File.WriteAllText(Path.Combine(_dir, "config.json"), """{"model": "EleutherAI/pythia-70m", "batch_size": 8}""");
        var folder = Path.Combine(_dir, "embed_in");
        WriteSae(folder, dIn: 3, numLatents: 6, k: 2);
        using var sae = Sparsify.Load(folder);
        Assert.Equal("embed_in", sae.Cfg.Metadata.HookName);
        Assert.Equal("EleutherAI/pythia-70m", sae.Cfg.Metadata.ModelName);
    }

    [Fact]
    public void A_run_folder_is_refused_listing_its_hookpoints()
    {
        WriteSae(Path.Combine(_dir, "layers.1"), seed: 1);
        WriteSae(Path.Combine(_dir, "layers.0"), seed: 2);
        Directory.CreateDirectory(Path.Combine(_dir, "logs"));
        Assert.Equal("sparsify", SaeLoader.DetectFormat(_dir));
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(_dir));
        Assert.Contains("layers.0, layers.1", e.Message);
        Assert.DoesNotContain("logs", e.Message);
    }

    [Theory]
    [InlineData("skip_connection")]
    [InlineData("embed_skip")]
    [InlineData("gram_lookup")]
    public void Options_that_change_the_function_are_refused(string option)
    {
        var folder = Path.Combine(_dir, "layers.0");
        WriteSae(folder, editCfg: c => c[option] = true);
        var e = Assert.Throws<SaeSharpException>(() => Sparsify.Load(folder));
        Assert.Contains(option, e.Message);
        Assert.Contains("cfg.json", e.Message);
    }

    [Fact]
    public void Groupmax_activation_and_a_stray_skip_weight_are_refused()
    {
        var a = Path.Combine(_dir, "a");
        WriteSae(a, editCfg: c => c["activation"] = "groupmax");
        Assert.Contains("groupmax", Assert.Throws<SaeSharpException>(() => Sparsify.Load(a)).Message);

        var b = Path.Combine(_dir, "b");
        WriteSae(b, dIn: 5, editWeights: w => w["W_skip"] = zeros(5, 5));
        var e = Assert.Throws<SaeSharpException>(() => Sparsify.Load(b));
        Assert.Contains("W_skip", e.Message);
        Assert.Contains("sae.safetensors", e.Message);
    }

    [Theory]
    [InlineData("W_dec", new long[] { 12, 4 }, "'W_dec' has shape [12, 4], expected [12, 5]")]
    [InlineData("encoder.weight", new long[] { 11, 5 }, "'encoder.weight' has shape [11, 5], expected [12, 5]")]
    [InlineData("b_dec", null, "missing tensor 'b_dec'")]
    public void Missing_or_misshapen_tensors_are_refused_naming_file_and_key(string key, long[]? shape, string expected)
    {
        var folder = Path.Combine(_dir, "layers.0");
        WriteSae(folder, dIn: 5, numLatents: 12, editWeights: w =>
        {
            if (shape is null) w.Remove(key);
            else w[key] = zeros(shape);
        });
        var e = Assert.Throws<SaeSharpException>(() => Sparsify.Load(folder));
        Assert.Contains(Path.Combine(folder, "sae.safetensors"), e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void A_safetensors_header_claiming_another_shape_than_its_data_is_refused()
    {
        var folder = Path.Combine(_dir, "layers.0");
        WriteSae(folder, dIn: 5, numLatents: 12);
        var file = Path.Combine(folder, "sae.safetensors");
        var bytes = File.ReadAllBytes(file);
        var text = System.Text.Encoding.Latin1.GetString(bytes);
        int at = text.IndexOf("\"shape\":[12,5]", text.IndexOf("\"W_dec\"", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.True(at > 0);
        System.Text.Encoding.Latin1.GetBytes("\"shape\":[12,6]").CopyTo(bytes, at); // same header length, more data claimed
        File.WriteAllBytes(file, bytes);
        var e = Assert.Throws<SaeSharpException>(() => Sparsify.Load(folder));
        Assert.Contains(file, e.Message);
        Assert.Contains("W_dec", e.Message);
    }

    [Fact]
    public void K_larger_than_the_dictionary_is_refused()
    {
        var folder = Path.Combine(_dir, "layers.0");
        WriteSae(folder, numLatents: 4, k: 5);
        var e = Assert.Throws<SaeSharpException>(() => Sparsify.Load(folder));
        Assert.Contains("k=5", e.Message);
    }

    [Theory]
    [InlineData(5, 1073741824, "d_in=5, num_latents=0, expansion_factor=1073741824 give no usable latent count")]
    [InlineData(-5, 32, "d_in=-5, num_latents=0, expansion_factor=32 give no usable latent count")]
    public void Sizes_that_give_no_latent_count_are_refused_naming_the_cfg(int dIn, int expansion, string expected)
    {
        var folder = Path.Combine(_dir, "layers.0");
        WriteSae(folder, numLatents: 4, k: 3);
        File.WriteAllText(Path.Combine(folder, "cfg.json"),
            $$"""{"activation": "topk", "expansion_factor": {{expansion}}, "num_latents": 0, "k": 3, "d_in": {{dIn}}}""");
        var e = Assert.Throws<SaeSharpException>(() => Sparsify.Load(folder));
        Assert.Contains(Path.Combine(folder, "cfg.json") + ": " + expected, e.Message);
    }

    /// <summary>sparsify hooks a module: an SAE reads the module's output, a transcoder (transcode) its input. For a
    /// whole layer that is the residual stream after it (hook_resid_post) or before it (hook_resid_pre); for the MLP or
    /// attention, its output (hook_mlp_out, hook_attn_out) or its input, the layer norm before it (ln2 for the MLP, ln1
    /// for attention).</summary>
    [Theory]
    [InlineData("layers.3", false, "blocks.3.hook_resid_post")]
    [InlineData("layers.3", true, "blocks.3.hook_resid_pre")]
    [InlineData("model.layers.3.mlp", false, "blocks.3.hook_mlp_out")]
    [InlineData("model.layers.3.mlp", true, "blocks.3.ln2.hook_normalized")]
    [InlineData("transformer.h.3.attn", false, "blocks.3.hook_attn_out")]
    [InlineData("gpt_neox.layers.3.attention", true, "blocks.3.ln1.hook_normalized")]
    public void Hookpoint_names_map_to_the_module_output_or_for_a_transcoder_its_input(string hookpoint, bool transcode, string hook) =>
        Assert.Equal(hook, Sparsify.HookName(hookpoint, transcode));

    /// <summary>sparsify's SparseCoderConfig defaults (sparsify/config.py): expansion_factor 32, num_latents 0 (use the
    /// expansion factor) and k 32. A cfg.json written with only d_in gives d_sae = 32·d_in and k = 32.</summary>
    [Fact]
    public void Missing_expansion_factor_num_latents_and_k_take_sparsify_defaults()
    {
        string folder = Path.Combine(_dir, "layers.0");
        var w = WriteSae(folder, dIn: 2, numLatents: 64, k: 3);
        foreach (var t in w.Values) t.Dispose();
        File.WriteAllText(Path.Combine(folder, "cfg.json"), """{"d_in": 2}""");
        using var sae = Sparsify.Load(folder);
        Assert.Equal((2, 64, 32), (sae.Cfg.DIn, sae.Cfg.DSae, sae.Cfg.K));
        Assert.Equal(SaeArchitectures.TopK, sae.Cfg.Architecture);
    }
}
