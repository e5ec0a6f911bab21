using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Tests.Interventions;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>An SAE of one head of TransformerLens's <c>hook_k_input</c> (<c>hook_head_index</c> 1, SAELens format) through
/// every command on the built-in model: <c>sae model run</c> gives features and reconstruction of resid_pre (the head's
/// copy) as computed by hand; <c>sae features</c>, <c>dashboard</c>, <c>neuronpedia</c>, <c>inspect</c>, <c>steer</c>,
/// <c>ablate</c> and <c>attribute</c> name the hook with its head (<c>inspect --stats</c> refuses another head's report);
/// <c>attribute --freeze-attention-and-norms</c> is refused.</summary>
public class PerHeadSaeCommandTests : CliTempDirTestBase
{
    private const string Hook = "blocks.1.hook_k_input", Site = "blocks.1.hook_k_input head 1";

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    [Fact]
    public void EveryCommandNamesTheHeadAndTheSaeReadsItsCopyOfResidPre()
    {
        using (var sae = InterventionTests.RandomSae(Hook, 128, 64, 3, encBias: 0.0))
        {
            sae.Cfg.Metadata.HookHeadIndex = 1;
            sae.Cfg.Metadata.ContextSize = 32;
            SaeLensFormat.Save(sae, P("sae"));
        }
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "40", "--seed", "2"));

        SafeTensors.Save(P("tokens.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = tensor(new long[] { 1, 5, 9, 2, 7 }).unsqueeze(0) });
        Ok(CliRunner.Run("model", "run", "--model", "builtin", "--input", P("tokens.safetensors"), "--out", P("out.safetensors"), "--sae", P("sae"),
            "--hooks", $"{Hook}.hook_sae_acts_post,{Hook}.hook_sae_recons,blocks.1.hook_resid_pre"));
        using (NewDisposeScope())
        {
            var o = SafeTensors.Load(P("out.safetensors"));
            using var sae = SaeLensFormat.Load(P("sae"));
            var f = InterventionTests.HandFeatures(sae, o["blocks.1.hook_resid_pre"]);
            Assert.True(f.gt(0).any().item<bool>(), "no feature fires");
            Assert.True(f.allclose(o[$"{Hook}.hook_sae_acts_post"].to(ScalarType.Float64), rtol: 1e-4, atol: 1e-4), "features of head 1's key input");
            var recons = matmul(f, sae.WDec.detach().to(ScalarType.Float64)) + sae.BDec.detach().to(ScalarType.Float64);
            Assert.True(recons.allclose(o[$"{Hook}.hook_sae_recons"].to(ScalarType.Float64), rtol: 1e-4, atol: 1e-4), "reconstruction");
        }

        Ok(CliRunner.Run("features", "--sae", P("sae"), "--model", "builtin", "--dataset", P("c.jsonl"), "--tokens", "512", "--out", P("f")));
        var summary = JsonNode.Parse(File.ReadAllText(P("f", "summary.json")))!;
        Assert.Equal(Hook, summary["hook"]!.GetValue<string>());
        Assert.Equal(1, summary["hook_head_index"]!.GetValue<int>());
        Ok(CliRunner.Run("dashboard", "--features", P("f"), "--out", P("site")));
        Assert.Contains($"<b>hook</b> {Site}</span>", File.ReadAllText(P("site", "index.html")));
        Ok(CliRunner.Run("neuronpedia", "--features", P("f"), "--out", P("np"), "--model", "builtin", "--np-set-name", "res-k"));
        var settings = JsonNode.Parse(File.ReadAllText(P("np", $"builtin_res-k_{Hook}_64", "run_settings.json")))!;
        Assert.Equal(1, settings["hook_head_index"]!.GetValue<int>());

        const string prompt = "Tom had a black dog called Coco. The cat was sad.";
        var inspect = CliRunner.Run("inspect", "--sae", P("sae"), "--model", "builtin", "--prompt", prompt);
        Ok(inspect);
        Assert.Contains($"({Site}, ", inspect.Out);
        // The same weights read from head 2: head 1's feature report is another SAE's.
        Directory.CreateDirectory(P("sae2"));
        foreach (var file in Directory.GetFiles(P("sae"))) File.Copy(file, P("sae2", Path.GetFileName(file)));
        var cfg2 = JsonNode.Parse(File.ReadAllText(P("sae2", "cfg.json")))!;
        cfg2["metadata"]!["hook_head_index"] = 2;
        File.WriteAllText(P("sae2", "cfg.json"), cfg2.ToJsonString());
        var other = CliRunner.Run("inspect", "--sae", P("sae2"), "--model", "builtin", "--prompt", prompt, "--stats", P("f"));
        Assert.NotEqual(0, other.Exit);
        Assert.Contains($"hook {Site}) is not of this SAE (d_sae 64, hook {Hook} head 2)", other.Err + other.Out);
        var steer = CliRunner.Run("steer", "--sae", P("sae"), "--model", "builtin", "--feature", "3", "--scale", "10", "--temperature", "0", "--runs", "1",
            "--max-new-tokens", "4", "--prompt", prompt);
        Ok(steer);
        Assert.Contains($"at {Site}", steer.Out);
        var ablate = CliRunner.Run("ablate", "--sae", P("sae"), "--model", "builtin", "--features", "3", "--prompt", prompt);
        Ok(ablate);
        Assert.Contains($"at {Site}", ablate.Out);
        var attribute = CliRunner.Run("attribute", "--sae", P("sae"), "--model", "builtin", "--prompt", prompt, "--metric", "loss", "--top", "3", "--ig-steps", "2");
        Ok(attribute);
        Assert.Contains($"SAE 0 at {Site}:", attribute.Out);
        var frozen = CliRunner.Run("attribute", "--sae", P("sae"), "--model", "builtin", "--prompt", prompt, "--metric", "loss", "--freeze-attention-and-norms");
        Assert.NotEqual(0, frozen.Exit);
        Assert.Contains($"hook '{Hook}'", frozen.Err + frozen.Out);
        Assert.Contains("attention pattern", frozen.Err + frozen.Out);
    }

    /// <summary><c>sae cache</c> of hook_k_input keeps every head (TransformerLens's activation flattened): each row is
    /// resid_pre once per head, as the same windows' resid_pre cache shows; <c>sae train --activations</c> from it trains an
    /// SAE of all heads (d_in = heads·d_model) that <c>sae eval</c> splices with the model unchanged by its error term, and
    /// <c>--hook-head-index</c> there is refused (a file has no head to harvest).</summary>
    [Fact]
    public void CacheOfAKeyInputHoldsResidPrePerHeadAndTrainsAnSaeOfAllHeads()
    {
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "40", "--seed", "2"));
        foreach (var (hook, dir) in new[] { (Hook, "kin"), ("blocks.1.hook_resid_pre", "resid") })
            Ok(CliRunner.Run("cache", "--model", "builtin", "--hook", hook, "--dataset", P("c.jsonl"), "--tokens", "512", "--context-size", "32", "--out", P(dir)));
        using (NewDisposeScope())
        {
            var kin = SafeTensors.Load(P("kin", "shard_00000.safetensors"))["activations"];
            var resid = SafeTensors.Load(P("resid", "shard_00000.safetensors"))["activations"];
            Assert.Equal(new long[] { resid.shape[0], 4 * 128 }, kin.shape);
            Assert.True(kin.view(-1, 4, 128).equal(resid.unsqueeze(1).expand(-1, 4, 128)).all().item<bool>(), "rows are resid_pre per head");
        }
        Ok(CliRunner.Run("train", "--activations", P("kin"), "--arch", "topk", "--k", "8", "--dict-size", "64", "--batch-size", "128", "--steps", "20", "--out", P("sae")));
        var cfg = JsonNode.Parse(File.ReadAllText(P("sae", "cfg.json")))!;
        Assert.Equal(512, cfg["d_in"]!.GetValue<int>());
        Assert.Equal(Hook, cfg["metadata"]!["hook_name"]!.GetValue<string>());
        Ok(CliRunner.Run("eval", "--sae", P("sae"), "--model", "builtin", "--dataset", P("c.jsonl"), "--tokens", "256", "--json", P("e.json")));
        var e = JsonNode.Parse(File.ReadAllText(P("e.json")))!;
        Assert.True(e["model_behavior_preservation"]!["kl_div_with_error_term"]!.GetValue<double>() < 1e-6);
        var bad = CliRunner.Run("train", "--activations", P("kin"), "--hook-head-index", "1", "--arch", "topk", "--k", "8", "--dict-size", "64", "--steps", "2", "--out", P("h1"));
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("hook_head_index 1 applies to runs from a model", bad.Err + bad.Out);
        Assert.False(Directory.Exists(P("h1")));
    }
}
