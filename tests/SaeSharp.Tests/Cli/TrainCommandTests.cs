using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>The file-based workflow end to end: synth → train → eval → encode, through the command line.</summary>
public class TrainCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-train-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    [Fact]
    public void TopKTrainedOnSyntheticDataRecoversTheTrueFeatures()
    {
        Ok(CliRunner.Run("synth", "--out", P("data"), "--d-in", "32", "--features", "64", "--rows", "60000", "--eval-rows", "4000", "--seed", "3"));
        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "128",
            "--steps", "800", "--batch-size", "512", "--out", P("run"), "--ground-truth", P("data", "features.safetensors"), "--eval-rows", "4000"));
        foreach (var f in new[] { "cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "metrics.json", "train_log.jsonl" })
            Assert.True(File.Exists(P("run", f)), f);
        var metrics = JsonNode.Parse(File.ReadAllText(P("run", "metrics.json")))!;
        Assert.True(metrics["mmcs"]!.GetValue<double>() >= 0.9, metrics.ToJsonString());
        Assert.True(metrics["recovered_fraction"]!.GetValue<double>() >= 0.9, metrics.ToJsonString());
        // SAELens 6.37.6's synthetic-data metrics: the held-out rows are train.safetensors' last 4000, whose ground-truth
        // activations sae synth stored. 128 latents on 64 features: a matching leaves 64 latents unmatched, so mcc is
        // over the 64 features.
        foreach (var key in new[] { "true_l0", "sae_l0", "dead_latents", "shrinkage", "mcc", "uniqueness",
                     "classification/precision", "classification/recall", "classification/f1_score", "classification/accuracy" })
            Assert.True(metrics[key] is not null, key + " missing: " + metrics.ToJsonString());
        Assert.True(metrics["mcc"]!.GetValue<double>() >= 0.9, metrics.ToJsonString());
        Assert.InRange(metrics["sae_l0"]!.GetValue<double>(), 0.5, 2.0); // TopK k = 2: at most 2 latents > 0
        Assert.InRange(metrics["true_l0"]!.GetValue<double>(), 0.5, 2.5);
        // sae eval on the eval file computes the same keys; an untrained SAE of the same shape scores a low mcc.
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--activations", P("data", "eval.safetensors"), "--ground-truth", P("data", "features.safetensors"),
            "--json", P("eval.json")));
        var eval = JsonNode.Parse(File.ReadAllText(P("eval.json")))!;
        Assert.Equal(metrics["mcc"]!.GetValue<double>(), eval["mcc"]!.GetValue<double>(), 12);
        Assert.True(eval["classification/f1_score"] is not null, eval.ToJsonString());
        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "128",
            "--steps", "1", "--batch-size", "512", "--out", P("untrained"), "--ground-truth", P("data", "features.safetensors"), "--eval-rows", "4000"));
        var untrained = JsonNode.Parse(File.ReadAllText(P("untrained", "metrics.json")))!;
        Assert.True(untrained["mcc"]!.GetValue<double>() < 0.6, untrained.ToJsonString());
        Assert.True(untrained["classification/f1_score"]!.GetValue<double>() < metrics["classification/f1_score"]!.GetValue<double>(), untrained.ToJsonString());
        var sparsity = SafeTensors.Load(P("run", "sparsity.safetensors"))["sparsity"];
        Assert.Equal(new long[] { 128 }, sparsity.shape);
        Assert.True(sparsity.le(0).all().item<bool>(), "log10 of a fraction is at most 0");
    }

    [Fact]
    public void FromActivationFilesTokensSetTheRunLengthAndModelOnlyFlagsAreRefused()
    {
        Ok(CliRunner.Run("synth", "--out", P("data"), "--d-in", "16", "--features", "32", "--rows", "6000", "--eval-rows", "0"));
        // SAELens training_tokens: 2,048 tokens in batches of 256 rows are 8 steps (the log's last step is 8).
        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "32",
            "--tokens", "2048", "--batch-size", "256", "--out", P("run")));
        var last = File.ReadLines(P("run", "train_log.jsonl")).Select(l => JsonNode.Parse(l)!).Last(n => n["step"] is not null);
        Assert.Equal(8, last["step"]!.GetValue<long>());
        // --hook, --context-size, ... describe a harvest from a model: with files they would be ignored, so they are refused.
        var r = CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "32",
            "--steps", "2", "--hook", "blocks.0.hook_resid_post", "--context-size", "64", "--out", P("run2"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("--hook, --context-size: for activations harvested from a model (--model)", r.Err);
        Assert.False(Directory.Exists(P("run2")) && Directory.EnumerateFileSystemEntries(P("run2")).Any(), "nothing is written");
    }

    [Fact]
    public void SaeLensFlagNamesAreAliasesOfTheDictionaryLearningOnes()
    {
        // A SAELens user types d_sae, expansion_factor and l1_coefficient as flags: each sets what its other name sets.
        Ok(CliRunner.Run("synth", "--out", P("data"), "--d-in", "16", "--features", "32", "--rows", "3000", "--eval-rows", "0"));
        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "relu", "--d-sae", "48", "--l1-coefficient", "0.25",
            "--steps", "2", "--batch-size", "256", "--out", P("a")));
        var a = JsonNode.Parse(File.ReadAllText(P("a", "cfg.json")))!;
        Assert.Equal(48, a["d_sae"]!.GetValue<int>());
        Assert.Equal(0.25, a["l1_coefficient"]!.GetValue<double>());
        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--expansion-factor", "3",
            "--steps", "2", "--batch-size", "256", "--out", P("b")));
        Assert.Equal(3 * 16, JsonNode.Parse(File.ReadAllText(P("b", "cfg.json")))!["d_sae"]!.GetValue<int>());
    }

    [Fact]
    public void EvalJsonAgreesWithAnIndependentComputationFromEncodeOutput()
    {
        Ok(CliRunner.Run("synth", "--out", P("data"), "--d-in", "16", "--features", "32", "--rows", "20000", "--eval-rows", "3000", "--seed", "5"));
        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "relu", "--dict-size", "64",
            "--steps", "60", "--batch-size", "256", "--out", P("run"), "--eval-rows", "1000"));
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--activations", P("data", "eval.safetensors"), "--json", P("eval.json")));
        Ok(CliRunner.Run("encode", "--sae", P("run"), "--activations", P("data", "eval.safetensors"), "--out", P("enc.safetensors"), "--batch-size", "700"));

        var json = JsonNode.Parse(File.ReadAllText(P("eval.json")))!.AsObject();
        foreach (var key in new[] { "mse", "l1", "l0", "fvu", "explained_variance", "cosine", "l2_ratio", "relative_reconstruction_bias", "alive_fraction", "dead_fraction",
                     "l2_norm_in", "l2_norm_out", "explained_variance_legacy" })
            Assert.True(json.ContainsKey(key), key);
        Assert.True(File.Exists(P("eval_feature_density.png")));

        var x = SafeTensors.Load(P("data", "eval.safetensors"))["activations"].to(ScalarType.Float64);
        var enc = SafeTensors.Load(P("enc.safetensors"));
        var y = enc["sae_out"].to(ScalarType.Float64);
        var f = enc["feature_acts"].to(ScalarType.Float64);
        Assert.Equal(new long[] { 3000, 64 }, f.shape);
        // FVU with the mean taken per dimension; L0 as the mean count of non-zero latents.
        double fvu = ((x - y).pow(2).sum() / (x - x.mean([0], keepdim: true)).pow(2).sum()).item<double>();
        double l0 = f.ne(0).sum(1).to(ScalarType.Float64).mean().item<double>();
        Assert.Equal(fvu, json["fvu"]!.GetValue<double>(), 4);
        Assert.Equal(l0, json["l0"]!.GetValue<double>(), 4);
        // SAELens's l2_norm_in / l2_norm_out (mean row norms) and explained_variance_legacy (mean over rows of
        // 1 − ‖x−x̂‖² / ‖x−x̄‖², x̄ the batch's mean: the 3000 rows are one evaluation batch of the default 4096).
        Assert.Equal(x.norm(1).mean().item<double>(), json["l2_norm_in"]!.GetValue<double>(), 4);
        Assert.Equal(y.norm(1).mean().item<double>(), json["l2_norm_out"]!.GetValue<double>(), 4);
        double legacy = (1 - (x - y).pow(2).sum(1) / (x - x.mean([0], keepdim: true)).pow(2).sum(1)).mean().item<double>();
        Assert.Equal(legacy, json["explained_variance_legacy"]!.GetValue<double>(), 4);
        // The encoded rows are exactly the loaded SAE's outputs.
        using var sae = SaeLoader.Load(P("run"));
        var (y2, _) = sae.Run(x.to(ScalarType.Float32));
        Assert.True(y2.allclose(enc["sae_out"], rtol: 1e-5, atol: 1e-6));
    }

    /// <summary>A SAELens JumpReLU config (SAELens 6's <c>l0_coefficient</c>, <c>jumprelu_bandwidth</c>) trains with its values,
    /// which the checkpoint and cfg.json keep; a resume given another bandwidth is refused; SAELens's tanh loss is refused
    /// as not supported.</summary>
    [Fact]
    public void ASaeLensJumpReluConfigTrainsWithItsFields()
    {
        Npy.Save(P("acts.npy"), randn(600, 8, generator: new Generator(2)));
        File.WriteAllText(P("jr.json"), """{"architecture":"jumprelu","l0_coefficient":2,"jumprelu_bandwidth":0.002}""");
        string[] Train(params string[] more) =>
            ["train", "--activations", P("acts.npy"), "--config", P("jr.json"), "--steps", "10", "--batch-size", "32", "--eval-rows", "50", "--out", P("o"), .. more];
        Ok(CliRunner.Run(Train()));
        Assert.Equal(2, JsonNode.Parse(File.ReadAllText(P("o", "cfg.json")))!["l0_coefficient"]!.GetValue<double>());
        using (var state = SaeSharp.Training.TrainerCheckpoint.Load(P("o", "checkpoints")))
        {
            Assert.Equal(0.002, state.Saes[0].Training.Bandwidth);
            Assert.Equal(2, state.Saes[0].Training.SparsityCoefficient);
        }
        File.WriteAllText(P("jr.json"), """{"architecture":"jumprelu","l0_coefficient":2,"jumprelu_bandwidth":0.003}""");
        var r = CliRunner.Run(Train("--resume"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("jumprelu_bandwidth 0.003 (jumprelu in the checkpoint's run: 0.002)", r.Err);
        File.WriteAllText(P("jr.json"), """{"architecture":"jumprelu","l0_coefficient":2,"jumprelu_bandwidth":0.002}""");
        Ok(CliRunner.Run(Train("--resume")));

        File.WriteAllText(P("tanh.json"), """{"architecture":"jumprelu","jumprelu_sparsity_loss_mode":"tanh"}""");
        var err = RefusedWritingNothing(P("t"), "--activations", P("acts.npy"), "--config", P("tanh.json"), "--steps", "10");
        Assert.Contains("tanh.json", err);
        Assert.Contains("not supported", err);
    }

    [Fact]
    public void AKAboveDSaeIsAnErrorNamingTheFlagsNotCfgJson()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(300, 8) });
        // --expansion 2 at d_in 8: d_sae 16 < k 20.
        var err = RefusedWritingNothing(P("run"), "--activations", P("a.safetensors"), "--arch", "batchtopk", "--k", "20", "--expansion", "2",
            "--steps", "2", "--batch-size", "32");
        Assert.Contains("batchtopk: k 20 (--k) exceeds d_sae 16 (--dict-size, or --expansion × d_in)", err);
        Assert.DoesNotContain("cfg.json", err);
    }

    /// <summary>Runs <c>sae train ARGS --out OUT</c>, asserts it fails with exit code 1 and leaves no OUT, and returns stderr.</summary>
    private static string RefusedWritingNothing(string outDir, params string[] args)
    {
        var r = CliRunner.Run(["train", .. args, "--out", outDir]);
        Assert.Equal(1, r.Exit);
        Assert.False(Directory.Exists(outDir), r.Err);
        return r.Err;
    }

    [Fact]
    public void AnOutThatIsAFileOrAnInputIsRefusedNamingItBeforeAnythingIsWritten()
    {
        string data = P("shards", "a.safetensors");
        Directory.CreateDirectory(P("shards"));
        SafeTensors.Save(data, new Dictionary<string, Tensor> { ["activations"] = randn(300, 8) });
        byte[] dataBytes = File.ReadAllBytes(data);
        File.WriteAllText(P("note.txt"), "keep me");
        (int Exit, string Out, string Err) Train(string activations, string outDir) => CliRunner.Run("train", "--activations", activations,
            "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "2", "--batch-size", "32", "--out", outDir);

        var r = Train(data, P("note.txt"));
        Assert.Equal(1, r.Exit);
        Assert.Contains($"--out {P("note.txt")}: is a file, not a folder", r.Err);
        Assert.Equal("keep me", File.ReadAllText(P("note.txt")));

        r = Train(data, P("note.txt", "run"));
        Assert.Equal(1, r.Exit);
        Assert.Contains($"{P("note.txt")} is a file, not a folder", r.Err);

        r = Train(data, data);
        Assert.Equal(1, r.Exit);
        Assert.Contains($"would replace --activations {data}", r.Err);

        // A folder of shards: a run written into it would be read as a shard (sae_weights.safetensors) next time.
        r = Train(P("shards"), P("shards", "run"));
        Assert.Equal(1, r.Exit);
        Assert.Contains($"would write into the folder of --activations {P("shards")}", r.Err);
        Assert.Equal(["a.safetensors"], Directory.EnumerateFileSystemEntries(P("shards")).Select(Path.GetFileName));
        Assert.Equal(dataBytes, File.ReadAllBytes(data));
    }

    [Fact]
    public void APreviousRunsFolderIsKeptUnlessForcedAndAResumeMustMatchItsRun()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(600, 8) });
        string[] Train(string arch, params string[] more) =>
            ["train", "--activations", P("a.safetensors"), "--arch", arch, "--dict-size", "16", "--batch-size", "32", "--checkpoint-every", "5",
             "--out", P("run"), "--eval-rows", "50", .. more];
        Ok(CliRunner.Run(Train("topk", "--k", "2", "--steps", "20")));
        var cfg = File.ReadAllText(P("run", "cfg.json"));
        var log = File.ReadAllText(P("run", "train_log.jsonl"));

        // A new run into the folder is refused before anything is written.
        var r = CliRunner.Run(Train("relu", "--steps", "10"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("previous training run", r.Err);
        Assert.Contains("--force", r.Err);
        Assert.Equal(cfg, File.ReadAllText(P("run", "cfg.json")));
        Assert.Equal(log, File.ReadAllText(P("run", "train_log.jsonl")));

        // A resume whose flags differ from the checkpoint's run names each difference.
        r = CliRunner.Run(Train("relu", "--steps", "40", "--resume"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("--arch relu (the checkpoint's run: topk)", r.Err);
        Assert.Contains("--steps 40 (the checkpoint's run: 20)", r.Err);
        Assert.Equal(cfg, File.ReadAllText(P("run", "cfg.json")));

        // --force replaces the run, and its checkpoints are the new run's only: a later resume continues relu.
        Ok(CliRunner.Run(Train("relu", "--steps", "10", "--force")));
        Assert.Equal("standard", JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!["architecture"]!.GetValue<string>());
        foreach (var step in Directory.GetDirectories(P("run", "checkpoints")))
        {
            using var state = SaeSharp.Training.TrainerCheckpoint.Load(step);
            Assert.Equal(["relu"], state.Saes.Select(e => e.Name));
            Assert.True(state.Step <= 10, step);
        }
        r = CliRunner.Run(Train("relu", "--steps", "10", "--resume"));
        Ok(r);
        Assert.Contains("relu: wrote", r.Out);
        Assert.Equal("standard", JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!["architecture"]!.GetValue<string>());
    }

    [Fact]
    public void AResumeWithAnotherSparsityCoefficientTargetL0OrLpNormIsRefusedNamingEachAndTheSameFlagsResume()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(600, 8) });
        string[] Train(params string[] more) =>
            ["train", "--activations", P("a.safetensors"), "--arch", "relu", "--dict-size", "16", "--batch-size", "32", "--steps", "10",
             "--checkpoint-every", "5", "--out", P("run"), "--eval-rows", "50", .. more];
        Ok(CliRunner.Run(Train("--l1", "3")));
        File.Delete(P("run", "cfg.json")); // as if stopped before writing the SAE
        var log = File.ReadAllText(P("run", "train_log.jsonl"));

        // The checkpoint's λ is 3 and its p is 1 (L1); it has no --target-l0 controller, and relu has no k.
        var r = CliRunner.Run(Train("--l1", "1", "--target-l0", "4", "--lp-norm", "2", "--k", "3", "--resume"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("--k 3 (the checkpoint's run has none)", r.Err);
        Assert.Contains("--l1 1 (the checkpoint's run: 3)", r.Err);
        Assert.Contains("--target-l0 4 (the checkpoint's run has none", r.Err);
        Assert.Contains("--lp-norm 2 (the checkpoint's run: 1)", r.Err);
        Assert.Equal(log, File.ReadAllText(P("run", "train_log.jsonl")));
        Assert.False(File.Exists(P("run", "cfg.json")));

        Ok(CliRunner.Run(Train("--l1", "3", "--lp-norm", "1", "--resume")));
        Assert.Equal(3.0, JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!["l1_coefficient"]!.GetValue<double>());

        // With --target-l0 the stored λ is the adapted one: the run's own flags (its starting --l1 included) resume it.
        string[] Target(string targetL0, params string[] more) =>
            ["train", "--activations", P("a.safetensors"), "--arch", "gated", "--dict-size", "16", "--batch-size", "32", "--steps", "10",
             "--checkpoint-every", "5", "--out", P("target"), "--eval-rows", "50", "--target-l0", targetL0, "--l1", "2", .. more];
        Ok(CliRunner.Run(Target("4")));
        File.Delete(P("target", "cfg.json"));
        Ok(CliRunner.Run(Target("4", "--resume")));
        r = CliRunner.Run(Target("6", "--resume"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("--target-l0 6 (the checkpoint's run: 4)", r.Err);
    }

    [Fact]
    public void ARunThatFailsBeforeWritingAnythingLeavesNoFolderAndDoesNotBlockTheNextRun()
    {
        var rows = randn(600, 8);
        rows[17, 3] = float.NaN;
        SafeTensors.Save(P("nan.safetensors"), new Dictionary<string, Tensor> { ["activations"] = rows });
        var r = CliRunner.Run("train", "--activations", P("nan.safetensors"), "--arch", "relu", "--dict-size", "16", "--steps", "5",
            "--batch-size", "32", "--out", P("run"), "--eval-rows", "50");
        Assert.Equal(1, r.Exit);
        Assert.Contains("NaN", r.Err);
        Assert.False(Directory.Exists(P("run")));
        // A folder the user made is left in place, and a failed run's empty log does not count as a previous run.
        Directory.CreateDirectory(P("mine"));
        File.WriteAllText(P("mine", "notes.txt"), "keep");
        r = CliRunner.Run("train", "--activations", P("nan.safetensors"), "--arch", "relu", "--dict-size", "16", "--steps", "5",
            "--batch-size", "32", "--out", P("mine"), "--eval-rows", "50");
        Assert.Equal(1, r.Exit);
        Assert.Equal("keep", File.ReadAllText(P("mine", "notes.txt")));
        rows[17, 3] = 0f;
        SafeTensors.Save(P("ok.safetensors"), new Dictionary<string, Tensor> { ["activations"] = rows });
        Ok(CliRunner.Run("train", "--activations", P("ok.safetensors"), "--arch", "relu", "--dict-size", "16", "--steps", "5",
            "--batch-size", "32", "--out", P("mine"), "--eval-rows", "50"));
    }

    [Fact]
    public void ALearningRateOrCoefficientThatIsNotFiniteIsRefusedBeforeTheOutputFolderIsMade()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(300, 8) });
        foreach (var (flag, value) in new[] { ("--lr", "nan"), ("--lr", "-1"), ("--lr", "0"), ("--l1", "nan"), ("--l1", "-1") })
        {
            var r = CliRunner.Run("train", "--activations", P("a.safetensors"), "--arch", "relu", "--dict-size", "16", "--steps", "3",
                "--batch-size", "32", "--out", P("bad"), "--eval-rows", "30", flag, value);
            Assert.Equal(1, r.Exit);
            Assert.Contains($"{flag} ", r.Err);
            Assert.DoesNotContain("JSON", r.Err);
            Assert.False(Directory.Exists(P("bad")), $"{flag} {value}");
        }
    }

    [Fact]
    public void FlagsThatTheRunWouldIgnoreOrThatContradictEachOtherAreErrors()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(300, 8) });
        (int Exit, string Out, string Err) Train(params string[] more) => CliRunner.Run(
            ["train", "--activations", P("a.safetensors"), "--steps", "3", "--batch-size", "32", "--out", P("run"), "--eval-rows", "30", .. more]);
        var r = Train("--arch", "relu", "--k", "4");
        Assert.Equal(1, r.Exit);
        Assert.Contains("--k 4 applies to topk", r.Err);
        // --l1 in a run whose recipes have no λ (the TopK family) would be ignored: refused, naming what sets their sparsity.
        r = Train("--arch", "topk,batchtopk", "--k", "2", "--l1", "0.5");
        Assert.Equal(1, r.Exit);
        Assert.Contains("--l1 0.5 (l1_coefficient) applies to relu", r.Err);
        Assert.Contains("topk sets its sparsity with --k; batchtopk sets its sparsity with --k", r.Err);
        Assert.False(Directory.Exists(P("run")));
        r = Train("--arch", "topk", "--k", "2", "--dict-size", "24", "--expansion", "4");
        Assert.Equal(1, r.Exit);
        Assert.Contains("--dict-size 24 and --expansion 4 disagree at d_in 8 (4 × 8 = 32)", r.Err);
        Assert.False(Directory.Exists(P("run")));
        foreach (var (flag, value, expected) in new[] { ("--k", "0", "a positive number"), ("--dict-size", "-2", "a positive number"),
                     ("--checkpoint-every", "0", "a positive number"), ("--epochs", "-1", "0 or more") })
        {
            r = Train("--arch", "topk", flag, value);
            Assert.NotEqual(0, r.Exit);
            Assert.Contains($"{flag} {value}: expected {expected}", r.Err + r.Out);
        }
        // --k beside a k-sparse recipe, and agreeing sizes, are fine.
        Ok(Train("--arch", "relu,topk", "--k", "2", "--dict-size", "32", "--expansion", "4"));
    }

    [Fact]
    public void WrongWidthAndMissingFileAreOneLineErrors()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(100, 8) });
        Ok(CliRunner.Run("train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16",
            "--steps", "3", "--batch-size", "16", "--out", P("run"), "--eval-rows", "20"));
        SafeTensors.Save(P("b.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(50, 9) });
        var r = CliRunner.Run("eval", "--sae", P("run"), "--activations", P("b.safetensors"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("b.safetensors", r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        r = CliRunner.Run("eval", "--sae", P("nope"), "--activations", P("b.safetensors"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("nope", r.Err);
    }

    [Fact]
    public void AutocastTrainsToTheFloat32MetricsAndIsKeptInCheckpoints()
    {
        Ok(CliRunner.Run("synth", "--out", P("data"), "--d-in", "32", "--features", "64", "--rows", "40000", "--eval-rows", "4000", "--seed", "6"));
        JsonNode Train(string name, params string[] extra)
        {
            Ok(CliRunner.Run(["train", "--activations", P("data", "train.safetensors"), "--arch", "topk,relu-april", "--k", "2",
                "--dict-size", "128", "--steps", "300", "--batch-size", "512", "--lr", "0.002", "--out", P(name), "--eval-rows", "4000",
                "--checkpoint-every", "100", .. extra]));
            return new JsonObject
            {
                ["topk"] = JsonNode.Parse(File.ReadAllText(P(name, "topk", "metrics.json"))),
                ["relu"] = JsonNode.Parse(File.ReadAllText(P(name, "relu-april", "metrics.json"))),
            };
        }
        var fp32 = Train("fp32");
        var bf16 = Train("bf16", "--autocast");
        foreach (var arch in new[] { "topk", "relu" })
        {
            double a = fp32[arch]!["fvu"]!.GetValue<double>(), b = bf16[arch]!["fvu"]!.GetValue<double>();
            Assert.True(a < 0.5, $"{arch}: float32 run did not train (fvu {a})");
            Assert.True(Math.Abs(a - b) <= 0.02 + 0.1 * a, $"{arch}: autocast fvu {b} vs float32 {a}");
        }
        Assert.Equal(2.0, bf16["topk"]!["l0"]!.GetValue<double>(), 6);
        // The flag is a training option of each SAE: a resumed run keeps it.
        var state = Directory.GetFiles(P("bf16", "checkpoints"), "trainer_state.json", SearchOption.AllDirectories);
        Assert.NotEmpty(state);
        Assert.All(state, f => Assert.Matches("\"autocast\"\\s*:\\s*true", File.ReadAllText(f)));
    }

    [Fact]
    public void ConfigFileSetsTheSameFieldsAndTrainerSchedules()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(2000, 8, generator: new Generator(4)) });
        File.WriteAllText(P("run.json"), $$"""
            {"activations": "{{P("a.safetensors").Replace("\\", "/")}}", "arch": "topk", "k": 2, "dict_size": 16, "steps": 30,
             "batch_size": 64, "out": "{{P("run").Replace("\\", "/")}}", "eval_rows": 100, "lr": 0.001,
             "lr_scheduler_name": "linear", "lr_decay_steps": 30, "lr_end": 0.0001}
            """);
        Ok(CliRunner.Run("train", "--config", P("run.json"), "--seed", "7"));
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal(2, cfg["k"]!.GetValue<int>());
        Assert.Equal(16, cfg["d_sae"]!.GetValue<int>());
        var lrs = File.ReadAllLines(P("run", "train_log.jsonl")).Select(l => JsonNode.Parse(l)!)
            .Where(n => n["lr"] is not null).Select(n => n["lr"]!.GetValue<double>()).ToList();
        Assert.True(lrs.Count >= 10);
        // Linear decay from 1e-3 towards 1e-4 over every step.
        Assert.True(lrs[0] <= 1e-3 + 1e-12 && lrs[0] > 9e-4, $"first lr {lrs[0]}");
        Assert.True(lrs[^1] < 2e-4, $"last lr {lrs[^1]}");
        Assert.True(lrs.Zip(lrs.Skip(1)).All(p => p.Second <= p.First + 1e-15));
    }

    /// <summary>The flags that set the run's size and cadence reach the run: the checkpoint records the seed, batch size and
    /// checkpoint interval given (a flag the command dropped would leave the default 42, 4096 or a tenth of the run there),
    /// and metrics.json counts the held-out rows asked for.</summary>
    [Fact]
    public void SeedBatchSizeCheckpointIntervalAndEvalRowsFlagsReachTheRun()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(400, 8, generator: new Generator(8)) });
        Ok(CliRunner.Run("train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "12",
            "--batch-size", "16", "--checkpoint-every", "4", "--seed", "7", "--eval-rows", "37", "--out", P("run")));
        using (var state = SaeSharp.Training.TrainerCheckpoint.Load(P("run", "checkpoints")))
        {
            Assert.Equal(7, state.Config.Seed);
            Assert.Equal(16, state.Config.TrainBatchSizeTokens);
            Assert.Equal(4, state.Config.CheckpointEverySteps);
            Assert.Equal(12, state.Step);
        }
        // Checkpoints at steps 4, 8 and 12; the newest two are kept (keep_checkpoints 2).
        Assert.Equal(["step_000000008", "step_000000012"], Directory.GetDirectories(P("run", "checkpoints")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(37, JsonNode.Parse(File.ReadAllText(P("run", "metrics.json")))!["n_rows"]!.GetValue<long>());
    }

    /// <summary><c>autocast</c> and <c>deterministic</c> set in a --config file hold when the flags are not given: a flag
    /// left out does not switch the file's true off. Deterministic (README): the candidate pass's auto runs as off and ReLU
    /// switches to its sparse pass at 5 % density.</summary>
    [Fact]
    public void AutocastAndDeterministicFromTheConfigFileHoldWithoutTheirFlags()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(400, 8, generator: new Generator(9)) });
        File.WriteAllText(P("run.json"), """{"autocast": true, "deterministic": true}""");
        Ok(CliRunner.Run("train", "--config", P("run.json"), "--activations", P("a.safetensors"), "--arch", "topk,relu", "--k", "2", "--dict-size", "16",
            "--steps", "6", "--batch-size", "16", "--eval-rows", "40", "--out", P("run")));
        using var state = SaeSharp.Training.TrainerCheckpoint.Load(P("run", "checkpoints"));
        Assert.Equal(["topk", "relu"], state.Saes.Select(e => e.Name));
        Assert.All(state.Saes, e => Assert.True(e.Training.Autocast, e.Name));
        Assert.Equal(SaeSharp.Kernels.CandidatePass.Off, state.Saes[0].Training.CandidatePass);
        Assert.Equal(0.05, state.Saes[1].Training.SparsePassDensity!.Value, 12);
    }

    /// <summary>--resume continues a run as it was configured: with --force it is refused (one of them), and a batch size
    /// or seed other than the checkpoint's is named, as --steps and --arch are.</summary>
    [Fact]
    public void AResumeRefusesForceAndABatchSizeOrSeedOtherThanTheRuns()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(600, 8, generator: new Generator(10)) });
        string[] Train(params string[] more) =>
            ["train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "10", "--checkpoint-every", "5",
             "--eval-rows", "50", "--out", P("run"), .. more];
        Ok(CliRunner.Run(Train("--batch-size", "32", "--seed", "3")));
        var cfg = File.ReadAllText(P("run", "cfg.json"));

        var r = CliRunner.Run(Train("--resume", "--force"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("give --resume or --force, not both", r.Err);
        Assert.True(Directory.Exists(P("run", "checkpoints")));
        r = CliRunner.Run(Train("--resume", "--batch-size", "64"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("--batch-size 64 (the checkpoint's run: 32)", r.Err);
        r = CliRunner.Run(Train("--resume", "--seed", "4"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("--seed 4 (the checkpoint's run: 3)", r.Err);
        Assert.Equal(cfg, File.ReadAllText(P("run", "cfg.json")));
        // The checkpoint's own values are accepted.
        Ok(CliRunner.Run(Train("--resume", "--batch-size", "32", "--seed", "3")));
    }

    /// <summary>An output folder that holds a previous run's cfg.json and weights but no checkpoints (deleted, or copied
    /// elsewhere) is still a previous run: a new run is refused without --force.</summary>
    [Fact]
    public void AFolderWithAPreviousSaeButNoCheckpointsIsKeptUnlessForced()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(300, 8, generator: new Generator(11)) });
        string[] Train(params string[] more) =>
            ["train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "4", "--batch-size", "16",
             "--eval-rows", "30", "--out", P("run"), .. more];
        Ok(CliRunner.Run(Train()));
        Directory.Delete(P("run", "checkpoints"), recursive: true);
        File.Delete(P("run", "train_log.jsonl"));
        var weights = File.ReadAllBytes(P("run", "sae_weights.safetensors"));
        var r = CliRunner.Run(Train("--seed", "5"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("previous training run (cfg.json, sae_weights.safetensors)", r.Err);
        Assert.Equal(weights, File.ReadAllBytes(P("run", "sae_weights.safetensors")));
        Ok(CliRunner.Run(Train("--seed", "5", "--force")));
    }

    /// <summary>--activations on the command line trains on the files even when the --config file is a SAELens runner
    /// config naming a model (model_name, hook_name, dataset_path): the flag wins, as the other flags do.</summary>
    [Fact]
    public void ActivationsFlagWinsOverTheModelOfARunnerConfig()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(300, 8, generator: new Generator(12)) });
        File.WriteAllText(P("runner.json"), """
            {"model_name": "builtin", "hook_name": "blocks.1.hook_resid_post", "dataset_path": "stories.jsonl", "context_size": 64,
             "architecture": "topk", "k": 2, "d_sae": 16}
            """);
        var r = CliRunner.Run("train", "--config", P("runner.json"), "--activations", P("a.safetensors"), "--steps", "3", "--batch-size", "16",
            "--eval-rows", "30", "--out", P("run"));
        Ok(r);
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal(8, cfg["d_in"]!.GetValue<int>());
        Assert.Equal(P("a.safetensors"), cfg["metadata"]!["dataset_path"]!.GetValue<string>());
    }

    /// <summary>An activation file has no pass limit by default (README, --epochs help: "no limit with --activations"): a run
    /// asking for more rows than the file holds reads it again and trains every step, without the "ran out" warning.</summary>
    [Fact]
    public void ActivationFilesRepeatWithoutEpochsUntilTheStepsAreDone()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(300, 8, generator: new Generator(13)) });
        // 270 training rows; 20 steps of 32 rows need 640 (with the b_dec sample, more).
        var r = CliRunner.Run("train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "20",
            "--batch-size", "32", "--eval-rows", "30", "--out", P("run"));
        Ok(r);
        Assert.DoesNotContain("ran out", r.Err);
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal(20 * 32, cfg["training_tokens"]!.GetValue<long>());
        Assert.Equal(0, cfg["epochs"]!.GetValue<int>());
        Assert.True(cfg["epochs_seen"]!.GetValue<double>() > 2.0);
    }

    /// <summary>A target L0 must be positive, and the run summary's dead_fraction is metrics.json's: in a pipe the fraction
    /// itself (SAELens's name), on a terminal a percentage.</summary>
    [Fact]
    public void TargetL0MustBePositiveAndTheSummaryPrintsMetricsDeadFraction()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(400, 8, generator: new Generator(14)) });
        foreach (var value in new[] { "0", "-3" })
        {
            var bad = CliRunner.Run("train", "--activations", P("a.safetensors"), "--arch", "relu", "--dict-size", "16", "--steps", "3",
                "--batch-size", "16", "--eval-rows", "40", "--target-l0", value, "--out", P("bad"));
            Assert.Equal(1, bad.Exit);
            Assert.Contains($"--target-l0 {value}: expected a positive number", bad.Err);
            Assert.False(Directory.Exists(P("bad")));
        }
        // TopK with k 1 and 64 latents on 40 held-out rows: at most 40 latents fire there, so at least 24 are dead.
        var r = CliRunner.Run("train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "1", "--dict-size", "64", "--steps", "2",
            "--batch-size", "16", "--eval-rows", "40", "--out", P("run"));
        Ok(r);
        double dead = JsonNode.Parse(File.ReadAllText(P("run", "metrics.json")))!["dead_fraction"]!.GetValue<double>();
        Assert.True(dead >= 24.0 / 64, $"dead_fraction {dead}");
        string expected = Console.IsOutputRedirected ? dead.ToString("R", System.Globalization.CultureInfo.InvariantCulture)
            : dead.ToString("P1", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains($"dead_fraction {expected}", r.Out);
    }

    /// <summary>sae eval --max-rows evaluates that many rows of the file (metrics.json's n_rows), all of them without it.</summary>
    [Fact]
    public void EvalMaxRowsLimitsTheRowsEvaluated()
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(300, 8, generator: new Generator(15)) });
        SafeTensors.Save(P("e.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(250, 8, generator: new Generator(16)) });
        Ok(CliRunner.Run("train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "3",
            "--batch-size", "16", "--eval-rows", "30", "--out", P("run")));
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--activations", P("e.safetensors"), "--max-rows", "100", "--json", P("some.json")));
        Assert.Equal(100, JsonNode.Parse(File.ReadAllText(P("some.json")))!["n_rows"]!.GetValue<long>());
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--activations", P("e.safetensors"), "--json", P("all.json")));
        Assert.Equal(250, JsonNode.Parse(File.ReadAllText(P("all.json")))!["n_rows"]!.GetValue<long>());
    }

    /// <summary>Ctrl-C (SIGINT) during training saves a checkpoint and exits with 130, the shell's code for a command
    /// ended by SIGINT (128 + 2), so that a script does not take the run for finished; no SAE is written, and --resume
    /// then finishes it. With <paramref name="suiteIgnoresSigInt"/> the test process ignores SIGINT while it starts sae,
    /// as a suite started by a script in the background (<c>dotnet test ... &amp;</c>) does: the Ctrl-C must still reach sae.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CtrlCSavesACheckpointAndExitsWith130(bool suiteIgnoresSigInt)
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(2000, 8, generator: new Generator(17)) });
        string[] train = ["train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "1000000",
            "--batch-size", "32", "--eval-rows", "100", "--out", P("run")];
        CliProcess Start()
        {
            using (suiteIgnoresSigInt ? Signals.Ignore(Signals.SigInt) : null) return new CliProcess(train);
        }
        using (var p = Start())
        {
            // Generous waits: the rest of the suite runs beside it.
            Assert.True(p.WaitForLine(l => l.StartsWith("step ", StringComparison.Ordinal), TimeSpan.FromMinutes(5)), string.Join("\n", p.Lines));
            p.Interrupt();
            Assert.Equal(130, p.WaitForExit(TimeSpan.FromMinutes(5)));
            Assert.Contains(p.Output, l => l.StartsWith("stopped at step ", StringComparison.Ordinal) && l.Contains("--resume"));
        }
        Assert.False(File.Exists(P("run", "cfg.json")));
        Assert.NotEmpty(Directory.GetDirectories(P("run", "checkpoints")));
    }

    /// <summary>SIGTERM (<c>kill PID</c>, Slurm, <c>docker stop</c>) during training stops it as Ctrl-C does, with the
    /// shell's code for a command ended by SIGTERM, 143 (128 + 15): the step in progress is checkpointed, no SAE is
    /// written, and --resume continues from that checkpoint to the end. With <paramref name="sigIntIgnored"/> sae starts
    /// as a script's background job does, ignoring SIGINT: SIGTERM still stops it cleanly.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SigTermSavesACheckpointAndExitsWith143(bool sigIntIgnored)
    {
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(2000, 8, generator: new Generator(18)) });
        // About 5 s of training on one free core: SIGTERM lands long before the end, and the resume finishes soon.
        string[] train = ["train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16", "--steps", "10000",
            "--batch-size", "32", "--eval-rows", "100", "--out", P("run")];
        long stoppedAt;
        using (var p = sigIntIgnored ? CliProcess.IgnoringSigInt(train) : new CliProcess(train))
        {
            Assert.True(p.WaitForLine(l => l.StartsWith("step ", StringComparison.Ordinal), TimeSpan.FromMinutes(5)), string.Join("\n", p.Lines));
            Assert.Equal(sigIntIgnored, p.IgnoresSigInt);
            p.Terminate();
            Assert.Equal(143, p.WaitForExit(TimeSpan.FromMinutes(5)));
            var stopped = Assert.Single(p.Output, l => l.StartsWith("stopped at step ", StringComparison.Ordinal));
            Assert.Contains("--resume", stopped);
            stoppedAt = long.Parse(stopped["stopped at step ".Length..stopped.IndexOf(';', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture);
        }
        Assert.InRange(stoppedAt, 100, 9999);
        Assert.False(File.Exists(P("run", "cfg.json")));
        using (var state = SaeSharp.Training.TrainerCheckpoint.Load(P("run", "checkpoints")))
            Assert.Equal(stoppedAt, state.Step);

        using var resume = new CliProcess([.. train, "--resume"]);
        Assert.True(resume.WaitForExit(TimeSpan.FromMinutes(5)) == 0, string.Join("\n", resume.Lines));
        var first = resume.Output.First(l => l.StartsWith("step ", StringComparison.Ordinal));
        long resumedAt = long.Parse(first["step ".Length..first.IndexOf('/', StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(resumedAt > stoppedAt, $"the resume began with {first}, the run stopped at step {stoppedAt}");
        Assert.True(File.Exists(P("run", "cfg.json")));
    }

    /// <summary>The first stop signal sets the exit code: SIGTERM after Ctrl-C's notice, while the step finishes and the
    /// checkpoint is written (d_sae 4096: over a second), exits with 130, SIGINT's code, and only repeats the notice. A
    /// SIGTERM that a loaded host delivers only after training has released the signals ends the process by default
    /// (143, no SIGTERM notice): that attempt proves nothing and is run again, up to three times.</summary>
    [Fact]
    public void TheFirstOfTwoStopSignalsSetsTheExitCode()
    {
        const string interrupted = "sae: interrupted; saving a checkpoint ...";
        const string terminated = "sae: terminated (SIGTERM); saving a checkpoint ...";
        SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(4000, 256, generator: new Generator(19)) });
        var attempts = new List<string>();
        for (int attempt = 0; attempt < 3; attempt++)
        {
            string[] train = ["train", "--activations", P("a.safetensors"), "--arch", "topk", "--k", "8", "--dict-size", "4096", "--steps", "1000000",
                "--batch-size", "256", "--eval-rows", "100", "--out", P($"run{attempt}")];
            using var p = new CliProcess(train);
            Assert.True(p.WaitForLine(l => l.StartsWith("step ", StringComparison.Ordinal), TimeSpan.FromMinutes(5)), string.Join("\n", p.Lines));
            p.Interrupt();
            // The handlers run on pool threads: SIGTERM goes once SIGINT's has run.
            Assert.True(p.WaitForLine(l => l == interrupted, TimeSpan.FromMinutes(5)), string.Join("\n", p.Lines));
            p.Terminate();
            int exit = p.WaitForExit(TimeSpan.FromMinutes(5));
            if (!p.Errors.Contains(terminated))
            {
                attempts.Add($"attempt {attempt}: exit {exit}, SIGTERM arrived after the handlers were released");
                continue;
            }
            Assert.Equal(130, exit);
            Assert.Contains(interrupted, p.Errors);
            Assert.Single(p.Output, l => l.StartsWith("stopped at step ", StringComparison.Ordinal));
            return;
        }
        Assert.Fail(string.Join("; ", attempts));
    }

    /// <summary><c>sae demo --synthetic</c> stops on SIGTERM as <c>sae train</c> does: the step finishes, a checkpoint is
    /// named, no SAE is written, and the exit code is 143.</summary>
    [Fact]
    public void SigTermStopsTheSyntheticDemoWith143()
    {
        using var p = new CliProcess("demo", "--synthetic", "--steps", "2000", "--out", P("demo"));
        Assert.True(p.WaitForLine(l => l.StartsWith("step ", StringComparison.Ordinal), TimeSpan.FromMinutes(5)), string.Join("\n", p.Lines));
        p.Terminate();
        Assert.Equal(143, p.WaitForExit(TimeSpan.FromMinutes(5)));
        var stopped = Assert.Single(p.Output, l => l.StartsWith("stopped at step ", StringComparison.Ordinal));
        Assert.Contains("; checkpoint ", stopped);
        Assert.Contains("does not resume", stopped);
        // The notice says what the demo does: it stops, and promises no resumable checkpoint.
        Assert.Contains("sae: terminated (SIGTERM); stopping after this step (the demo does not resume: run it again) ...", p.Errors);
        Assert.False(File.Exists(P("demo", "saes", "topk", "cfg.json")));
    }

    /// <summary>The stop notice names the signal and what the command does then: <c>sae train</c> (and the crosscoder
    /// trainer) save a checkpoint that --resume continues; the demos, which share the training loop but have no --resume,
    /// say they stop and must be run again, and their last line names no SAE.</summary>
    [Fact]
    public void TheStopNoticeSaysWhatTheCommandDoes()
    {
        Assert.Equal("sae: terminated (SIGTERM); saving a checkpoint ...", SaeSharp.Cli.StopSignals.Notice(143, SaeSharp.Cli.StopSignals.SavingACheckpoint));
        Assert.Equal("sae: interrupted; saving a checkpoint ...", SaeSharp.Cli.StopSignals.Notice(130, SaeSharp.Cli.StopSignals.SavingACheckpoint));
        string demo = SaeSharp.Cli.StopSignals.Notice(143, SaeSharp.Cli.Commands.DemoCommand.StopAction);
        Assert.StartsWith("sae: terminated (SIGTERM); ", demo);
        Assert.DoesNotContain("checkpoint", demo);
        Assert.Contains("run it again", demo);
        var noCheckpoint = new SaeSharp.Pipelines.TrainingRunResult(SaeSharp.Training.TrainingStatus.Cancelled, 12, 12 * 1024, [], null, 0, 0, 1);
        Assert.Equal("stopped at step 12; no SAE written (run the demo again)", SaeSharp.Cli.Commands.DemoCommand.Stopped(noCheckpoint));
        var withCheckpoint = noCheckpoint with { LastCheckpoint = "out/sae/checkpoints/step_12" };
        Assert.Equal("stopped at step 12; no SAE written; checkpoint out/sae/checkpoints/step_12 (the demo does not resume it: run the demo again)",
            SaeSharp.Cli.Commands.DemoCommand.Stopped(withCheckpoint));
    }

    [Fact]
    public void NanInActivationsIsAnErrorNamingTheFileAndRow()
    {
        var x = randn(64, 4);
        x[17, 2] = tensor(float.NaN);
        SafeTensors.Save(P("nan.safetensors"), new Dictionary<string, Tensor> { ["activations"] = x });
        var r = CliRunner.Run("train", "--activations", P("nan.safetensors"), "--arch", "relu", "--dict-size", "8",
            "--steps", "3", "--batch-size", "8", "--out", P("run"), "--eval-rows", "8");
        Assert.Equal(1, r.Exit);
        Assert.Contains("nan.safetensors", r.Err);
        Assert.Contains("17", r.Err);
    }
}

/// <summary>Text → activations → SAE, through a tiny GPT-2 with GPT-2's real tokenizer.</summary>
public class ModelTrainCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-lm-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    private string Model()
    {
        var dir = TinyModels.WriteGpt2(P("gpt2"), seed: 9, nLayer: 2, nEmbd: 16, nHead: 2, vocab: 50257, nPositions: 64);
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            File.Copy(SaeSharp.Tests.Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(dir, f));
        return dir;
    }

    private string Dataset()
    {
        var rng = new Random(1);
        string[] words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "from", "home", "in", "rain"];
        var lines = Enumerable.Range(0, 3000).Select(_ => string.Join(' ', Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)])) + ".");
        File.WriteAllLines(P("data.txt"), lines);
        return P("data.txt");
    }

    /// <summary>A small jsonl of {"text": ...} documents, as a local stand-in for an HF text dataset.</summary>
    private string JsonlDataset()
    {
        var rng = new Random(2);
        string[] words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "from", "home", "in", "rain"];
        var lines = Enumerable.Range(0, 800).Select(_ => new JsonObject { ["text"] = string.Join(' ', Enumerable.Range(0, 20).Select(_ => words[rng.Next(words.Length)])) + "." }.ToJsonString());
        File.WriteAllLines(P("data.jsonl"), lines);
        return P("data.jsonl");
    }

    /// <summary>A flat LanguageModelSAERunnerConfig for a tiny run, with the model and data fields as SAELens writes them
    /// (and its defaults for the fields SaeSharp accepts at one value or ignores), <paramref name="extra"/> merged in.</summary>
    private string RunnerConfig(string model, string data, string name, string extra = "")
    {
        var j = (string p) => p.Replace("\\", "/");
        File.WriteAllText(P(name), $$"""
            {"model_name": "{{j(model)}}", "model_class_name": "HookedTransformer", "hook_name": "blocks.0.hook_mlp_out",
             "hook_eval": "NOT_IN_USE", "hook_head_index": null, "dataset_path": "{{j(data)}}", "dataset_trust_remote_code": true,
             "streaming": true, "is_dataset_tokenized": false, "context_size": 32, "use_cached_activations": false,
             "cached_activations_path": null, "from_pretrained_path": null, "n_batches_in_buffer": 20, "training_tokens": 4096,
             "store_batch_size_prompts": 8, "seqpos_slice": [null], "disable_concat_sequences": false,
             "sequence_separator_token": "bos", "device": "cpu", "act_store_device": "with_model", "seed": 42, "dtype": "float32",
             "prepend_bos": true, "autocast": false, "autocast_lm": false, "compile_llm": false, "llm_compilation_mode": null,
             "compile_sae": false, "sae_compilation_mode": null, "train_batch_size_tokens": 256, "lr": 0.0003,
             "n_eval_batches": 10, "eval_batch_size_prompts": null,
             "logger": {"log_to_wandb": false, "wandb_project": "sae_lens_training", "wandb_id": null, "run_name": null,
                        "wandb_entity": null, "wandb_log_frequency": 10, "eval_every_n_wandb_logs": 100},
             "n_checkpoints": 0, "checkpoint_path": "checkpoints", "save_final_checkpoint": false,
             "output_path": "{{j(P("cfgrun"))}}", "resume_from_checkpoint": null, "verbose": true, "model_kwargs": {},
             "model_from_pretrained_kwargs": {"center_writing_weights": false}, "exclude_special_tokens": false,
             "architecture": "topk", "d_in": 16, "d_sae": 64, "k": 4, "deterministic": true, "eval_rows": 256{{extra}}}
            """);
        return P(name);
    }

    [Fact]
    public void SaeLensRunnerConfigTrainsTheSameSaeAsTheFlags()
    {
        var model = Model();
        var data = JsonlDataset();
        var r = CliRunner.Run("train", "--config", RunnerConfig(model, data, "runner.json"));
        Ok(r);
        // Logging to wandb and the other no-effect fields are named in a note, not silently dropped.
        Assert.Contains("log_to_wandb", r.Err);
        Assert.Contains("act_store_device", r.Err);
        Assert.DoesNotContain("n_batches_in_buffer", r.Err); // read: 20 × store_batch_size_prompts 8 windows, as --buffer-batches 20
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.hook_mlp_out", "--dataset", data, "--tokens", "4096",
            "--context-size", "32", "--arch", "topk", "--k", "4", "--dict-size", "64", "--batch-size", "256", "--lr", "0.0003",
            "--eval-rows", "256", "--deterministic", "--buffer-batches", "20", "--out", P("flagrun")));

        var a = JsonNode.Parse(File.ReadAllText(P("cfgrun", "cfg.json")))!.AsObject();
        var b = JsonNode.Parse(File.ReadAllText(P("flagrun", "cfg.json")))!.AsObject();
        Assert.Equal(b.ToJsonString(), a.ToJsonString());
        Assert.Equal(data, a["metadata"]!["dataset_path"]!.GetValue<string>());
        Assert.Equal("blocks.0.hook_mlp_out", a["metadata"]!["hook_name"]!.GetValue<string>());
        using (NewDisposeScope())
        {
            var wa = SafeTensors.Load(P("cfgrun", "sae_weights.safetensors"));
            var wb = SafeTensors.Load(P("flagrun", "sae_weights.safetensors"));
            Assert.Equal(wb.Keys.Order(), wa.Keys.Order());
            foreach (var (name, t) in wa) Assert.True(t.allclose(wb[name], rtol: 0, atol: 0), $"{name} differs");
        }
        Assert.Equal(File.ReadAllText(P("flagrun", "metrics.json")), File.ReadAllText(P("cfgrun", "metrics.json")));

        // A flag overrides the file's field, as for the SAE fields.
        Ok(CliRunner.Run("train", "--config", P("runner.json"), "--context-size", "16", "--out", P("ctx16")));
        Assert.Equal(16, JsonNode.Parse(File.ReadAllText(P("ctx16", "cfg.json")))!["metadata"]!["context_size"]!.GetValue<int>());
    }

    [Fact]
    public void SaeLens637MixingFractionInAConfigTrainsAsTheFlag()
    {
        // SAELens 6.37.6's activations_mixing_fraction and LoggingConfig.log_weights_to_wandb in a runner config.
        var model = Model();
        var data = JsonlDataset();
        string good = File.ReadAllText(RunnerConfig(model, data, "runner637.json", ", \"activations_mixing_fraction\": 0.25"));
        File.WriteAllText(P("runner637.json"), good.Replace("\"logger\": {", "\"logger\": {\"log_weights_to_wandb\": true, "));
        var r = CliRunner.Run("train", "--config", P("runner637.json"));
        Ok(r);
        Assert.Contains("log_weights_to_wandb", r.Err);
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.hook_mlp_out", "--dataset", data, "--tokens", "4096",
            "--context-size", "32", "--arch", "topk", "--k", "4", "--dict-size", "64", "--batch-size", "256", "--lr", "0.0003",
            "--eval-rows", "256", "--deterministic", "--buffer-batches", "20", "--activations-mixing-fraction", "0.25", "--out", P("flag637")));
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.hook_mlp_out", "--dataset", data, "--tokens", "4096",
            "--context-size", "32", "--arch", "topk", "--k", "4", "--dict-size", "64", "--batch-size", "256", "--lr", "0.0003",
            "--eval-rows", "256", "--deterministic", "--buffer-batches", "20", "--out", P("flag05")));
        using (NewDisposeScope())
        {
            var wa = SafeTensors.Load(P("cfgrun", "sae_weights.safetensors"));
            var wb = SafeTensors.Load(P("flag637", "sae_weights.safetensors"));
            var wc = SafeTensors.Load(P("flag05", "sae_weights.safetensors"));
            foreach (var (name, t) in wa) Assert.True(t.allclose(wb[name], rtol: 0, atol: 0), $"{name} differs between the config and the flag");
            Assert.False(wa["W_dec"].allclose(wc["W_dec"], rtol: 0, atol: 0), "the mixing fraction should change the batches and so the SAE");
        }
    }

    [Fact]
    public void SaeLensRunnerConfigErrorsNameTheField()
    {
        var model = Model();
        var data = JsonlDataset();
        string good = File.ReadAllText(RunnerConfig(model, data, "good.json"));
        (int Exit, string Out, string Err) Train(string name, string from, string to)
        {
            Assert.Contains(from, good);
            File.WriteAllText(P(name), good.Replace(from, to));
            return CliRunner.Run("train", "--config", P(name), "--steps", "2", "--force");
        }

        // d_in that is not the model's width at the hook: the error names both.
        var r = Train("din.json", "\"d_in\": 16", "\"d_in\": 768");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("d_in 768", r.Err);
        Assert.Contains("blocks.0.hook_mlp_out", r.Err);
        Assert.Contains("width is 16", r.Err);

        // hook_head_index picks a head of an attention hook: on hook_mlp_out it is an error naming the hook.
        r = Train("head.json", "\"hook_head_index\": null", "\"hook_head_index\": 3");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("hook_head_index 3: 'blocks.0.hook_mlp_out' has no head dimension", r.Err);
        // Fields that would change the result and are not implemented are refused, saying what to do instead.
        r = Train("dtype.json", "\"dtype\": \"float32\"", "\"dtype\": \"bfloat16\"");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("'dtype' \"bfloat16\" is not supported", r.Err);
        Assert.Contains("autocast", r.Err);
        // exclude_special_tokens as a list: non-negative ids inside the tokenizer's vocabulary.
        r = Train("special.json", "\"exclude_special_tokens\": false", "\"exclude_special_tokens\": [0, -1]");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("exclude_special_tokens [0,-1]: expected true, false or a list of non-negative token ids", r.Err);
        r = Train("vocab.json", "\"exclude_special_tokens\": false", "\"exclude_special_tokens\": [0, 99999999]");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("exclude_special_tokens (--exclude-token-ids or the --config file): token id 99999999 is beyond the tokenizer's vocabulary", r.Err);

        // A model name that cannot be resolved says what to give.
        r = Train("name.json", $"\"model_name\": \"{model.Replace("\\", "/")}\"", "\"model_name\": \"no such model\"");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("model_name 'no such model'", r.Err);
        Assert.Contains("local model folder", r.Err);

        // The unchanged file trains.
        Ok(CliRunner.Run("train", "--config", P("good.json"), "--steps", "2"));
    }

    /// <summary>The model and data flags over a runner config's fields (ModelDataOptionsCli.Read): a field holds when its
    /// flag is not given (context_size, store_batch_size_prompts, prepend_bos, model_from_pretrained_kwargs), a flag given
    /// wins (--no-prepend-bos over prepend_bos true, --fold-ln beside the file's center_writing_weights).</summary>
    [Fact]
    public void ModelAndDataFlagsOverARunnerConfigsFields()
    {
        var data = Dataset();
        var config = SaeSharp.Training.TrainingSettings.FromJson("""
            {"context_size": 48, "store_batch_size_prompts": 3, "prepend_bos": true, "exclude_special_tokens": true,
             "model_from_pretrained_kwargs": {"center_writing_weights": true}}
            """, "runner.json");
        SaeSharp.Pipelines.ModelDataOptions Read(params string[] args)
        {
            var cli = new SaeSharp.Cli.Commands.ModelDataOptionsCli();
            var command = new System.CommandLine.Command("t");
            cli.AddTo(command);
            return cli.Read(command.Parse(["--model", "builtin", "--dataset", data, "--hook", "blocks.0.hook_resid_post", .. args]), config);
        }
        var fields = Read();
        Assert.Equal((48, 3, true, true), (fields.ContextSize, fields.BatchSizePrompts, fields.PrependBos, fields.ExcludeSpecialTokens));
        Assert.Equal((false, true), (fields.Processing.FoldLn, fields.Processing.CenterWritingWeights));
        var flags = Read("--no-prepend-bos", "--fold-ln", "--context-size", "16");
        Assert.Equal((16, 3, false), (flags.ContextSize, flags.BatchSizePrompts, flags.PrependBos));
        Assert.Equal((true, true), (flags.Processing.FoldLn, flags.Processing.CenterWritingWeights));
    }

    [Fact]
    public void TrainOnModelActivationsRecordsProvenanceAndEvaluatesInTheModel()
    {
        var model = Model();
        var data = Dataset();
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.hook_mlp_out", "--dataset", data, "--tokens", "4096",
            "--context-size", "32", "--arch", "topk", "--k", "4", "--dict-size", "64", "--batch-size", "256", "--eval-rows", "256", "--out", P("run")));
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal("blocks.0.hook_mlp_out", cfg["metadata"]!["hook_name"]!.GetValue<string>());
        Assert.Equal(32, cfg["metadata"]!["context_size"]!.GetValue<int>());
        Assert.Equal(data, cfg["metadata"]!["dataset_path"]!.GetValue<string>());
        Assert.True(cfg["metadata"]!["prepend_bos"]!.GetValue<bool>());
        Assert.Equal(16, cfg["d_in"]!.GetValue<int>());
        Assert.NotEmpty(File.ReadAllLines(P("run", "train_log.jsonl")));

        Ok(CliRunner.Run("eval", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "256", "--context-size", "32", "--json", P("e.json")));
        var e = JsonNode.Parse(File.ReadAllText(P("e.json")))!;
        var perf = e["model_performance_preservation"]!;
        double clean = perf["ce_loss_without_sae"]!.GetValue<double>();
        // With the SAE's error term added back the model is unchanged.
        Assert.Equal(clean, perf["ce_loss_with_error_term"]!.GetValue<double>(), 4);
        Assert.True(perf["ce_loss_score"] is not null);
        Assert.True(e["sparsity"]!["l0"]!.GetValue<double>() <= 4.0 + 1e-9);
    }

    /// <summary>SAEs at hooks holding a copy of the residual stream, trained, evaluated and spliced: TransformerLens's
    /// <c>hook_mlp_in</c> (the MLP's copy: resid_pre in the built-in model, whose attention and MLP run in parallel; spliced
    /// in, it changes the MLP's input only) and one head's <c>hook_q_input</c> (<c>--hook-head-index 1</c>, d_in = d_model;
    /// spliced in, the heads project their own inputs). Each reads resid_pre, and with its error term the model is the clean
    /// one (up to rounding for the query input).</summary>
    [Theory]
    [InlineData("blocks.1.hook_mlp_in", null, 5)]
    [InlineData("blocks.1.hook_q_input", "1", 4)]
    public void TrainEvalAndSpliceAtACopyOfResidPre(string hook, string? head, int ceDigits)
    {
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "300", "--seed", "4"));
        string[] headArgs = head is null ? [] : ["--hook-head-index", head];
        Ok(CliRunner.Run(["train", "--model", "builtin", "--hook", hook, .. headArgs, "--dataset", P("c.jsonl"), "--tokens", "4096",
            "--context-size", "64", "--arch", "topk", "--k", "8", "--dict-size", "128", "--batch-size", "256", "--eval-rows", "256", "--out", P("sae")]));
        var cfg = JsonNode.Parse(File.ReadAllText(P("sae", "cfg.json")))!;
        Assert.Equal(hook, cfg["metadata"]!["hook_name"]!.GetValue<string>());
        Ok(CliRunner.Run("eval", "--sae", P("sae"), "--model", "builtin", "--dataset", P("c.jsonl"), "--tokens", "256", "--json", P("e.json")));
        var e = JsonNode.Parse(File.ReadAllText(P("e.json")))!;
        var perf = e["model_performance_preservation"]!;
        Assert.Equal(perf["ce_loss_without_sae"]!.GetValue<double>(), perf["ce_loss_with_error_term"]!.GetValue<double>(), ceDigits);
        Assert.True(e["model_behavior_preservation"]!["kl_div_with_error_term"]!.GetValue<double>() < 1e-6);
        Assert.True(e["reconstruction_quality"]!["fvu"]!.GetValue<double>() < 1);

        SafeTensors.Save(P("tokens.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = tensor(new long[] { 1, 5, 9, 2, 7 }).unsqueeze(0) });
        string input = hook + ".hook_sae_input";
        Ok(CliRunner.Run("model", "run", "--model", "builtin", "--input", P("tokens.safetensors"), "--out", P("out.safetensors"), "--sae", P("sae"),
            "--hooks", input + ",blocks.1.hook_resid_pre"));
        using (NewDisposeScope())
        {
            var o = SafeTensors.Load(P("out.safetensors"));
            Assert.True(o[input].equal(o["blocks.1.hook_resid_pre"]).all().item<bool>(), "the SAE reads resid_pre");
            Assert.Equal(o["blocks.1.hook_resid_pre"].shape[2], cfg["d_in"]!.GetValue<int>());   // d_model
        }
    }

    [Fact]
    public void TrainFromAModelReportsCeLossRecoveredAndWarnsWhenItIsLow()
    {
        // Two steps leave an SAE near its initialisation: spliced into the built-in model at the residual stream it
        // recovers far less than half the CE loss (a constant b_dec recovers only what mean ablation does, ~6 % there).
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "300", "--seed", "4"));
        var r = CliRunner.Run("train", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", P("c.jsonl"), "--tokens", "2048",
            "--context-size", "64", "--arch", "relu", "--dict-size", "64", "--batch-size", "256", "--steps", "2", "--eval-rows", "256", "--out", P("bad"));
        Ok(r);
        var m = JsonNode.Parse(File.ReadAllText(P("bad", "metrics.json")))!;
        double score = m["ce_loss_score"]!.GetValue<double>();
        Assert.True(score < 0.5, $"ce_loss_score {score}");
        // The summary line names it as metrics.json does; in a pipe (the test host's stdout) the fraction itself, exactly.
        Assert.Contains(Console.IsOutputRedirected ? $"ce_loss_score {score.ToString("R", System.Globalization.CultureInfo.InvariantCulture)} (kl" : "ce_loss_score ", r.Out);
        Assert.Contains("CE loss recovered", r.Err);
        Assert.Contains("--steps", r.Err[r.Err.IndexOf("CE loss recovered", StringComparison.Ordinal)..]);

        // The figures are on the first ⌈256 / 64⌉ = 4 windows, which training skipped: the same figure as `sae eval --model`
        // over those tokens.
        Assert.True(m["eval_held_out"]!.GetValue<bool>());
        Assert.Equal((4, 256L), (m["eval_contexts"]!.GetValue<int>(), m["eval_tokens"]!.GetValue<long>()));
        Assert.Contains("metrics on 256 held-out tokens: the first 4 context windows of the dataset, which training skipped", r.Out);
        Ok(CliRunner.Run("eval", "--sae", P("bad"), "--model", "builtin", "--dataset", P("c.jsonl"), "--tokens", "256", "--json", P("e.json")));
        var e = JsonNode.Parse(File.ReadAllText(P("e.json")))!;
        Assert.Equal(e["model_performance_preservation"]!["ce_loss_score"]!.GetValue<double>(), score, 9);
        Assert.Equal(e["model_performance_preservation"]!["ce_loss_without_sae"]!.GetValue<double>(), m["ce_loss_without_sae"]!.GetValue<double>(), 9);
    }

    /// <summary><c>sae train --mode in_to_out --arch skip_transcoder</c> (and jumprelu_skip_transcoder, with
    /// <c>--target-l0</c>) on the built-in model's MLP: cfg.json is SAELens's (its architecture name, d_out, no b_dec
    /// subtraction, hook_name_out), the weights hold W_skip, the SAELens loader's SAE computes f·W_dec + b_dec + x·W_skipᵀ
    /// from those weights, the end-of-training evaluation splices it at the MLP's output (ce_loss_score), and a resume from
    /// the step-10 checkpoint ends with the same weights bit for bit. On a plain SAE run the recipe is refused.</summary>
    [Theory]
    [InlineData("skip_transcoder")]
    [InlineData("jumprelu_skip_transcoder")]
    public void SkipTranscoderRecipesTrainOnAnMlpEndToEnd(string recipe)
    {
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "300", "--seed", "4"));
        string[] Train(string output, params string[] more) =>
            ["train", "--model", "builtin", "--dataset", P("c.jsonl"), "--hook", "blocks.1.mlp", "--mode", "in_to_out", "--arch", recipe,
             "--context-size", "64", "--dict-size", "64", "--batch-size", "128", "--steps", "20", "--checkpoint-every", "10", "--eval-rows", "256",
             "--deterministic", "--out", output, .. recipe.StartsWith("jumprelu", StringComparison.Ordinal) ? ["--target-l0", "8"] : Array.Empty<string>(), .. more];
        var r = CliRunner.Run(Train(P("run")));
        Ok(r);
        Assert.Contains("ce_loss_score", r.Out);
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        int dIn = cfg["d_in"]!.GetValue<int>();
        Assert.Equal((recipe, dIn, false), (cfg["architecture"]!.GetValue<string>(), cfg["d_out"]!.GetValue<int>(), cfg["apply_b_dec_to_input"]!.GetValue<bool>()));
        Assert.Equal("blocks.1.hook_mlp_out", (cfg["hook_name_out"] ?? cfg["metadata"]!["hook_name_out"])!.GetValue<string>());
        if (recipe == "jumprelu_skip_transcoder")
        {
            Assert.Equal(8, cfg["target_l0"]!.GetValue<double>());
            Assert.NotNull(cfg["l0_coefficient"]);
        }
        else Assert.NotNull(cfg["l1_coefficient"]);
        var metrics = JsonNode.Parse(File.ReadAllText(P("run", "metrics.json")))!;
        Assert.True(double.IsFinite(metrics["ce_loss_score"]!.GetValue<double>()));

        var w = SafeTensors.Load(P("run", "sae_weights.safetensors"));
        Assert.Equal(new long[] { dIn, dIn }, w["W_skip"].shape);
        Assert.True(w["W_skip"].abs().max().item<float>() > 0, "W_skip did not train");
        using (var sae = SaeLensFormat.Load(P("run")))
        using (var scope = NewDisposeScope())
        {
            Assert.Equal(recipe, sae.Cfg.Architecture);
            var x = randn(32, dIn, generator: new TorchSharp.torch.Generator(7)) * 3;
            var pre = x.matmul(w["W_enc"]) + w["b_enc"];
            var f = recipe == "skip_transcoder" ? pre.relu() : pre.relu() * pre.gt(w["threshold"]);
            var expected = f.matmul(w["W_dec"]) + w["b_dec"] + x.matmul(w["W_skip"].t());
            var (y, _) = sae.Run(x);
            Assert.True(y.allclose(expected, rtol: 1e-4, atol: 1e-4), $"differ by {(y - expected).abs().max().item<float>()}");
        }

        // A resume from the step-10 checkpoint continues identically.
        Directory.CreateDirectory(P("b", "checkpoints"));
        var ten = Directory.GetDirectories(P("run", "checkpoints"), "step_*").Single(d => d.EndsWith("step_000000010", StringComparison.Ordinal));
        CopyFolder(ten, P("b", "checkpoints", Path.GetFileName(ten)));
        var resumedRun = CliRunner.Run(Train(P("b"), "--resume"));
        Ok(resumedRun);
        var firstStep = resumedRun.Out.Split('\n').First(l => l.StartsWith("step ", StringComparison.Ordinal));
        Assert.StartsWith("step 11/20", firstStep);
        var resumed = SafeTensors.Load(P("b", "sae_weights.safetensors"));
        foreach (var (k, t) in w) Assert.True(t.shape.SequenceEqual(resumed[k].shape) && t.eq(resumed[k]).all().item<bool>(), $"{k} differs after the resume");

        // A plain SAE run (no --mode in_to_out) is refused before anything is written.
        var refused = CliRunner.Run("train", "--model", "builtin", "--dataset", P("c.jsonl"), "--hook", "blocks.1.hook_resid_post", "--arch", recipe,
            "--dict-size", "64", "--batch-size", "128", "--steps", "2", "--out", P("plain"));
        Assert.Equal(1, refused.Exit);
        Assert.Contains($"--arch {recipe} trains a transcoder", refused.Err);
        Assert.Contains("--mode in_to_out", refused.Err);
        Assert.False(Directory.Exists(P("plain")));
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.GetDirectories(from)) CopyFolder(d, Path.Combine(to, Path.GetFileName(d)));
    }

    [Fact]
    public void CacheThenTrainFromTheCacheFolder()
    {
        var model = Model();
        var data = Dataset();
        var cached = CliRunner.Run("cache", "--model", model, "--hook", "blocks.1.hook_resid_pre", "--dataset", data, "--tokens", "2048",
            "--context-size", "32", "--out", P("cache"), "--contexts-per-shard", "16");
        Ok(cached);
        // In a pipe, one line per shard: its own rows (16 windows of 32) and the running total, not the total alone.
        Assert.Contains("shard 1 (shard_00000.safetensors): 512 rows, 512 in all", cached.Out);
        Assert.Contains("shard 4 (shard_00003.safetensors): 512 rows, 2048 in all", cached.Out);
        var manifest = JsonNode.Parse(File.ReadAllText(P("cache", "manifest.json")))!;
        Assert.Equal("blocks.1.hook_resid_pre", manifest["hook"]!.GetValue<string>());
        Assert.True(manifest["total_rows"]!.GetValue<long>() >= 2048);
        // --contexts-per-shard 16: the 64 windows of 32 tokens in shards of 16.
        Assert.Equal(64, manifest["total_contexts"]!.GetValue<long>());
        Assert.Equal(4, Directory.GetFiles(P("cache"), "shard_*.safetensors").Length);
        Ok(CliRunner.Run("train", "--activations", P("cache"), "--arch", "relu", "--dict-size", "32", "--steps", "10",
            "--batch-size", "128", "--eval-rows", "256", "--out", P("run")));
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal("blocks.1.hook_resid_pre", cfg["metadata"]!["hook_name"]!.GetValue<string>());
        Assert.Equal(32, cfg["metadata"]!["context_size"]!.GetValue<int>());
    }

    [Fact]
    public void Short_dataset_stops_naming_epochs_then_loops_with_epochs_and_records_them()
    {
        var model = Model();
        // About 1,000 tokens: 32 windows of 32, fewer than the 40 steps × 64 rows asked for (plus the 256-row b_dec
        // sample; no normalisation estimate, which would read 16,384 rows first).
        File.WriteAllLines(P("short.txt"), Enumerable.Range(0, 80).Select(i => $"the cat {i} sat on a mat and the dog ran."));
        File.WriteAllText(P("cfg.json"), """{"normalize_activations": "none"}""");
        string[] common = ["train", "--model", model, "--hook", "blocks.0.hook_mlp_out", "--dataset", P("short.txt"), "--context-size", "32",
            "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "64", "--steps", "40", "--eval-rows", "64", "--checkpoint-every", "1000", "--config", P("cfg.json")];

        var once = CliRunner.Run([.. common, "--out", P("once")]);
        Ok(once);
        Assert.Contains("ran out", once.Err);
        Assert.Contains("--epochs", once.Err);
        var cfg1 = JsonNode.Parse(File.ReadAllText(P("once", "cfg.json")))!;
        long seen1 = cfg1["training_tokens"]!.GetValue<long>();
        Assert.True(seen1 is > 0 and < 40 * 64, $"{seen1} tokens");
        // Every harvested row is used: the b_dec sample plus the training rows are whole windows of 32.
        long perPass = seen1 + 256;
        Assert.Equal(0, perPass % 32);
        Assert.Equal(1, cfg1["epochs"]!.GetValue<int>());
        Assert.Equal(1.0, cfg1["epochs_seen"]!.GetValue<double>());
        Assert.Contains($"trained on {seen1:N0} tokens (1.00 epochs of the data)", once.Out);

        var loop = CliRunner.Run([.. common, "--epochs", "0", "--out", P("loop")]);
        Ok(loop);
        Assert.DoesNotContain("ran out", loop.Err);
        var cfg = JsonNode.Parse(File.ReadAllText(P("loop", "cfg.json")))!;
        Assert.Equal(40 * 64, cfg["training_tokens"]!.GetValue<long>());
        Assert.Equal(0, cfg["epochs"]!.GetValue<int>());
        double epochs = (40 * 64 + 256) / (double)perPass; // the sample and the training rows over the rows of one pass
        Assert.Equal(Math.Round(epochs, 4), cfg["epochs_seen"]!.GetValue<double>(), 6);
        Assert.True(epochs > 2);
        Assert.Contains($"trained on 2560 tokens ({epochs:F2} epochs of the data)", loop.Out);   // plain digits in a pipe (Cli.Integer)
    }

    [Fact]
    public void Long_commands_print_no_progress_into_a_pipe()
    {
        var model = Model();
        var data = Dataset();
        var cfg = new SaeSharp.Saes.SaeConfig { DIn = 16, DSae = 32, Architecture = SaeSharp.Saes.SaeArchitectures.TopK, K = 4 };
        cfg.Metadata.HookName = "blocks.0.hook_mlp_out";
        cfg.Metadata.ContextSize = 32;
        using (var sae = SaeSharp.Saes.SaeFactory.Create(cfg))
        {
            sae.InitializeWeights(new Generator(3));
            SaeLensFormat.Save(sae, P("sae"));
        }
        foreach (var args in new[]
                 {
                     new[] { "eval", "--sae", P("sae"), "--model", model, "--dataset", data, "--tokens", "512", "--context-size", "32" },
                     new[] { "cache", "--model", model, "--hook", "blocks.0.hook_mlp_out", "--dataset", data, "--tokens", "512", "--context-size", "32", "--out", P("cache") },
                     new[] { "attribute", "--model", model, "--sae", P("sae"), "--prompt", "the cat sat on the mat", "--metric", "loss", "--ig-steps", "2" },
                     // Training logs one plain line per report in a pipe ("step ... rows/s ETA ..."); the in-model evaluation
                     // after it must print no progress of its own (its bar counts tokens/s).
                     new[] { "train", "--model", model, "--hook", "blocks.0.hook_mlp_out", "--dataset", data, "--tokens", "1024", "--context-size", "32",
                             "--arch", "topk", "--k", "4", "--dict-size", "32", "--batch-size", "256", "--eval-rows", "256", "--out", P("run") },
                 })
        {
            using var p = new CliProcess(args);
            Assert.Equal(0, p.WaitForExit(TimeSpan.FromMinutes(3)));
            string all = string.Join("\n", p.Lines);
            Assert.DoesNotContain('\u001b', all);        // no ANSI escapes
            Assert.DoesNotContain("tokens/s", all);      // no progress lines
            if (args[0] != "train") Assert.DoesNotContain("ETA", all);
            Assert.NotEmpty(p.Lines);                    // the results themselves are printed
            if (args[0] == "attribute") Assert.Contains("top attributions", all);
            if (args[0] == "train") Assert.Contains("ce_loss_score", all);
        }
    }
}
