using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>--revision</c> beyond <c>sae model</c>: a hub cache (<c>refs/REVISION</c> → <c>snapshots/COMMIT</c>) holding two
/// checkpoints of one repo with different weights; <c>sae cache</c>, <c>sae train --model</c> and <c>sae eval --model</c> run
/// the checkpoint named, record it (model_from_pretrained_kwargs revision, as SAELens passes it to TransformerLens) and
/// <c>sae eval</c> reads it back.</summary>
public sealed class RevisionCommandsTests : TinyGpt2CliTestBase
{
    private const string Repo = "tiny-org/tiny-gpt2";

    /// <summary>The snapshot of <paramref name="commit"/>, named by <c>refs/<paramref name="revision"/></c>: a tiny GPT-2 of
    /// <paramref name="seed"/> with GPT-2's tokenizer.</summary>
    private string Snapshot(string cache, string revision, string commit, int seed)
    {
        string storage = Path.Combine(cache, "models--" + Repo.Replace("/", "--", StringComparison.Ordinal));
        Directory.CreateDirectory(Path.Combine(storage, "refs"));
        File.WriteAllText(Path.Combine(storage, "refs", revision), commit);
        string snapshot = Path.Combine(storage, "snapshots", commit);
        TinyModels.WriteGpt2(snapshot, seed: seed, nLayer: 1, nEmbd: 16, nHead: 2, vocab: 50257, nPositions: 64);
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            File.Copy(Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(snapshot, f));
        return snapshot;
    }

    /// <summary>Every stored activation row of a cache folder, in order.</summary>
    private static Tensor Activations(string dir)
    {
        var shards = Directory.GetFiles(dir, "shard_*.safetensors").Order(StringComparer.Ordinal).Select(f => SafeTensors.Load(f)["activations"]).ToArray();
        return cat(shards, 0);
    }

    private static double CeWithoutSae(string json) =>
        double.Parse(Regex.Match(File.ReadAllText(json), "\"ce_loss_without_sae\": ?([-+0-9.eE]+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public void Cache_train_and_eval_run_the_revision_named_and_eval_reads_it_back()
    {
        string hub = P("hub");
        Snapshot(hub, "main", new string('1', 40), seed: 1);
        string step = Snapshot(hub, "step1000", new string('2', 40), seed: 2);
        string data = Dataset();
        var env = new Dictionary<string, string> { ["HF_HUB_CACHE"] = hub, ["HF_HUB_OFFLINE"] = "1" };
        string[] Cache(string model, string outDir, params string[] extra) =>
            ["cache", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--context-size", "16", "--tokens", "64", .. extra, "--out", outDir];

        // sae cache: the step1000 activations are those of the step1000 folder loaded directly, not main's.
        Ok(CliRunner.RunWithEnvironment(env, Cache(Repo, P("c-step"), "--revision", "step1000")));
        Ok(CliRunner.RunWithEnvironment(env, Cache(step, P("c-direct"))));
        Ok(CliRunner.RunWithEnvironment(env, Cache(Repo, P("c-main"))));
        using (var scope = NewDisposeScope())
        {
            var (atStep, direct, atMain) = (Activations(P("c-step")), Activations(P("c-direct")), Activations(P("c-main")));
            Assert.Equal(direct.shape, atStep.shape);
            Assert.True(atStep.allclose(direct, rtol: 0, atol: 0), "--revision step1000 should harvest the step1000 checkpoint");
            Assert.False(atMain.allclose(atStep, rtol: 1e-3, atol: 1e-3), "the two checkpoints should differ");
        }
        Assert.Equal("step1000", (string?)JsonNode.Parse(File.ReadAllText(P("c-step", "manifest.json")))!["model_revision"]);
        Assert.Null(JsonNode.Parse(File.ReadAllText(P("c-main", "manifest.json")))!["model_revision"]);

        // sae train --model --revision: cfg.json records it as SAELens's model_from_pretrained_kwargs {"revision": ...}.
        Ok(CliRunner.RunWithEnvironment(env, "train", "--model", Repo, "--revision", "step1000", "--hook", "blocks.0.hook_resid_post", "--dataset", data,
            "--tokens", "256", "--context-size", "16", "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32", "--eval-rows", "60", "--out", P("run")));
        var kwargs = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!["metadata"]!["model_from_pretrained_kwargs"]!;
        Assert.Equal("{\"revision\":\"step1000\"}", kwargs.ToJsonString());
        // ... and an SAE trained on the cache does too.
        Ok(CliRunner.RunWithEnvironment(env, "train", "--activations", P("c-step"), "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32",
            "--eval-rows", "20", "--out", P("run-cache")));
        Assert.Equal("step1000", (string?)JsonNode.Parse(File.ReadAllText(P("run-cache", "cfg.json")))!["metadata"]!["model_from_pretrained_kwargs"]!["revision"]);

        // sae eval --model REPO: the revision the SAE records, as the step1000 folder given directly; --revision main overrides it with a warning.
        string[] Eval(string model, string json, params string[] extra) =>
            ["eval", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "64", "--context-size", "16", .. extra, "--json", json];
        Ok(CliRunner.RunWithEnvironment(env, Eval(Repo, P("e-recorded.json"))));
        Ok(CliRunner.RunWithEnvironment(env, Eval(step, P("e-direct.json"))));
        var (exit, _, err) = CliRunner.RunWithEnvironment(env, Eval(Repo, P("e-main.json"), "--revision", "main"));
        Assert.True(exit == 0, err);
        Assert.Contains("--revision main: " + P("run") + " was trained on revision step1000 of the model", err);
        Assert.Equal(CeWithoutSae(P("e-direct.json")), CeWithoutSae(P("e-recorded.json")));
        Assert.NotEqual(CeWithoutSae(P("e-direct.json")), CeWithoutSae(P("e-main.json")));

        // An unknown revision is named, on a --model of the shared options and of the others; nothing is written.
        Assert.Contains("revision step2000", OneLineError(CliRunner.RunWithEnvironment(env, Cache(Repo, P("c-bad"), "--revision", "step2000"))));
        Assert.False(Directory.Exists(P("c-bad")));
        Assert.Contains("revision step2000", OneLineError(CliRunner.RunWithEnvironment(env,
            "features", "--sae", P("run"), "--model", Repo, "--revision", "step2000", "--dataset", data, "--tokens", "64", "--features", "0-3", "--out", P("f"))));
        // A recorded revision the repo does not have: the error says where it came from.
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        cfg["metadata"]!["model_from_pretrained_kwargs"] = new JsonObject { ["revision"] = "step3000" };
        File.WriteAllText(P("run", "cfg.json"), cfg.ToJsonString());
        Assert.Contains("(the revision " + P("run") + " records in model_from_pretrained_kwargs; give --revision to evaluate on another)",
            OneLineError(CliRunner.RunWithEnvironment(env, Eval(Repo, P("e-bad.json")))));
    }

    /// <summary>SaeMetadata's model_from_pretrained_kwargs revision: written beside the flags and dtype, read back, and a
    /// non-string refused naming it.</summary>
    [Fact]
    public void Revision_kwarg_round_trips_through_the_cfg()
    {
        var kwargs = SaeSharp.Saes.SaeMetadata.FromPretrainedKwargs(new Dictionary<string, bool> { ["fold_ln"] = true }, "bfloat16", "step1000");
        var metadata = new SaeSharp.Saes.SaeMetadata { ModelName = Repo, ModelFromPretrainedKwargs = kwargs };
        string json = System.Text.Json.JsonSerializer.Serialize(metadata);
        var back = System.Text.Json.JsonSerializer.Deserialize<SaeSharp.Saes.SaeMetadata>(json)!;
        Assert.Equal("step1000", back.ModelRevision("cfg.json"));
        Assert.Equal("{\"fold_ln\":true,\"dtype\":\"bfloat16\",\"revision\":\"step1000\"}", JsonNode.Parse(json)!["model_from_pretrained_kwargs"]!.ToJsonString());
        Assert.True(WeightProcessingOptions.FromKwargs(back.ModelFromPretrainedKwargs, out _).FoldLn);
        Assert.Null(new SaeSharp.Saes.SaeMetadata().ModelRevision("cfg.json"));
        back.ModelFromPretrainedKwargs!["revision"] = System.Text.Json.JsonSerializer.SerializeToElement(1000);
        Assert.Equal("cfg.json: model_from_pretrained_kwargs revision 1000: expected a branch, tag or commit of the model's hub repo (a string)",
            Assert.Throws<SaeSharpException>(() => back.ModelRevision("cfg.json")).Message);
    }
}
