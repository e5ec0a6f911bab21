using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Corpus;
using SaeSharp.Interop;
using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae probe</c> over several SAEs at one hook: every mode (token-level probing with absorption, mean-pooled
/// probing, TPP, SCR) gives each SAE exactly what a call with that SAE alone gives, while the model runs over the data once;
/// the --json files get <c>sae eval</c>'s _sae&lt;i&gt; suffix. SAEs at several hooks run in one pass too, the model's probes
/// fitted once per hook (one --artifacts file per hook); SAEs of one hook and another d_in, and SAEs of a head a per-head hook
/// does not have, are refused by name.</summary>
public sealed class ProbeSweepTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("probesweep-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly string[] Filler = ["the", "sat", "on", "mat", "ran", "to", "park", "big", "small", "and", "a"];

    /// <summary>A randomly initialised ReLU SAE at <paramref name="hook"/>, saved in SAELens format.</summary>
    private string SaveSae(string name, int dIn, int dSae, string hook, long seed, int ctx = 32, int? head = null)
    {
        var cfg = new SaeConfig { DIn = dIn, DSae = dSae };
        cfg.Metadata.HookName = hook;
        cfg.Metadata.HookHeadIndex = head;
        cfg.Metadata.ContextSize = ctx;
        using var sae = SaeFactory.Create(cfg);
        var gen = new TorchSharp.torch.Generator((ulong)seed);
        using (no_grad())
        {
            // SaeFactory makes zero weights: random unit-norm directions, a decoder tied to the encoder, a bias half firing.
            var w = randn(dIn, dSae, generator: gen);
            w.div_(w.norm(0, true));
            sae.WEnc.copy_(w);
            sae.WDec.copy_(w.t());
            sae.BEnc.zero_();
        }
        string dir = Path.Combine(_dir, name);
        SaeLensFormat.Save(sae, dir);
        return dir;
    }

    /// <summary>Rows (text, cls, g) as the TPP and SCR suite tests write them: cls a/b/c (cat/dog/bird), g m/f (sun/moon).</summary>
    private string ClassesJsonl(int n, int seed)
    {
        var rng = new Random(seed);
        string[] cls = ["a", "b", "c"], word = ["cat", "dog", "bird"];
        string path = Path.Combine(_dir, $"classes{seed}.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, n).Select(_ =>
        {
            int c = rng.Next(3);
            bool m = rng.Next(2) == 0;
            var words = new List<string> { word[c], m ? "sun" : "moon", Filler[rng.Next(Filler.Length)], Filler[rng.Next(Filler.Length)] };
            rng.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(words));
            return new JsonObject { ["text"] = " " + string.Join(" ", words), ["label"] = cls[c], ["g"] = m ? "m" : "f" }.ToJsonString();
        }));
        return path;
    }

    /// <summary>Everything a sparse probing report holds but the time it was written: its metrics and per-task results.</summary>
    private string Content(SparseProbingReport r)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".json");
        r.WriteJson(path, "d");
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        return root["eval_result_metrics"]!.ToJsonString() + root["eval_result_details"]!.ToJsonString() + root["eval_result_unstructured"]!.ToJsonString();
    }

    /// <summary>The model's rows counted at its embedding (one count per text or window run through the model).</summary>
    internal static (List<(string, Func<Tensor, Tensor?>)> Hooks, Func<long> Passes, Action Reset) Counter(ProcessedModel pm)
    {
        long passes = 0;
        var hooks = new List<(string, Func<Tensor, Tensor?>)>(pm.Hooks ?? []) { ("hook_embed", t => { passes += t.shape[0]; return null; }) };
        return (hooks, () => passes, () => passes = 0);
    }

    [Fact]
    public void Token_probing_and_absorption_of_two_saes_in_one_pass_equal_two_single_sae_runs()
    {
        string hook = BuiltinModel.MiddleHook;
        var both = TokenProbingOfTwoSaesEqualsSingleRuns(SaveSae("a", 128, 64, hook, 1), SaveSae("b", 128, 96, hook, 2), 8192);
        // The model's probes are the same for both SAEs (one pass, one probe); the SAEs' own are their own.
        Assert.Equal(both[0].Tasks.Select(t => t.LlmTestAccuracy), both[1].Tasks.Select(t => t.LlmTestAccuracy));
        Assert.NotEqual(both[0].Tasks.Select(t => string.Join(",", t.TopFeatures)), both[1].Tasks.Select(t => string.Join(",", t.TopFeatures)));
    }

    /// <summary>Token-level probing with absorption of the SAEs at <paramref name="first"/> and <paramref name="second"/> on the
    /// builtin model in one call: each SAE's report equals that of a call with it alone, with as many model rows as one
    /// such call. Returns the two reports of the call.</summary>
    private IReadOnlyList<SparseProbingReport> TokenProbingOfTwoSaesEqualsSingleRuns(string first, string second, long tokens)
    {
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 4, 300);
        var saes = new[] { SaeLoader.Load(first), SaeLoader.Load(second) };
        try
        {
            using var pm = ModelForSae.Load(BuiltinModel.Folder, saes, [first, second]);
            var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
            var (hooks, passes, reset) = Counter(pm);
            var harvest = new LabelScoringOptions { Tokens = tokens, ContextSize = 32 };
            var options = new SparseProbingOptions { KValues = [1, 2, 5], Labels = ["cat:colour", "cat:animal"] };
            var absorption = new AbsorptionOptions { Labels = ["cat:colour"] };
            var single = new List<SparseProbingReport>();
            long onePass = 0;
            foreach (var sae in saes)
            {
                reset();
                single.Add(SparseProbing.Run(sae, pm.Model, hooks, tok, corpus, harvest, options, absorption));
                onePass = passes();
            }
            reset();
            var all = SparseProbing.Run(saes, pm.Model, hooks, tok, corpus, harvest, options, absorption);
            // The windows run through the model once for both SAEs: as many rows as a one-SAE run.
            Assert.True(onePass > 0);
            Assert.Equal(onePass, passes());
            Assert.Equal(2, all.Count);
            for (int i = 0; i < 2; i++)
            {
                Assert.NotEmpty(single[i].Tasks);
                Assert.Equal(Content(single[i]), Content(all[i]));
                Assert.Equal(single[i].Absorption!.ToJson().ToJsonString(), all[i].Absorption!.ToJson().ToJsonString());
            }
            return all;
        }
        finally
        {
            foreach (var s in saes) s.Dispose();
        }
    }

    [Fact]
    public void Mean_pooled_probing_tpp_and_scr_of_two_saes_in_one_pass_equal_two_single_sae_runs()
    {
        using var f = new AnalysisFixture();
        var hooks = MeanTppScrOfTwoSaesEqualSingleRuns(f, f.SaeDir, SaveSae("b", 16, 20, "hook_embed", 7, ctx: 16));
        Assert.Equal(["hook_embed", "hook_embed"], hooks);
    }

    [Fact]
    public void Token_probing_and_absorption_of_saes_at_two_hooks_in_one_pass_equal_single_sae_runs_with_the_model_probes_per_hook()
    {
        // c at layer 0's MLP (d_in 512) before a at the middle hook (d_in 128): the model runs past the first SAE's hook.
        string mid = BuiltinModel.MiddleHook, mlp = "blocks.0.mlp.hook_post";
        var all = TokenProbingOfTwoSaesEqualsSingleRuns(SaveSae("c", 512, 48, mlp, 3), SaveSae("a", 128, 64, mid, 1), 6144);
        Assert.Equal([mlp, mid], all.Select(r => r.Hook));
        // The model's probes: one per hook (512 MLP dimensions vs 128 residual ones), each SAE's those of its own hook.
        Assert.NotEqual(all[0].Tasks.Select(t => (t.LlmTestAccuracy, string.Join(",", t.LlmTopK.Values))),
                        all[1].Tasks.Select(t => (t.LlmTestAccuracy, string.Join(",", t.LlmTopK.Values))));
    }

    [Fact]
    public void Mean_pooled_probing_tpp_and_scr_of_saes_at_two_hooks_in_one_pass_equal_single_sae_runs()
    {
        using var f = new AnalysisFixture();
        // The fixture's SAE reads hook_embed (d_in 16); b, first, reads layer 1's MLP (d_in 64).
        var hooks = MeanTppScrOfTwoSaesEqualSingleRuns(f, SaveSae("b", 64, 20, "blocks.1.mlp.hook_post", 7, ctx: 16), f.SaeDir);
        Assert.Equal(["blocks.1.mlp.hook_post", "hook_embed"], hooks);
    }

    /// <summary>Mean-pooled probing, TPP and SCR of the SAEs at <paramref name="first"/> and <paramref name="second"/> on
    /// <paramref name="f"/>'s model in one call: each SAE's reports equal those of a call with it alone, with as many model
    /// rows as one such call. Returns the hooks of the two mean-pooled reports.</summary>
    private IReadOnlyList<string> MeanTppScrOfTwoSaesEqualSingleRuns(AnalysisFixture f, string first, string second)
    {
        var saes = new[] { SaeLoader.Load(first), SaeLoader.Load(second) };
        try
        {
            using var pm = ModelForSae.Load(f.ModelDir, saes, [first, second]);
            var tok = Tokenizer.FromFolder(f.ModelDir);
            var (hooks, passes, reset) = Counter(pm);
            string path = ClassesJsonl(400, 1);
            var text = new TextProbingOptions { ContextSize = 8, MinTexts = 5 };
            var probing = new SparseProbingOptions { KValues = [1, 2], TrainSetSize = 80, TestSetSize = 20 };
            // Each SAE alone, then both: the same rows through the model as one SAE alone.
            (T A, T B, IReadOnlyList<T> Both) Calls<T>(Func<Sae, T> one, Func<IReadOnlyList<T>> both)
            {
                reset();
                var a = one(saes[0]);
                long onePass = passes();
                var b = one(saes[1]);
                reset();
                var ab = both();
                Assert.True(onePass > 0);
                Assert.Equal(onePass, passes());
                return (a, b, ab);
            }

            var (meanA, meanB, mean) = Calls(s => TextProbing.Run(s, pm.Model, hooks, tok, path, text, probing),
                () => TextProbing.Run(saes, pm.Model, hooks, tok, path, text, probing));
            Assert.Equal(Content(meanA), Content(mean[0]));
            Assert.Equal(Content(meanB), Content(mean[1]));

            var tpp = new TppOptions { NValues = [1, 3] };
            TppDataset[] tppData = [new TppDataset(path, "toy", "text", "label", null)];
            var (tppA, tppB, tppBoth) = Calls(s => TargetedProbePerturbation.RunSuite(s, pm.Model, hooks, tok, tppData, text, probing, tpp),
                () => TargetedProbePerturbation.RunSuite(saes, pm.Model, hooks, tok, tppData, text, probing, tpp));
            Assert.Equal(tppA.Runs[0].Report.ToJson().ToJsonString(), tppBoth[0].Runs[0].Report.ToJson().ToJsonString());
            Assert.Equal(tppB.Runs[0].Report.ToJson().ToJsonString(), tppBoth[1].Runs[0].Report.ToJson().ToJsonString());
            Assert.NotEqual(tppBoth[0].Runs[0].Report.ToJson().ToJsonString(), tppBoth[1].Runs[0].Report.ToJson().ToJsonString());

            var scr = new ScrOptions { Column1Name = "label", Column2Name = "g", Column2Vals = ["m", "f"], NValues = [1, 2], TrainSetSize = 80, TestSetSize = 20, MinTextsPerQuadrant = 2 };
            ScrDataset[] scrData = [new ScrDataset(path, "toy", "text", scr, [["a", "b"], ["a", "c"]])];
            var (scrA, scrB, scrBoth) = Calls(s => SpuriousCorrelationRemoval.RunSuite(s, pm.Model, hooks, tok, scrData, text),
                () => SpuriousCorrelationRemoval.RunSuite(saes, pm.Model, hooks, tok, scrData, text));
            for (int run = 0; run < 2; run++)
            {
                Assert.Equal(scrA.Runs[run].Report.ToJson().ToJsonString(), scrBoth[0].Runs[run].Report.ToJson().ToJsonString());
                Assert.Equal(scrB.Runs[run].Report.ToJson().ToJsonString(), scrBoth[1].Runs[run].Report.ToJson().ToJsonString());
            }
            return [.. mean.Select(r => r.Hook)];
        }
        finally
        {
            foreach (var s in saes) s.Dispose();
        }
    }

    [Fact]
    public void Cli_probes_saes_at_two_hooks_with_one_artifact_per_hook_that_a_later_one_hook_call_reads()
    {
        string mid = BuiltinModel.MiddleHook, mlp = "blocks.0.mlp.hook_post";
        string a = SaveSae("a", 128, 64, mid, 1), c = SaveSae("c", 512, 48, mlp, 3);
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 4, 200);
        string artifacts = Path.Combine(_dir, "artifacts");
        string[] common = ["--model", "builtin", "--dataset", corpus, "--tokens", "2048", "--context-size", "32", "--artifacts", artifacts];
        string json = Path.Combine(_dir, "probe.json");
        var (exit, output, err) = CliRunner.Run(["probe", "--sae", a, "--sae", c, .. common, "--json", json]);
        Assert.True(exit == 0, err + output);
        // One file per hook, each written by the one model pass.
        var files = Directory.GetFiles(artifacts, "probe_*.safetensors");
        Assert.Equal(2, files.Length);
        foreach (var file in files) Assert.Contains($"model activations written to {file}", output);
        var keys = files.Select(file => { using var st = global::SaeSharp.IO.SafeTensorsFile.Open(file); return JsonNode.Parse(st.Metadata[ProbeArtifacts.KeyField])!["hook"]!.GetValue<string>(); });
        Assert.Equal(new[] { mid, mlp }.Order(), keys.Order());
        // The sweep table: the model's row per hook, each hook's SAE under it.
        Assert.Contains("sparse probing means, 2 SAEs at 2 hooks", output);
        Assert.Contains($"at hook h (0: {mid}, 1: {mlp})", output);
        var table = output[output.IndexOf("sparse probing means", StringComparison.Ordinal)..];
        int[] order = [.. new[] { "llm (hook 0)", "SAE 0", "llm (hook 1)", "SAE 1" }.Select(row => table.IndexOf(row, StringComparison.Ordinal))];
        Assert.True(order[0] >= 0 && order.Zip(order.Skip(1)).All(p => p.First < p.Second), table);

        // c alone, later: its hook's file is read (no model pass) and its numbers are those of the two-hook call.
        string alone = Path.Combine(_dir, "alone.json");
        var single = CliRunner.Run(["probe", "--sae", c, .. common, "--json", alone]);
        Assert.True(single.Exit == 0, single.Err + single.Out);
        string mlpFile = files.Single(file => { using var st = global::SaeSharp.IO.SafeTensorsFile.Open(file); return st.Metadata[ProbeArtifacts.KeyField].Contains(mlp, StringComparison.Ordinal); });
        Assert.Contains($"model activations from {mlpFile}, no model pass", single.Out);
        Assert.DoesNotContain("written to", single.Out);
        foreach (var key in new[] { "eval_result_metrics", "eval_result_unstructured", "sae_cfg_dict" })
            Assert.Equal(JsonNode.Parse(File.ReadAllText(alone))![key]!.ToJsonString(), JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "probe_sae1.json")))![key]!.ToJsonString());
    }

    [Fact]
    public void Cli_writes_one_json_per_sae_with_evals_suffix_and_refuses_saes_of_one_hook_and_another_d_in_or_of_one_head_by_name()
    {
        string hook = BuiltinModel.MiddleHook;
        string a = SaveSae("a", 128, 64, hook, 1), b = SaveSae("b", 128, 96, hook, 2);
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 4, 200);
        string[] common = ["--model", "builtin", "--dataset", corpus, "--tokens", "2048", "--context-size", "32"];
        string json = Path.Combine(_dir, "probe.json");
        var (exit, output, err) = CliRunner.Run(["probe", "--sae", a, "--sae", b, .. common, "--json", json]);
        Assert.True(exit == 0, err + output);
        // sae eval --saebench-json's names: the suffix before the extension, none without several SAEs.
        string j0 = Path.Combine(_dir, "probe_sae0.json"), j1 = Path.Combine(_dir, "probe_sae1.json");
        Assert.True(File.Exists(j0) && File.Exists(j1));
        Assert.False(File.Exists(json));
        Assert.Contains($"SAE 0 (_sae0): {a}", output);
        Assert.Contains($"SAE 1 (_sae1): {b}", output);
        Assert.Equal(a, JsonNode.Parse(File.ReadAllText(j0))!["sae_lens_release_id"]!.GetValue<string>());
        Assert.Equal(b, JsonNode.Parse(File.ReadAllText(j1))!["sae_lens_release_id"]!.GetValue<string>());
        // The second SAE's file holds what a call with it alone writes.
        string alone = Path.Combine(_dir, "alone.json");
        var single = CliRunner.Run(["probe", "--sae", b, .. common, "--json", alone]);
        Assert.True(single.Exit == 0, single.Err + single.Out);
        foreach (var key in new[] { "eval_result_metrics", "eval_result_unstructured", "sae_cfg_dict" })
            Assert.Equal(JsonNode.Parse(File.ReadAllText(alone))![key]!.ToJsonString(), JsonNode.Parse(File.ReadAllText(j1))![key]!.ToJsonString());

        // d_in is checked per hook: an SAE at another hook may have another (the two-hook tests above), one at the same may not.
        string narrow = SaveSae("narrow", 64, 32, hook, 3), other = SaveSae("other", 512, 32, "blocks.0.mlp.hook_post", 4);
        var bad = CliRunner.Run(["probe", "--sae", a, "--sae", other, "--sae", narrow, .. common]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains($"--sae {narrow} has d_in = 64, but --sae {a} at the same hook {hook} has d_in = 128", bad.Err + bad.Out);
        string missing = Path.Combine(_dir, "no-such-sae");
        bad = CliRunner.Run(["probe", "--sae", a, "--sae", missing, .. common]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains(missing, bad.Err + bad.Out);
        bad = CliRunner.Run(["probe", "--sae", a, "--sae", a, .. common]);
        Assert.Contains($"--sae {a} is given 2 times", bad.Err + bad.Out);
        // One head of a per-head hook (TransformerLens's hook_k_input, hook_head_index 1) is probed on that head's slice; a
        // head the hook does not have is refused by name, before any pass.
        string head = SaveSae("head", 128, 32, "blocks.1.hook_k_input", 5, head: 1);
        var ok = CliRunner.Run(["probe", "--sae", head, .. common]);
        Assert.True(ok.Exit == 0, ok.Err + ok.Out);
        Assert.Contains("blocks.1.hook_k_input head 1", ok.Out);
        // Two heads of that hook: two sites (a model probe each) of one hook, counted as such.
        string head0 = SaveSae("head0", 128, 32, "blocks.1.hook_k_input", 6, head: 0);
        var two = CliRunner.Run(["probe", "--sae", head0, "--sae", head, .. common]);
        Assert.True(two.Exit == 0, two.Err + two.Out);
        Assert.Contains("sparse probing means, 2 SAEs at 2 sites of 1 hook", two.Out);
        Assert.Contains("blocks.1.hook_k_input head 0", two.Out);
        Assert.Equal("blocks.1.hook_k_input", SaeSharp.Saes.SaeMetadata.HookOfSite(SaeSharp.Saes.SaeMetadata.SiteOf("blocks.1.hook_k_input", 12)));
        Assert.Equal("blocks.1.hook_k_input", SaeSharp.Saes.SaeMetadata.HookOfSite("blocks.1.hook_k_input"));
        string far = SaveSae("far", 128, 32, "blocks.1.hook_k_input", 5, head: 9);
        bad = CliRunner.Run(["probe", "--sae", far, .. common]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("reads head 9 (hook_head_index), but the hook has 4 heads (0..3)", bad.Err + bad.Out);
    }
}
