using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary><c>sae convert</c> and <c>sae info</c> on every format, with files written by the tests in each format.</summary>
public sealed class ConvertTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-convert-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);


    [Fact]
    public void A_folder_whose_sub_folders_hold_SAEs_names_them_instead_of_not_recognised()
    {
        // What `sae train --arch topk,relu --out run` writes (run/topk, run/relu), or a sparsify run's per-hookpoint
        // folders: loading the parent says where the SAEs are.
        string run = Path.Combine(_dir, "run");
        foreach (var arch in new[] { "topk", "relu" })
        {
            var cfg = new SaeConfig { Architecture = arch == "topk" ? SaeArchitectures.TopK : SaeArchitectures.Standard, DIn = 4, DSae = 8, K = 2 };
            using var sae = SaeFactory.Create(cfg);
            SaeLensFormat.Save(sae, Path.Combine(run, arch));
        }
        Directory.CreateDirectory(Path.Combine(run, "checkpoints"));
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(run));
        Assert.Contains("its folders relu, topk hold SAEs", e.Message);
        Assert.Contains(Path.Combine(run, "relu"), e.Message);
        Assert.DoesNotContain("checkpoints", e.Message);
        // One SAE below (the demo's output folder holds `sae/`): the message names it.
        string single = Path.Combine(_dir, "single");
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 4, DSae = 8 }))
            SaeLensFormat.Save(sae, Path.Combine(single, "sae"));
        var one = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(single));
        Assert.Contains("its folder sae holds one: point at " + Path.Combine(single, "sae"), one.Message);
        // A folder with nothing of the kind keeps the plain message.
        var empty = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(Path.Combine(run, "checkpoints")));
        Assert.StartsWith($"{Path.Combine(run, "checkpoints")}: not a recognised SAE\nlooked for (format: files):\n  SAELens: cfg.json + sae_weights.safetensors\n", empty.Message);
        // One fact a line, each within 80 columns but the path's own line.
        Assert.All(empty.Message.Split('\n').Skip(1), l => Assert.True(l.Length <= 80, l));
    }

    [Fact]
    public void Not_recognised_says_which_file_is_missing_or_misnamed()
    {
        // A SAELens folder whose weights file is missing: the error names the file it lacks.
        string saeLens = Path.Combine(_dir, "no-weights");
        using (var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 4, DSae = 8 }))
        {
            SaeLensFormat.Save(sae, saeLens);
            DictionaryLearning.Save(sae, Path.Combine(_dir, "dl"));
        }
        File.Delete(Path.Combine(saeLens, "sae_weights.safetensors"));
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(saeLens));
        Assert.StartsWith($"{saeLens}: not a recognised SAE: it has cfg.json but no weights beside it\n  (sae_weights.safetensors for SAELens, sae.safetensors for sparsify)\nlooked for", e.Message);
        // A dictionary_learning ae.pt saved under another name: the error says the name it is read under; renamed back it loads.
        string renamed = Path.Combine(_dir, "trainer_0.pt");
        File.Move(Path.Combine(_dir, "dl", "ae.pt"), renamed);
        e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(renamed));
        Assert.StartsWith($"{renamed}: not a recognised SAE: a .pt file is read as\n  dictionary_learning's only under the name ae.pt", e.Message);
        Assert.Contains("\n  OpenAI's sparse_autoencoder only when it holds pre_bias and latent_bias\n", e.Message);
        Assert.All(e.Message.Split('\n').Skip(1), l => Assert.True(l.Length <= 80, l));
        File.Move(renamed, Path.Combine(_dir, "dl", "ae.pt"));
        using var back = SaeLoader.Load(Path.Combine(_dir, "dl", "ae.pt"));
        Assert.Equal((4, 8), (back.Cfg.DIn, back.Cfg.DSae));
    }

    /// <summary>Writes an SAE in <paramref name="format"/> under the test folder and returns its path.</summary>
    string WriteSource(string format)
    {
        switch (format)
        {
            case "SAELens":
                {
                    var dir = Path.Combine(_dir, "saelens");
                    var cfg = new SaeConfig
                    {
                        Architecture = SaeArchitectures.TopK, DIn = 6, DSae = 10, K = 3, NormalizeActivations = "layer_norm",
                        Metadata = new SaeMetadata { HookName = "blocks.1.hook_resid_post", ModelName = "gpt2" },
                    };
                    using var sae = SaeFactory.Create(cfg);
                    sae.InitializeWeights(new Generator(1));
                    using (no_grad()) sae.BDec.copy_(randn(6, generator: new Generator(2)));
                    SaeLensFormat.Save(sae, dir);
                    return dir;
                }
            case "dictionary_learning":
                return Path.Combine(SaeSharp.Tests.Tokenizers.TestPaths.Data(), "dictionary_learning", "BatchTopKSAE");
            case "Gemma Scope":
                {
                    var dir = Path.Combine(_dir, "gemma-scope-2b-pt-res", "layer_4", "average_l0_20");
                    GemmaScopeTests.WriteParams(dir, dIn: 6, dSae: 10, seed: 3);
                    return dir;
                }
            case "sparsify":
                {
                    var dir = Path.Combine(_dir, "layers.4");
                    SparsifyTests.WriteSae(dir, dIn: 6, numLatents: 10, k: 3, seed: 4);
                    return dir;
                }
            case "OpenAI sparse_autoencoder":
                {
                    var path = Path.Combine(_dir, "resid_post_attn_v5_32k", "autoencoders", "4.pt");
                    OpenAiSaeTests.WriteCheckpoint(path, OpenAiSaeTests.RandomStateDict(d: 6, n: 10, seed: 5), "TopK", k: 3);
                    return path;
                }
            default:
                throw new ArgumentException(format);
        }
    }

    public static TheoryData<string, string, string?> Formats => new()
    {
        { "SAELens", SaeArchitectures.TopK, "blocks.1.hook_resid_post" },
        { "dictionary_learning", SaeArchitectures.JumpReLU, "blocks.3.hook_mlp_out" },
        { "Gemma Scope", SaeArchitectures.JumpReLU, "blocks.4.hook_resid_post" },
        { "sparsify", SaeArchitectures.TopK, "blocks.4.hook_resid_post" },
        { "OpenAI sparse_autoencoder", SaeArchitectures.TopK, "blocks.4.hook_resid_mid" },
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void Converted_sae_loads_as_SAELens_with_identical_encode_and_decode(string format, string architecture, string? hook)
    {
        var src = WriteSource(format);
        Assert.Equal(format, SaeLoader.DetectFormat(src));
        var dst = Path.Combine(_dir, "out");
        var (exit, stdout, err) = CliRunner.Run("convert", src, "--to", "saelens", dst);
        Assert.True(exit == 0, err);
        Assert.Contains(dst, stdout);
        Assert.Equal("SAELens", SaeLoader.DetectFormat(dst));

        using var original = SaeLoader.Load(src);
        using var converted = SaeLoader.Load(dst);
        Assert.Equal(architecture, converted.Cfg.Architecture);
        Assert.Equal(hook, converted.Cfg.Metadata.HookName);
        Assert.Equal(original.Cfg.NormalizeActivations, converted.Cfg.NormalizeActivations);
        Assert.Equal(original.Cfg.ApplyBDecToInput, converted.Cfg.ApplyBDecToInput);

        using var _ = no_grad();
        var x = randn(16, original.Cfg.DIn, generator: new Generator(7)) * 2 + 0.5;
        var (y1, f1) = original.Run(x);
        var (y2, f2) = converted.Run(x);
        Assert.True(f1.gt(0).any().item<bool>(), "some latent fires");
        Assert.True(f1.equal(f2).all().item<bool>(), "feature activations differ");
        Assert.True(y1.equal(y2).all().item<bool>(), "reconstructions differ");
        Assert.True(original.Decode(f1).equal(converted.Decode(f2)).all().item<bool>(), "decode differs");
    }

    [Theory]
    [InlineData("dictionary_learning", "BatchTopKSAE")]
    [InlineData("Gemma Scope", "JumpReluAutoEncoder")]
    [InlineData("sparsify", "AutoEncoderTopK")]
    public void Converted_to_dictionary_learning_loads_back_with_the_same_encode_and_decode(string format, string dictClass)
    {
        var src = WriteSource(format);
        var dst = Path.Combine(_dir, "dl");
        var (exit, stdout, err) = CliRunner.Run("convert", src, dst, "--to", "dictionary_learning");
        Assert.True(exit == 0, err);
        Assert.Contains("to dictionary_learning: " + dst, stdout);
        Assert.Equal(["ae.pt", "config.json"], Directory.GetFiles(dst).Select(Path.GetFileName).Order());
        Assert.Equal(dictClass, DictionaryLearning.ReadCheckpoint(dst).DictClass);

        using var original = SaeLoader.Load(src);
        using var converted = SaeLoader.Load(dst);
        using var _ = no_grad();
        var x = randn(16, original.Cfg.DIn, generator: new Generator(7)) * 2 + 0.5;
        var (y1, f1) = original.Run(x);
        var (y2, f2) = converted.Run(x);
        Assert.True(f1.gt(0).any().item<bool>(), "some latent fires");
        Assert.True(f1.gt(0).equal(f2.gt(0)).all().item<bool>(), "the same latents fire");
        Assert.True((f1 - f2).abs().max().item<float>() <= 1e-6 * Math.Max(1, f1.abs().max().item<float>()), "feature activations differ");
        Assert.True((y1 - y2).abs().max().item<float>() <= 1e-6 * Math.Max(1, y1.abs().max().item<float>()), "reconstructions differ");
    }

    [Fact]
    public void Convert_to_dictionary_learning_refuses_run_time_normalisation_and_writes_crosscoders_as_the_forks_ae_pt()
    {
        // The SAELens source (like OpenAI's SAEs) normalises its input with layer_norm at run time: dictionary_learning cannot.
        var (exit, _, err) = CliRunner.Run("convert", WriteSource("SAELens"), Path.Combine(_dir, "ln"), "--to", "dictionary_learning");
        Assert.Equal(1, exit);
        Assert.Contains("normalize_activations is 'layer_norm'", err);
        Assert.False(File.Exists(Path.Combine(_dir, "ln", "ae.pt")));

        var cc = Path.Combine(SaeSharp.Tests.Tokenizers.TestPaths.Data(), "crosscoder", "cc_hub");
        (exit, _, err) = CliRunner.Run("convert", cc, Path.Combine(_dir, "cc-saelens"));
        Assert.Equal(1, exit);
        Assert.Contains("a crosscoder has no SAELens form", err);
        string dst = Path.Combine(_dir, "cc");
        (exit, var stdout, err) = CliRunner.Run("convert", cc, dst, "--to", "dictionary_learning");
        Assert.True(exit == 0, err);
        Assert.Contains("crosscoder (CrossCoder, 3 layers", stdout);
        using var original = CrossCoderFormat.Load(cc);
        using var back = CrossCoderFormat.Load(Path.Combine(dst, "ae.pt"));
        Assert.Equal(original.Cfg, back.Cfg);
        foreach (var (key, t) in original.state_dict())
            Assert.True(t.eq(back.state_dict()[key]).all().item<bool>(), key);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Info_reports_format_and_architecture(string format, string architecture, string? hook)
    {
        _ = architecture;
        var src = WriteSource(format);
        var (exit, stdout, err) = CliRunner.Run("info", src);
        Assert.True(exit == 0, err);
        using var sae = SaeLoader.Load(src);
        Assert.Contains(sae.Cfg.Architecture, stdout);
        Assert.Contains(hook!, stdout);
        Assert.Contains(format.Split(' ')[0], stdout);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Loading_and_running_leak_no_tensors(string format, string architecture, string? hook)
    {
        _ = (architecture, hook);
        var src = WriteSource(format);
        long leaked = LiveTensors.Leaked(() =>
        {
            using var sae = SaeLoader.Load(src);
            using var x = randn(4, sae.Cfg.DIn, generator: new Generator(9));
            using var _ = no_grad();
            var (y, f) = sae.Run(x);
            y.Dispose();
            f.Dispose();
            sae.forward(x).Dispose();
            sae.Encode(x).Dispose();
        });
        Assert.Equal(0, leaked);
    }

    /// <summary><c>convert --to saelens</c> of a source that records no window fields, no weight processing and no token
    /// exclusion writes what SAELens 6's own cfg.json holds by default (not null: its evals spread
    /// <c>**model_from_pretrained_kwargs</c>, evals.py:836). Values a source does record are kept, a null separator too
    /// (SAELens's "no separator").</summary>
    [Fact]
    public void Convert_to_saelens_writes_saelens_defaults_where_the_source_records_nothing()
    {
        var src = WriteSource("sparsify");
        var dst = Path.Combine(_dir, "defaults");
        var (exit, _, err) = CliRunner.Run("convert", src, dst);
        Assert.True(exit == 0, err);
        var meta = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dst, "cfg.json")))!["metadata"]!;
        // SAELens 6.18 sae_lens/config.py LanguageModelSAERunnerConfig: seqpos_slice = (None,) (l. 210),
        // disable_concat_sequences = False (l. 211), sequence_separator_token = "bos" (l. 212), exclude_special_tokens = False
        // (l. 274); saes/sae.py from_sae_runner_config: model_from_pretrained_kwargs = cfg.model_from_pretrained_kwargs or {}
        // (l. 796); llm_sae_training_runner.py _set_sae_metadata copies all five into the metadata (l. 246-257).
        Assert.Equal("[null]", meta["seqpos_slice"]!.ToJsonString());
        Assert.Equal("false", meta["disable_concat_sequences"]!.ToJsonString());
        Assert.Equal("\"bos\"", meta["sequence_separator_token"]!.ToJsonString());
        Assert.Equal("false", meta["exclude_special_tokens"]!.ToJsonString());
        Assert.Equal("{}", meta["model_from_pretrained_kwargs"]!.ToJsonString());

        // A SAELens source's own values pass through: a slice, a null separator, a list of excluded ids, processing kwargs.
        var saeLens = Path.Combine(_dir, "recorded");
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 4, DSae = 8 };
        cfg.Metadata.Extra = new()
        {
            ["seqpos_slice"] = System.Text.Json.JsonSerializer.SerializeToElement(new int?[] { 1, null }),
            ["sequence_separator_token"] = System.Text.Json.JsonSerializer.SerializeToElement<string?>(null),
        };
        cfg.Metadata.ExcludeTokenIds = [0, 5];
        cfg.Metadata.ModelFromPretrainedKwargs = new() { ["fold_ln"] = System.Text.Json.JsonSerializer.SerializeToElement(true) };
        using (var sae = SaeFactory.Create(cfg)) SaeLensFormat.Save(sae, saeLens);
        (exit, _, err) = CliRunner.Run("convert", saeLens, Path.Combine(_dir, "kept"));
        Assert.True(exit == 0, err);
        meta = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "kept", "cfg.json")))!["metadata"]!;
        Assert.Equal("[1,null]", meta["seqpos_slice"]!.ToJsonString());
        Assert.Null(meta["sequence_separator_token"]);
        Assert.True(meta.AsObject().ContainsKey("sequence_separator_token"));
        Assert.Equal("[0,5]", meta["exclude_special_tokens"]!.ToJsonString());
        Assert.Equal("{\"fold_ln\":true}", meta["model_from_pretrained_kwargs"]!.ToJsonString());
        Assert.Equal("false", meta["disable_concat_sequences"]!.ToJsonString());
    }

    [Fact]
    public void Convert_refuses_a_non_empty_output_folder_unless_forced()
    {
        var src = WriteSource("sparsify");
        var dst = Path.Combine(_dir, "out");
        Directory.CreateDirectory(dst);
        File.WriteAllText(Path.Combine(dst, "notes.txt"), "keep");
        var (exit, _, err) = CliRunner.Run("convert", src, dst);
        Assert.Equal(1, exit);
        Assert.StartsWith("error:", err);
        Assert.Contains("not empty", err);
        Assert.False(File.Exists(Path.Combine(dst, "cfg.json")));

        (exit, _, err) = CliRunner.Run("convert", src, dst, "--force");
        Assert.True(exit == 0, err);
        Assert.True(File.Exists(Path.Combine(dst, "cfg.json")));
        Assert.Equal("keep", File.ReadAllText(Path.Combine(dst, "notes.txt")));
    }

    [Fact]
    public void Convert_reports_a_broken_input_in_one_line_and_rejects_unknown_targets()
    {
        var dir = Path.Combine(_dir, "layers.0");
        SparsifyTests.WriteSae(dir, dIn: 5, numLatents: 12, editWeights: w => w["W_dec"] = zeros(12, 4));
        var (exit, _, err) = CliRunner.Run("convert", dir, Path.Combine(_dir, "out"));
        Assert.Equal(1, exit);
        Assert.StartsWith("error:", err);
        Assert.Contains("W_dec", err);
        Assert.Single(err.Trim().Split('\n'));

        var src = WriteSource("Gemma Scope");
        (exit, _, err) = CliRunner.Run("convert", src, "--to", "onnx", Path.Combine(_dir, "out2"));
        Assert.NotEqual(0, exit);
        Assert.Contains("onnx", err);
        Assert.False(Directory.Exists(Path.Combine(_dir, "out2")));
    }
}
