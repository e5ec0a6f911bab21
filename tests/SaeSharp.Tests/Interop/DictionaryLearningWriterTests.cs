using System.IO.Compression;
using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary><see cref="DictionaryLearning.Save"/>: the inverse of the reader, checked against the files dictionary_learning
/// wrote (tests/data/dictionary_learning) and by round trips through <see cref="SaeLoader"/>.</summary>
public sealed class DictionaryLearningWriterTests : IDisposable
{
    static readonly string Fixtures = Path.Combine(SaeSharp.Tests.Tokenizers.TestPaths.Data(), "dictionary_learning");
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-dlwrite-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static byte[] Entry(ZipArchive zip, string name)
    {
        var e = zip.GetEntry(name) ?? throw new InvalidOperationException($"no {name}");
        using var s = e.Open();
        var buffer = new byte[e.Length];
        s.ReadExactly(buffer);
        return buffer;
    }

    [Theory]
    [InlineData("AutoEncoder")]
    [InlineData("AutoEncoderTopK")]
    [InlineData("BatchTopKSAE")]
    [InlineData("GatedAutoEncoder")]
    [InlineData("JumpReluAutoEncoder")]
    public void Loading_and_saving_a_dictionary_learning_SAE_gives_back_its_pickle_storages_and_config_fields(string dictClass)
    {
        string source = Path.Combine(Fixtures, dictClass);
        using var sae = SaeLoader.Load(source);
        string outDir = Path.Combine(_dir, dictClass);
        DictionaryLearning.Save(sae, outDir);

        // ae.pt: the same pickle (keys, order, dtypes, shapes, _metadata) and the same storage bytes as the class's
        // state_dict() saved by PyTorch; only PyTorch ≥ 2.1's byteorder record is new.
        using (var original = ZipFile.OpenRead(Path.Combine(source, "ae.pt")))
        using (var written = ZipFile.OpenRead(Path.Combine(outDir, "ae.pt")))
        {
            Assert.Equal(original.Entries.Select(e => e.FullName).Append("ae/byteorder").Order(StringComparer.Ordinal),
                written.Entries.Select(e => e.FullName).Order(StringComparer.Ordinal));
            foreach (var e in original.Entries) Assert.Equal(Entry(original, e.FullName), Entry(written, e.FullName));
        }

        // config.json: the fields of the config dictionary_learning wrote, in its order, with the values the SAE knows.
        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        var actual = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!.AsObject();
        foreach (var part in new[] { "trainer", "buffer" })
            Assert.Equal(expected[part]!.AsObject().Select(kv => kv.Key), actual[part]!.AsObject().Select(kv => kv.Key));
        foreach (var key in new[] { "trainer_class", "dict_class", "activation_dim", "dict_size", "layer", "lm_name", "submodule_name", "k" })
            Assert.Equal(expected["trainer"]![key]?.ToJsonString(), actual["trainer"]![key]?.ToJsonString());
        foreach (var key in new[] { "d_submodule", "io", "ctx_len" })
            Assert.Equal(expected["buffer"]![key]!.ToJsonString(), actual["buffer"]![key]!.ToJsonString());
    }

    /// <summary>A <paramref name="architecture"/> SAE with every parameter random (and BatchTopK's threshold set).</summary>
    static Sae RandomSae(string architecture, bool applyBDec, int seed)
    {
        var cfg = new SaeConfig
        {
            Architecture = architecture, DIn = 8, DSae = 24, ApplyBDecToInput = applyBDec,
            K = architecture is SaeArchitectures.TopK or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK ? 5 : null,
            MatryoshkaWidths = architecture == SaeArchitectures.MatryoshkaBatchTopK ? [6, 14, 24] : null,
            Metadata = new SaeMetadata { ModelName = "EleutherAI/pythia-70m-deduped", HookName = "blocks.3.hook_resid_post", ContextSize = 64 },
        };
        var sae = SaeFactory.Create(cfg);
        var g = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var p in sae.parameters()) p.copy_(randn(p.shape, generator: g) * 0.5);
        if (sae is BatchTopKSae b) b.Threshold.fill_(0.3);
        return sae;
    }

    [Theory]
    [InlineData(SaeArchitectures.Standard, true)]
    [InlineData(SaeArchitectures.Standard, false)]
    [InlineData(SaeArchitectures.TopK, true)]
    [InlineData(SaeArchitectures.TopK, false)]
    [InlineData(SaeArchitectures.BatchTopK, true)]
    [InlineData(SaeArchitectures.BatchTopK, false)]
    [InlineData(SaeArchitectures.Gated, true)]
    [InlineData(SaeArchitectures.Gated, false)]
    [InlineData(SaeArchitectures.JumpReLU, true)]
    [InlineData(SaeArchitectures.JumpReLU, false)]
    [InlineData(SaeArchitectures.MatryoshkaBatchTopK, true)]
    [InlineData(SaeArchitectures.MatryoshkaBatchTopK, false)]
    public void Saved_SAE_loads_back_and_encodes_and_decodes_as_before(string architecture, bool applyBDec)
    {
        using var sae = RandomSae(architecture, applyBDec, seed: 11);
        string dir = Path.Combine(_dir, $"{architecture}-{applyBDec}");
        DictionaryLearning.Save(sae, dir);
        using var loaded = SaeLoader.Load(dir);
        Assert.Equal(architecture, loaded.Cfg.Architecture);
        Assert.Equal(sae.Cfg.K, loaded.Cfg.K);
        Assert.Equal(sae.Cfg.MatryoshkaWidths, loaded.Cfg.MatryoshkaWidths);
        Assert.Equal("EleutherAI/pythia-70m-deduped", loaded.Cfg.Metadata.ModelName);
        Assert.Equal("blocks.3.hook_resid_post", loaded.Cfg.Metadata.HookName);
        Assert.Equal(64, loaded.Cfg.Metadata.ContextSize);

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = randn(32, 8, generator: new Generator(4)) * 2;
        var (yBefore, fBefore) = sae.Run(x);
        var (yAfter, fAfter) = loaded.Run(x);
        // Same L0 pattern, and values within float32 rounding of the folded bias b_enc ± b_dec·W_enc.
        Assert.True(fBefore.gt(0).equal(fAfter.gt(0)).all().item<bool>(), "the same latents fire");
        Assert.True(fBefore.gt(0).any().item<bool>(), "some latents fire");
        Assert.True((fBefore - fAfter).abs().max().item<float>() <= 1e-6 * Math.Max(1, fBefore.abs().max().item<float>()));
        Assert.True((yBefore - yAfter).abs().max().item<float>() <= 1e-6 * Math.Max(1, yBefore.abs().max().item<float>()));
    }

    [Fact]
    public void Architectures_dictionary_learning_lacks_are_refused_by_name()
    {
        using var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.MatchingPursuit, DIn = 4, DSae = 8, K = 2 });
        string dir = Path.Combine(_dir, "mp");
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.Save(sae, dir));
        Assert.Contains("'matching_pursuit' has no dictionary_learning class", e.Message);
        Assert.False(File.Exists(Path.Combine(dir, "ae.pt")));
    }

    [Fact]
    public void Run_time_normalisation_transcoders_and_uneven_BatchTopK_thresholds_are_refused()
    {
        using (var ln = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 4, DSae = 8, NormalizeActivations = "layer_norm" }))
            Assert.Contains("normalize_activations is 'layer_norm'", Assert.Throws<SaeSharpException>(() => DictionaryLearning.Save(ln, Path.Combine(_dir, "ln"))).Message);
        using (var tc = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 4, DOut = 6, DSae = 8, ApplyBDecToInput = false }))
            Assert.Contains("transcoder (d_in=4, d_out=6)", Assert.Throws<SaeSharpException>(() => DictionaryLearning.Save(tc, Path.Combine(_dir, "tc"))).Message);
        using var b = (BatchTopKSae)SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.BatchTopK, DIn = 4, DSae = 8, K = 2 });
        b.Threshold[3] = tensor(0.5f);
        string dir = Path.Combine(_dir, "bt");
        Assert.Contains("threshold differs between latents", Assert.Throws<SaeSharpException>(() => DictionaryLearning.Save(b, dir)).Message);
        Assert.False(File.Exists(Path.Combine(dir, "ae.pt")));
        Assert.False(File.Exists(Path.Combine(dir, "config.json")));
    }

    [Theory]
    [InlineData("blocks.3.hook_mlp_out", 3, "mlp_out_layer3")]
    [InlineData("blocks.12.hook_resid_pre", 12, "resid_pre_layer12")]
    [InlineData("blocks.5.attn.hook_z", 5, null)]
    [InlineData("hook_embed", null, null)]
    public void Hook_names_map_to_the_layer_and_submodule_name_the_reader_maps_back(string hook, int? layer, string? submodule)
    {
        Assert.Equal((layer, submodule), DictionaryLearning.SubmoduleOf(hook));
        if (submodule is not null) Assert.Equal(hook, DictionaryLearning.HookName(submodule, "out"));
    }
}
