using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary>
/// SAELens's transcoder architectures (<c>transcoder</c>, <c>skip_transcoder</c>, <c>jumprelu_transcoder</c>, in
/// sae_lens/saes/transcoder.py) in the layout SAELens 6's save_model writes: cfg.json (TranscoderConfig.to_dict: the
/// SAEConfig fields, <c>d_out</c>, metadata with <c>hook_name_out</c>) and sae_weights.safetensors, d_in 6 → d_out 5
/// (tests/data/saelens_conversions/saelens_*, references computed by SAELens's formulas in
/// bench/reference/saelens_conversions_fixture.py: f = ReLU(x·W_enc + b_enc) without b_dec subtraction, jumprelu
/// f = ReLU(pre)·[pre &gt; threshold], out = f·W_dec + b_dec (+ x·W_skipᵀ for the skip transcoders)), and SAELens
/// 6.37.6's <c>jumprelu_skip_transcoder</c> (JumpReLU encoder, SkipTranscoder forward).
/// </summary>
public sealed class SaeLensTranscoderTests : FakeHubTestBase
{
    private static string Fixture(string arch) => TestPaths.Data("saelens_conversions", "saelens_" + arch);

    public static TheoryData<string, Type> Architectures => new()
    {
        { "transcoder", typeof(StandardSae) },
        { "skip_transcoder", typeof(SkipTranscoderSae) },
        { "jumprelu_transcoder", typeof(JumpReluSae) },
        { "jumprelu_skip_transcoder", typeof(JumpReluSae) },     // SAELens 6.37.6's JumpReLUSkipTranscoder
    };

    [Theory]
    [MemberData(nameof(Architectures))]
    public void Loads_from_a_folder_and_from_the_hub_with_SAELens_outputs(string arch, Type type)
    {
        _server.Repos["someone/transcoders"] = new()
        {
            [arch + "/cfg.json"] = new(File.ReadAllBytes(Path.Combine(Fixture(arch), "cfg.json"))),
            [arch + "/sae_weights.safetensors"] = new(File.ReadAllBytes(Path.Combine(Fixture(arch), "sae_weights.safetensors")), Lfs: true),
        };
        foreach (var spec in new[] { Fixture(arch), "hf:someone/transcoders/" + arch })
        {
            using var sae = SaeLoader.Load(spec, new SaeLoadOptions { Hub = Hub });
            Assert.IsType(type, sae);
            var c = sae.Cfg;
            Assert.Equal((6, 5, 14, false), (c.DIn, c.DOut, c.DSae, c.ApplyBDecToInput));
            Assert.Equal(("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"), (c.Metadata.HookName, c.Metadata.Extra!["hook_name_out"].GetString()));
            Assert.Equal(arch, SaeLensFormat.SaeLensArchitecture(c));
            SaeLensConversionTests.AssertMatchesReference(sae, Fixture(arch));
        }
    }

    [Fact]
    public void A_skip_transcoders_decode_leaves_the_skip_term_out_as_SAELens_decode_does()
    {
        using var sae = (SkipTranscoderSae)SaeLoader.Load(Fixture("skip_transcoder"));
        var w = SafeTensors.Load(Path.Combine(Fixture("skip_transcoder"), "sae_weights.safetensors"));
        try
        {
            using var scope = NewDisposeScope();
            var x = randn(4, 6, generator: new TorchSharp.torch.Generator(3));
            var f = sae.Encode(x);
            SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(f.matmul(w["W_dec"]) + w["b_dec"], sae.Decode(f), what: "decode");
            var skip = x.matmul(w["W_skip"].t());
            SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(f.matmul(w["W_dec"]) + w["b_dec"] + skip, sae.Run(x).SaeOut, what: "run");
            // [batch, pos, d_in] keeps its leading dimensions, the skip term included.
            var x3 = x.reshape(2, 2, 6);
            SaeSharp.Tests.Saes.SaeTestUtil.AssertClose((f.matmul(w["W_dec"]) + w["b_dec"] + skip).reshape(2, 2, 5), sae.forward(x3), what: "forward 3-D");
            Assert.True(skip.abs().max().item<float>() > 0.01, "the skip term matters");
        }
        finally
        {
            foreach (var t in w.Values) t.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void Saved_again_it_is_written_under_SAELens_name_and_keys_and_reloads_the_same(string arch, Type type)
    {
        using var sae = SaeLoader.Load(Fixture(arch));
        string dir = Path.Combine(_work, "resaved-" + arch);
        SaeLensFormat.Save(sae, dir);
        // The fields SAELens's TranscoderConfig.from_dict reads (d_out has a default of 768 there, so it must be written).
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "cfg.json")))!.AsObject();
        Assert.Equal(arch, (string?)cfg["architecture"]);
        Assert.Equal((6, 14, 5, false), ((int)cfg["d_in"]!, (int)cfg["d_sae"]!, (int)cfg["d_out"]!, (bool)cfg["apply_b_dec_to_input"]!));
        Assert.Equal("blocks.0.hook_mlp_out", (string?)cfg["metadata"]!["hook_name_out"]);
        using (var f = SafeTensorsFile.Open(Path.Combine(dir, "sae_weights.safetensors")))
        {
            var expected = new List<string> { "W_dec", "W_enc", "b_dec", "b_enc" };
            if (arch.Contains("skip")) expected.Add("W_skip");
            if (arch.StartsWith("jumprelu")) expected.Add("threshold");
            Assert.Equal(expected.Order(StringComparer.Ordinal), f.Names.Order(StringComparer.Ordinal));
        }
        using var again = SaeLoader.Load(dir);
        Assert.IsType(type, again);
        SaeLensConversionTests.AssertMatchesReference(again, Fixture(arch));
    }

    [Fact]
    public void A_SaeSharp_SAE_is_saved_as_a_SAELens_transcoder_only_when_it_is_one()
    {
        string Saved(SaeConfig cfg)
        {
            using var sae = SaeFactory.Create(cfg);
            string dir = Path.Combine(_work, Guid.NewGuid().ToString("N"));
            SaeLensFormat.Save(sae, dir);
            return (string)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "cfg.json")))!["architecture"]!;
        }
        Assert.Equal("transcoder", Saved(new SaeConfig { DIn = 4, DSae = 8, DOut = 3, ApplyBDecToInput = false }));
        Assert.Equal("jumprelu_transcoder", Saved(new SaeConfig { Architecture = SaeArchitectures.JumpReLU, DIn = 4, DSae = 8, DOut = 4, ApplyBDecToInput = false }));
        // An autoencoder, or a same-width "transcoder" that subtracts b_dec (SAELens's transcoders cannot), stays standard.
        Assert.Equal("standard", Saved(new SaeConfig { DIn = 4, DSae = 8 }));
        Assert.Equal("standard", Saved(new SaeConfig { DIn = 4, DSae = 8, DOut = 4, ApplyBDecToInput = true }));
        Assert.Equal("topk", Saved(new SaeConfig { Architecture = SaeArchitectures.TopK, K = 2, DIn = 4, DSae = 8, DOut = 3, ApplyBDecToInput = false }));
    }

    [Fact]
    public void Bad_transcoder_files_are_refused_naming_the_file_and_problem()
    {
        string Copy(string arch)
        {
            string dir = Path.Combine(_work, Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(Fixture(arch))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            return dir;
        }
        // skip_transcoder without W_skip
        string dir = Copy("skip_transcoder");
        var w = SafeTensors.Load(Path.Combine(dir, "sae_weights.safetensors"));
        w.Remove("W_skip", out var skip);
        skip!.Dispose();
        SafeTensors.Save(Path.Combine(dir, "sae_weights.safetensors"), w);
        foreach (var t in w.Values) t.Dispose();
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Equal($"{Path.Combine(dir, "sae_weights.safetensors")}: missing tensor 'W_skip' (expected shape [5, 6] for architecture 'skip_transcoder')", e.Message);

        // W_skip of the wrong shape
        dir = Copy("skip_transcoder");
        w = SafeTensors.Load(Path.Combine(dir, "sae_weights.safetensors"));
        w["W_skip"].Dispose();
        w["W_skip"] = zeros(6, 5);
        SafeTensors.Save(Path.Combine(dir, "sae_weights.safetensors"), w);
        foreach (var t in w.Values) t.Dispose();
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Contains("tensor 'W_skip' has shape [6, 5] but the cfg (d_in=6, d_sae=14) needs [5, 6]", e.Message);

        // apply_b_dec_to_input true (SAELens's TranscoderConfig raises), or missing (its default is true)
        dir = Copy("transcoder");
        string cfgPath = Path.Combine(dir, "cfg.json");
        File.WriteAllText(cfgPath, File.ReadAllText(cfgPath).Replace("\"apply_b_dec_to_input\": false", "\"apply_b_dec_to_input\": true"));
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Equal($"{cfgPath}: architecture 'transcoder' needs apply_b_dec_to_input false (SAELens's TranscoderConfig refuses true, its default), got true", e.Message);

        // d_out missing: SAELens's default 768, which the weights contradict
        dir = Copy("jumprelu_transcoder");
        cfgPath = Path.Combine(dir, "cfg.json");
        File.WriteAllText(cfgPath, File.ReadAllText(cfgPath).Replace(",\n  \"d_out\": 5", ""));
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.Contains("imply 'W_dec' of shape [14, 768]", e.Message);

        // no cfg.json: not a SAELens folder
        dir = Copy("transcoder");
        File.Delete(Path.Combine(dir, "cfg.json"));
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(dir));
        Assert.StartsWith($"{dir}: not a recognised SAE\nlooked for (format: files):\n  SAELens: cfg.json + sae_weights.safetensors\n", e.Message);
    }

    /// <summary><c>sae eval --model</c> on a SAELens skip transcoder read at <c>mlp.hook_in</c>: spliced at its
    /// <c>hook_name_out</c>, as SaeSharp's own transcoders are.</summary>
    [Fact]
    public void Sae_eval_with_a_model_splices_a_SAELens_skip_transcoder_at_its_output_hook()
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.SkipTranscoder, DIn = 128, DSae = 64, DOut = 128, ApplyBDecToInput = false };
        cfg.Metadata.HookName = "blocks.1.mlp.hook_in";
        cfg.Metadata.Extra = new() { ["hook_name_out"] = System.Text.Json.JsonSerializer.SerializeToElement("blocks.1.hook_mlp_out") };
        string dir = Path.Combine(_work, "skip");
        using (var sae = SaeFactory.Create(cfg))
        {
            sae.InitializeWeights(new TorchSharp.torch.Generator(2));
            using (no_grad()) ((SkipTranscoderSae)sae).WSkip.fill_(0.01);
            SaeLensFormat.Save(sae, dir);
        }
        Assert.Equal("skip_transcoder", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "cfg.json")))!["architecture"]);
        string corpus = Path.Combine(_work, "c.jsonl"), json = Path.Combine(_work, "e.json");
        var (exit, _, err) = CliRunner.Run("corpus", "--out", corpus, "--docs", "40", "--seed", "3");
        Assert.True(exit == 0, err);
        (exit, var output, err) = CliRunner.Run("eval", "--sae", dir, "--model", "builtin", "--dataset", corpus, "--tokens", "256", "--context-size", "32", "--json", json);
        Assert.True(exit == 0, err + output);
        var result = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Contains("\"hook_name_out\": \"blocks.1.hook_mlp_out\"", result.ToJsonString(new() { WriteIndented = true }));
    }

    [Fact]
    public void Sae_info_shows_the_transcoder_architectures()
    {
        var (exit, output, err) = CliRunner.Run("info", Fixture("jumprelu_transcoder"));
        Assert.True(exit == 0, err);
        Assert.Matches(@"architecture\W+jumprelu \(SAELens: jumprelu_transcoder\)", output);
        Assert.Matches(@"d_out\W+5", output);
        Assert.Matches(@"hook_name_out\W+blocks\.0\.hook_mlp_out", output);
        (exit, output, err) = CliRunner.Run("info", Fixture("skip_transcoder"));
        Assert.True(exit == 0, err);
        Assert.Matches(@"architecture\W+skip_transcoder", output);
        // W_enc 6·14 + b_enc 14 + W_dec 14·5 + b_dec 5 + W_skip 5·6
        Assert.Matches(@"parameters\W+203\b", output);
    }
}
