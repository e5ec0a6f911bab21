using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>--revision</c> of the model commands: a hub cache (<c>refs/REVISION</c> → <c>snapshots/COMMIT</c>, as
/// <c>huggingface-cli download --revision</c> leaves it) holding two checkpoints of one repo with different weights.</summary>
public class ModelRevisionTests : ModelTestBase
{
    private const string Repo = "tiny-org/tiny-gpt2";
    private const string MainCommit = "1111111111111111111111111111111111111111", StepCommit = "2222222222222222222222222222222222222222";

    /// <summary>The snapshot of <paramref name="commit"/>, named by <c>refs/<paramref name="revision"/></c>, holding a tiny GPT-2 of <paramref name="seed"/>.</summary>
    private string Snapshot(string cache, string revision, string commit, int seed)
    {
        string storage = Path.Combine(cache, "models--" + Repo.Replace("/", "--", StringComparison.Ordinal));
        Directory.CreateDirectory(Path.Combine(storage, "refs"));
        File.WriteAllText(Path.Combine(storage, "refs", revision), commit);
        string snapshot = Path.Combine(storage, "snapshots", commit);
        TinyModels.WriteGpt2(snapshot, seed: seed, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 64);
        return snapshot;
    }

    [Fact]
    public void Revision_loads_that_checkpoint_and_an_unknown_one_is_named()
    {
        string cache = Sub("cache");
        string main = Snapshot(cache, "main", MainCommit, seed: 1);
        string step = Snapshot(cache, "step1000", StepCommit, seed: 2);
        using var tokens = tensor(new long[] { 3, 7, 11, 5 }, [1, 4]);
        string input = Sub("in.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tokens });
        var env = new Dictionary<string, string> { ["HF_HUB_CACHE"] = cache, ["HF_HUB_OFFLINE"] = "1" };
        using var mainModel = ModelLoader.FromPretrained(main);
        using var stepModel = ModelLoader.FromPretrained(step);
        using var mainLogits = mainModel.Forward(tokens);
        using var stepLogits = stepModel.Forward(tokens);
        Assert.False(mainLogits.allclose(stepLogits, rtol: 1e-3, atol: 1e-3), "the two checkpoints should differ");
        foreach (var (revision, expected) in new[] { ((string?)null, mainLogits), ("step1000", stepLogits), (StepCommit, stepLogits) })
        {
            string outPath = Sub($"out-{revision ?? "main"}.safetensors");
            string[] args = ["model", "run", "--model", Repo, "--input", input, "--out", outPath, .. revision is null ? Array.Empty<string>() : ["--revision", revision]];
            var (exit, _, err) = CliRunner.RunWithEnvironment(env, args);
            Assert.True(exit == 0, err);
            Assert.True(SafeTensors.Load(outPath)["logits"].allclose(expected, rtol: 1e-5, atol: 1e-5), $"revision {revision ?? "main"}");
        }
        var (bad, _, badErr) = CliRunner.RunWithEnvironment(env, "model", "run", "--model", Repo, "--input", input, "--out", Sub("bad.safetensors"), "--revision", "step2000");
        Assert.NotEqual(0, bad);
        Assert.Contains("revision step2000", badErr);
        Assert.False(File.Exists(Sub("bad.safetensors")));
        (bad, _, badErr) = CliRunner.Run("model", "info", "--model", "builtin");
        Assert.Equal(0, bad);
        (bad, _, badErr) = CliRunner.Run("model", "logit-attrs", "--model", "builtin", "--prompt", "a b", "--answer", "a,b", "--revision", "step1000");
        Assert.NotEqual(0, bad);
        Assert.Contains("revision 'step1000': 'builtin' is the builtin model", badErr);
        var (infoExit, _, infoErr) = CliRunner.RunWithEnvironment(env, "model", "info", "--model", Repo, "--revision", "step1000");
        Assert.True(infoExit == 0, infoErr);
        (bad, _, badErr) = CliRunner.RunWithEnvironment(env, "model", "info", "--model", Repo, "--revision", "step2000");
        Assert.NotEqual(0, bad);
        Assert.Contains("revision step2000", badErr);
        foreach (var args in new[] { new[] { "generate", "--prompt", "Tom" }, ["test-prompt", "--prompt", "Tom saw", "--answer", "Anna"], ["tokenize", "--prompt", "Tom"] })
        {
            (bad, _, badErr) = CliRunner.Run(["model", args[0], "--model", "builtin", "--revision", "step1000", .. args[1..]]);
            Assert.NotEqual(0, bad);
            Assert.Contains("revision 'step1000': 'builtin' is the builtin model", badErr);
        }
        foreach (string command in new[] { "patch", "path-patch" })
        {
            (bad, _, badErr) = CliRunner.Run("model", command, "--model", "builtin", "--clean", "Tom saw Anna", "--corrupted", "Anna saw Tom",
                "--metric", "logit-diff:Tom,Anna", "--revision", "step1000");
            Assert.NotEqual(0, bad);
            Assert.Contains("revision 'step1000': 'builtin' is the builtin model", badErr);
        }
        // induction-loss of both revisions on the same tokens: one row each, as evals.induction_loss of each checkpoint.
        var (exit2, output, err2) = CliRunner.RunWithEnvironment(env, "model", "induction-loss", "--model", Repo, "--revision", "main", "--revision", "step1000",
            "--subseq-len", "5", "--batch", "2", "--no-prepend-bos", "--seed", "3");
        Assert.True(exit2 == 0, err2);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Contains(lines, l => l.StartsWith("induction loss of tiny-org/tiny-gpt2: 2 × 5 random ids in [0, 64) repeated twice (seed 3)", StringComparison.Ordinal));
        foreach (var (revision, m) in new[] { ("main", mainModel), ("step1000", stepModel) })
        {
            double expected = SaeSharp.Analysis.InductionLoss.Run(m, 2, 5, prependBos: false, seed: 3);
            Assert.Contains($"{revision}\t{expected.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)}", lines);
        }
    }
}
