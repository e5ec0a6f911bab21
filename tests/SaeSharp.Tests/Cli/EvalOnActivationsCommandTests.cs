using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Tests.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae eval --activations</c> on <c>sae cache</c> folders: what each row is compared with.</summary>
public class EvalOnActivationsCommandTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    private string P(string name) => Path.Combine(_fx.Dir, name);

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");

    /// <summary>A transcoder on a <c>--mode in_to_out</c> cache (input ln2.hook_normalized, targets hook_mlp_out, both
    /// d_model wide) is measured against the targets: the JSON's mse and cosine equal those computed here from the shard's
    /// own activations and targets, and not those against the input (which the width check alone cannot tell apart).</summary>
    [Fact]
    public void A_transcoder_on_an_in_to_out_cache_is_compared_with_the_targets()
    {
        string cache = P("tc-cache"), tc = P("tc"), json = P("tc.json");
        Ok(CliRunner.Run("cache", "--model", _fx.ModelDir, "--hook", "blocks.0.ln2.hook_normalized", "--mode", "in_to_out",
            "--target-hook", "blocks.0.hook_mlp_out", "--dataset", _fx.DataPath, "--tokens", "128", "--context-size", "16", "--out", cache));
        Ok(CliRunner.Run("train", "--activations", cache, "--arch", "skip_transcoder", "--dict-size", "32", "--steps", "5", "--batch-size", "32",
            "--out", tc));
        Ok(CliRunner.Run("eval", "--sae", tc, "--activations", cache, "--json", json));
        var j = JsonNode.Parse(File.ReadAllText(json))!;

        using var scope = NewDisposeScope();
        using var grad = no_grad();
        using var sae = SaeLoader.Load(tc);
        var shards = Directory.GetFiles(cache, "shard_*.safetensors").Order(StringComparer.Ordinal)
            .Select(f => SafeTensors.Load(f, ScalarType.Float64)).ToList();
        var x = cat(shards.Select(s => s["activations"]).ToList(), 0);
        var y = cat(shards.Select(s => s["targets"]).ToList(), 0);
        Assert.Equal(j["n_rows"]!.GetValue<long>(), x.shape[0]);
        var yHat = sae.forward(x.to(ScalarType.Float32)).to(ScalarType.Float64);
        double Mse(Tensor target) => (yHat - target).square().mean().item<double>();
        double Cos(Tensor target) => (yHat * target).sum(1).div((yHat.square().sum(1) * target.square().sum(1)).sqrt()).mean().item<double>();
        Assert.Equal(Mse(y), j["mse"]!.GetValue<double>(), 4);
        Assert.Equal(Cos(y), j["cosine"]!.GetValue<double>(), 4);
        Assert.True(Math.Abs(Mse(x) - Mse(y)) > 1e-2, $"the test needs the input and the target to differ: mse {Mse(x)} vs {Mse(y)}");
    }
}
