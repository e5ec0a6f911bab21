using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Corpus;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.LanguageModels;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae probe --artifacts</c>: the first call writes the model's activations, a second call with the same inputs
/// reads them and runs no model (the rows reaching <c>hook_embed</c> are counted) and gives exactly the numbers of a call
/// without artifacts; another --tokens or another dataset content makes a new file; a truncated or foreign file is an
/// error naming it, left in place.</summary>
public sealed class ProbeArtifactsTests : TempDirTestBase
{
    private string Artifacts => Path.Combine(_dir, "artifacts");

    private string[] Files() => Directory.Exists(Artifacts) ? [.. Directory.GetFiles(Artifacts, "probe_*").Select(Path.GetFileName).Order()!] : [];

    private string Content(SparseProbingReport r)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".json");
        r.WriteJson(path, "d");
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        return root["eval_result_metrics"]!.ToJsonString() + root["eval_result_unstructured"]!.ToJsonString() + (r.Absorption?.ToJson().ToJsonString() ?? "");
    }

    /// <summary>A random ReLU SAE on the builtin model's middle hook.</summary>
    private string SaveSae()
    {
        var cfg = new SaeConfig { DIn = 128, DSae = 64 };
        cfg.Metadata.HookName = BuiltinModel.MiddleHook;
        cfg.Metadata.ContextSize = 32;
        using var sae = SaeFactory.Create(cfg);
        using (no_grad())
        {
            var w = randn(128, 64, generator: new Generator(5));
            w.div_(w.norm(0, true));
            sae.WEnc.copy_(w);
            sae.WDec.copy_(w.t());
        }
        string dir = Path.Combine(_dir, "sae");
        SaeLensFormat.Save(sae, dir);
        return dir;
    }

    [Fact]
    public void Token_probing_reads_its_artifact_with_no_model_pass_and_gives_the_same_numbers_and_tokens_change_the_key()
    {
        string saeDir = SaveSae();
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 4, 300);
        using var sae = SaeLoader.Load(saeDir);
        using var pm = ModelForSae.Load(BuiltinModel.Folder, [sae], [saeDir]);
        var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
        var (hooks, passes, reset) = ProbeSweepTests.Counter(pm);
        var harvest = new LabelScoringOptions { Tokens = 6000, ContextSize = 32 };
        var options = new SparseProbingOptions { KValues = [1, 2], Labels = ["cat:colour", "cat:animal"] };
        var absorption = new AbsorptionOptions { Labels = ["cat:colour"] };
        IReadOnlyList<SparseProbingReport> Run(LabelScoringOptions h, ProbeArtifacts? a) =>
            SparseProbing.Run([sae], pm.Model, hooks, tok, corpus, h, options, absorption, artifacts: a);

        string plain = Content(Run(harvest, null)[0]);
        long onePass = passes();
        Assert.True(onePass > 0);
        reset();
        var first = new ProbeArtifacts(Artifacts).ForModel(BuiltinModel.Folder, pm);
        Assert.Equal(plain, Content(Run(harvest, first)[0]));
        Assert.Equal(onePass, passes());
        var file = Assert.Single(Files());
        Assert.Equal($"model activations written to {Path.Combine(Artifacts, file)}", Assert.Single(first.Notes));

        reset();
        var second = new ProbeArtifacts(Artifacts).ForModel(BuiltinModel.Folder, pm);
        Assert.Equal(plain, Content(Run(harvest, second)[0]));
        Assert.Equal(0, passes());
        Assert.Equal($"model activations from {Path.Combine(Artifacts, file)}, no model pass", Assert.Single(second.Notes));

        // Another --tokens reads other tokens: a new file, the model run again.
        reset();
        Run(harvest with { Tokens = 5000 }, new ProbeArtifacts(Artifacts).ForModel(BuiltinModel.Folder, pm));
        Assert.True(passes() > 0);
        Assert.Equal(2, Files().Length);
    }

    [Fact]
    public void A_copied_model_folder_reuses_the_artifact_and_other_weights_do_not()
    {
        string saeDir = SaveSae();
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 4, 100);
        string m1 = Path.Combine(_dir, "m1"), m2 = Path.Combine(_dir, "m2");
        void Copy(string from, string to, DateTime mtime)
        {
            Directory.CreateDirectory(to);
            foreach (var f in Directory.GetFiles(from))
            {
                string t = Path.Combine(to, Path.GetFileName(f));
                File.Copy(f, t);
                File.SetLastWriteTimeUtc(t, mtime);
            }
        }
        Copy(BuiltinModel.Folder, m1, new DateTime(2021, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        using var sae = SaeLoader.Load(saeDir);
        using var pm = ModelForSae.Load(m1, [sae], [saeDir]);
        var tok = Tokenizer.FromFolder(m1);
        var (hooks, passes, reset) = ProbeSweepTests.Counter(pm);
        var harvest = new LabelScoringOptions { Tokens = 1024, ContextSize = 32 };
        var options = new SparseProbingOptions { KValues = [1], Labels = ["pos:NOUN"] };
        ProbeArtifacts Run(string folder)
        {
            reset();
            var a = new ProbeArtifacts(Artifacts).ForModel(folder, pm);
            SparseProbing.Run([sae], pm.Model, hooks, tok, corpus, harvest, options, artifacts: a);
            return a;
        }
        Run(m1);
        string file = Path.Combine(Artifacts, Assert.Single(Files()));
        // The memo holds each model file's SHA-256 (computed here independently).
        var memo = JsonNode.Parse(File.ReadAllText(Path.Combine(Artifacts, ProbeArtifacts.HashesFile)))!["files"]!;
        foreach (var f in Directory.GetFiles(m1))
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f))), memo[Path.GetFullPath(f)]!["sha256"]!.GetValue<string>());

        // The same files elsewhere, with other mtimes: the same key, no model pass.
        Copy(m1, m2, new DateTime(2022, 6, 1, 0, 0, 0, DateTimeKind.Utc));
        Assert.Equal($"model activations from {file}, no model pass", Assert.Single(Run(m2).Notes));
        Assert.Equal(0, passes());

        // One byte of the weights changed (size kept): another key, the model runs into a new file.
        string weights = Path.Combine(m2, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        bytes[^1] ^= 1;
        File.WriteAllBytes(weights, bytes);
        Assert.StartsWith("model activations written to ", Assert.Single(Run(m2).Notes));
        Assert.True(passes() > 0);
        Assert.Equal(2, Files().Length);
    }

    [Fact]
    public void Mean_pooled_probing_tpp_and_scr_read_their_artifacts_with_no_model_pass_and_give_the_same_numbers()
    {
        using var f = new AnalysisFixture();
        using var sae = SaeLoader.Load(f.SaeDir);
        using var pm = ModelForSae.Load(f.ModelDir, [sae], [f.SaeDir]);
        var tok = Tokenizer.FromFolder(f.ModelDir);
        var (hooks, passes, reset) = ProbeSweepTests.Counter(pm);
        string path = ProbeRows.Jsonl(Path.Combine(_dir, "classes.jsonl"), ProbeRows.Rows(400, 1));
        var text = new TextProbingOptions { ContextSize = 8, MinTexts = 5 };
        var probing = new SparseProbingOptions { KValues = [1, 2], TrainSetSize = 80, TestSetSize = 20 };
        ProbeArtifacts Fresh() => new ProbeArtifacts(Artifacts).ForModel(f.ModelDir, pm);

        string mean = Content(TextProbing.Run([sae], pm.Model, hooks, tok, path, text, probing)[0]);
        Assert.Equal(mean, Content(TextProbing.Run([sae], pm.Model, hooks, tok, path, text, probing, artifacts: Fresh())[0]));
        reset();
        var again = Fresh();
        Assert.Equal(mean, Content(TextProbing.Run([sae], pm.Model, hooks, tok, path, text, probing, artifacts: again)[0]));
        Assert.Equal(0, passes());
        Assert.EndsWith(", no model pass", Assert.Single(again.Notes));

        var tpp = new TppOptions { NValues = [1, 3] };
        TppDataset[] tppData = [new TppDataset(path, "toy", "text", "label", null)];
        string Tpp(ProbeArtifacts? a) => TargetedProbePerturbation.RunSuite([sae], pm.Model, hooks, tok, tppData, text, probing, tpp, artifacts: a)[0].Runs[0].Report.ToJson().ToJsonString();
        string tppPlain = Tpp(null);
        Assert.Equal(tppPlain, Tpp(Fresh()));
        reset();
        Assert.Equal(tppPlain, Tpp(Fresh()));
        Assert.Equal(0, passes());

        var scr = new ScrOptions { Column1Name = "label", Column2Name = "g", Column2Vals = ["m", "f"], NValues = [1, 2], TrainSetSize = 80, TestSetSize = 20, MinTextsPerQuadrant = 2 };
        ScrDataset[] scrData = [new ScrDataset(path, "toy", "text", scr, [["a", "b"]])];
        string Scr(ProbeArtifacts? a) => SpuriousCorrelationRemoval.RunSuite([sae], pm.Model, hooks, tok, scrData, text, artifacts: a)[0].Runs[0].Report.ToJson().ToJsonString();
        string scrPlain = Scr(null);
        Assert.Equal(scrPlain, Scr(Fresh()));
        reset();
        Assert.Equal(scrPlain, Scr(Fresh()));
        Assert.Equal(0, passes());

        // Other dataset content (same path): other texts, so the model runs again into a new file.
        var before = Files();
        ProbeRows.Jsonl(path, ProbeRows.Rows(400, 2));
        reset();
        void Run() => TextProbing.Run([sae], pm.Model, hooks, tok, path, text, probing, artifacts: Fresh());
        Run();
        Assert.True(passes() > 0);
        string file = Path.Combine(Artifacts, Assert.Single(Files().Except(before)));

        // A truncated file is an error naming it, and is left as it is.
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<SaeSharpException>(Run);
        Assert.StartsWith(file + ": not a readable sae probe artifact", e.Message);
        Assert.Contains("delete it", e.Message);
        Assert.Equal(bytes.Length / 2, new FileInfo(file).Length);
        // A whole file whose key is another's (copied over it): refused on the re-check of the key.
        using (var t = zeros(2, 2))
        using (var l = tensor(new long[] { 1, 1 }))
            SafeTensors.Save(file, new Dictionary<string, Tensor> { ["acts"] = t, ["lengths"] = l }, new Dictionary<string, string> { ["saesharp_probe_artifact_key"] = "{}" });
        e = Assert.Throws<SaeSharpException>(Run);
        Assert.Equal($"{file}: not a readable sae probe artifact (its key differs from this call's); delete it to compute the model's activations again", e.Message);
    }

    [Fact]
    public void Cli_says_where_the_activations_come_from_and_writes_the_same_json()
    {
        string saeDir = SaveSae();
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 4, 100);
        string[] common = ["probe", "--sae", saeDir, "--model", "builtin", "--dataset", corpus, "--tokens", "1024", "--context-size", "32", "--artifacts", Artifacts];
        string j1 = Path.Combine(_dir, "1.json"), j2 = Path.Combine(_dir, "2.json");
        var first = CliRunner.Run([.. common, "--json", j1]);
        Assert.True(first.Exit == 0, first.Err + first.Out);
        string file = Path.Combine(Artifacts, Assert.Single(Files()));
        Assert.Contains($"model activations written to {file}", first.Out);
        var second = CliRunner.Run([.. common, "--json", j2]);
        Assert.True(second.Exit == 0, second.Err + second.Out);
        Assert.Contains($"model activations from {file}, no model pass", second.Out);
        Assert.Equal(JsonNode.Parse(File.ReadAllText(j1))!["eval_result_metrics"]!.ToJsonString(), JsonNode.Parse(File.ReadAllText(j2))!["eval_result_metrics"]!.ToJsonString());
    }
}
