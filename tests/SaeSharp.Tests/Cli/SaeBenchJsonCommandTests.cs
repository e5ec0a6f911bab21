using System.Text.Json.Nodes;
using SaeSharp.Tests.Analysis;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae eval --model ... --saebench-json</c> writes SAEBench's core eval output per SAE; it is refused where
/// there is none (on activation files).</summary>
public sealed class SaeBenchJsonCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("eval-saebench-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
    }

    private string P(string name) => Path.Combine(_dir, name);

    /// <summary>Two SAEs (<see cref="AnalysisFixture"/>'s embedding SAE twice): files core_sae0.json and core_sae1.json, one
    /// eval_id; --saebench-config's batches (2 CE/KL batches and 3 more of 2 windows) and --context-size 16: token_stats
    /// 2·2·16 = 64 and 3·2·16 = 96, the counted tokens fewer by the BOS/EOS/pad positions of those windows; a custom SAE's
    /// ids, not folded; the details' densities agree with frac_alive and freq_over_1_percent; W_dec = W_encᵀ, so each
    /// feature's max encoder and decoder cosines are equal; the --json file (its own 64 tokens) lists no max cosines.</summary>
    [Fact]
    public void Eval_in_the_model_writes_SAEBench_core_output_per_sae()
    {
        using var a = new AnalysisFixture();
        var (exit, output, err) = CliRunner.Run("eval", "--sae", a.SaeDir, "--sae", a.SaeDir, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--tokens", "64", "--context-size", "16", "--saebench-json", P("core.json"), "--json", P("eval.json"),
            "--saebench-config", """{"batch_size_prompts": 2, "n_eval_reconstruction_batches": 2, "n_eval_sparsity_variance_batches": 3}""");
        Assert.True(exit == 0, err);
        Assert.Contains("SAEBench core output: " + P("core_sae1.json"), output);
        // The counted tokens: the windows' positions less those holding BOS, EOS or pad (SAEBench's ignore_tokens), the first
        // 4 windows for CE/KL and the next 6 (the data starting over when used up).
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(a.ModelDir);
        var ignored = new[] { tok.BosTokenId, tok.EosTokenId, tok.PadTokenId }.OfType<int>().Select(i => (long)i).ToHashSet();
        var windows = SaeSharp.Pipelines.ModelPipeline.Windows(tok, a.DataPath, 16, prependBos: true).ToList();
        var ten = Enumerable.Range(0, 10).Select(i => windows[i % windows.Count]).ToList();
        long rec = ten.Take(4).Sum(w => w.Count(t => !ignored.Contains(t))), sv = ten.Skip(4).Sum(w => w.Count(t => !ignored.Contains(t)));
        Assert.True(rec < 64 && sv < 96);   // BOS at least at each window's start
        Assert.Contains($"SAEBench procedure, CE/KL: 64 tokens ({rec} counted)", output);
        Assert.Contains($"SAEBench procedure, the rest: the next 96 ({sv} counted)", output);
        Assert.Contains("the table above: 64 tokens (", output);
        Assert.False(File.Exists(P("core.json")));
        var files = new[] { P("core_sae0.json"), P("core_sae1.json") }.Select(f => JsonNode.Parse(File.ReadAllText(f))!.AsObject()).ToList();
        Assert.Equal(files[0]["eval_id"]!.GetValue<string>(), files[1]["eval_id"]!.GetValue<string>());
        var plain = JsonNode.Parse(File.ReadAllText(P("eval.json")))!.AsArray();
        for (int s = 0; s < 2; s++)
        {
            var json = files[s];
            Assert.Equal("core", json["eval_type_id"]!.GetValue<string>());
            Assert.Equal("custom_sae", json["sae_lens_id"]!.GetValue<string>());
            Assert.Equal(a.SaeDir, json["sae_lens_release_id"]!.GetValue<string>());
            var config = json["eval_config"]!;
            Assert.Equal(16, config["context_size"]!.GetValue<int>());
            Assert.Equal(2, config["n_eval_reconstruction_batches"]!.GetValue<int>());
            Assert.Equal(3, config["n_eval_sparsity_variance_batches"]!.GetValue<int>());
            Assert.Equal(2, config["batch_size_prompts"]!.GetValue<int>());
            Assert.False(config["exclude_special_tokens_from_reconstruction"]!.GetValue<bool>());
            var unstructured = json["eval_result_unstructured"]!;
            Assert.Equal(rec, unstructured["counted_tokens_eval_reconstruction"]!.GetValue<long>());
            Assert.Equal(sv, unstructured["counted_tokens_eval_sparsity_variance"]!.GetValue<long>());
            Assert.False(unstructured["folded_W_dec_norm"]!.GetValue<bool>());
            Assert.Equal(a.DataPath, config["dataset"]!.GetValue<string>());
            var metrics = json["eval_result_metrics"]!;
            Assert.Equal(64, metrics["token_stats"]!["total_tokens_eval_reconstruction"]!.GetValue<long>());
            Assert.Equal(96, metrics["token_stats"]!["total_tokens_eval_sparsity_variance"]!.GetValue<long>());
            var details = json["eval_result_details"]!.AsArray();
            Assert.Equal(AnalysisFixture.DSae, details.Count);
            var density = details.Select(d => d!["feature_density"]!.GetValue<double>()).ToArray();
            var misc = metrics["misc_metrics"]!;
            Assert.Equal(density.Count(d => d > 0) / (double)density.Length, misc["frac_alive"]!.GetValue<double>(), 12);
            Assert.Equal(density.Count(d => d > 0.01) / (double)density.Length, misc["freq_over_1_percent"]!.GetValue<double>(), 12);
            foreach (var d in details)
                Assert.Equal(d!["max_encoder_cosine_sim"]!.GetValue<double>(), d["max_decoder_cosine_sim"]!.GetValue<double>(), 6);
            Assert.Equal(details.Average(d => d!["max_decoder_cosine_sim"]!.GetValue<double>()), misc["average_max_decoder_cosine_sim"]!.GetValue<double>(), 9);
            Assert.Null(plain[s]!["feature_metrics"]!["max_decoder_cosine_sim"]);
            Assert.Equal(64, plain[s]!["token_stats"]!["total_tokens_eval_reconstruction"]!.GetValue<long>());
        }

        // The eval_config of that output pasted whole as --saebench-config: accepted, and the same settings written.
        string evalConfig = files[0]["eval_config"]!.ToJsonString();
        (exit, output, err) = CliRunner.Run("eval", "--sae", a.SaeDir, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--tokens", "64", "--saebench-json", P("again.json"), "--saebench-config", evalConfig);
        Assert.True(exit == 0, err);
        Assert.Equal(evalConfig, JsonNode.Parse(File.ReadAllText(P("again.json")))!["eval_config"]!.ToJsonString());
        // A field naming another model, or a metric switched off, is refused by name before the evaluation.
        var other = files[0]["eval_config"]!.DeepClone();
        other["model_name"] = "not-this-model";
        (exit, output, err) = CliRunner.Run("eval", "--sae", a.SaeDir, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--tokens", "64", "--saebench-json", P("other.json"), "--saebench-config", other.ToJsonString());
        Assert.NotEqual(0, exit);
        Assert.Contains("--saebench-config: model_name 'not-this-model', but the SAE is evaluated on", err + output);
        Assert.False(File.Exists(P("other.json")));
    }

    [Fact]
    public void SAEBench_output_is_refused_on_activation_files()
    {
        var (exit, _, err) = CliRunner.Run("eval", "--sae", P("sae"), "--activations", P("rows.safetensors"), "--saebench-json", P("core.json"));
        Assert.NotEqual(0, exit);
        Assert.Contains("--saebench-json", err);
        Assert.False(File.Exists(P("core.json")));
    }
}
