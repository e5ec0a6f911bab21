using System.Text.Json.Nodes;
using SaeSharp.Corpus;
using SaeSharp.LanguageModels;

namespace SaeSharp.Tests.LanguageModels;

/// <summary><c>sae lm train</c> stopped (the cancellation its Ctrl-C/SIGTERM handler gives) and resumed reaches the
/// weights of an uninterrupted run; a resume that cannot continue that run is refused before anything is written.</summary>
public class LmResumeTests : TempDirTestBase
{
    /// <summary>Cancels at the progress report of <paramref name="step"/> (reports come every 10 steps).</summary>
    private sealed class CancelAt(long step, CancellationTokenSource cancel) : IProgress<LmProgress>
    {
        public void Report(LmProgress value)
        {
            if (value.Step == step) cancel.Cancel();
        }
    }

    private string Corpus()
    {
        var corpus = Path.Combine(_dir, "c.jsonl");
        if (!File.Exists(corpus)) LabelledCorpus.Write(corpus, 9, 12);
        return corpus;
    }

    // A context of 128 holds every story of this corpus whole (the validation stories must not be cut).
    private LmTrainingOptions Tiny(string name) => new()
    {
        CorpusPath = Corpus(), OutDir = Path.Combine(_dir, name), DModel = 16, NLayers = 1, NHeads = 2, DMlp = 32, ContextSize = 128,
        BatchSize = 3, Steps = 20, WarmUpSteps = 2, CheckpointEverySteps = 0, ValidationDocuments = 3, Seed = 4,
    };

    private LmTrainingResult StopAt10(LmTrainingOptions o)
    {
        using var cts = new CancellationTokenSource();
        return LmTrainer.Train(o, new CancelAt(10, cts), cts.Token);
    }

    private static Dictionary<string, byte[]> Files(string dir) =>
        Directory.GetFiles(dir, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllBytes);

    [Fact]
    public void Stopped_at_step_10_and_resumed_gives_the_weights_of_an_uninterrupted_run()
    {
        var whole = LmTrainer.Train(Tiny("whole"));

        var stopped = StopAt10(Tiny("split"));
        Assert.Equal(10, stopped.Steps);
        var checkpoint = Assert.IsType<string>(stopped.StoppedCheckpoint);
        Assert.Equal("step_000000010", Path.GetFileName(checkpoint));
        Assert.True(File.Exists(Path.Combine(checkpoint, "trainer_state.json")));
        Assert.True(File.Exists(Path.Combine(_dir, "split", "model.safetensors")), "the weights of the stopped run");
        Assert.False(File.Exists(Path.Combine(_dir, "split", "training.json")), "a stopped run has no report");
        // The stopped run's weights are not the finished run's (it really stopped early).
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(_dir, "whole", "model.safetensors")), File.ReadAllBytes(Path.Combine(_dir, "split", "model.safetensors")));

        var resumed = LmTrainer.Train(Tiny("split") with { Resume = true });
        Assert.Null(resumed.StoppedCheckpoint);
        Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "whole", "model.safetensors")), File.ReadAllBytes(Path.Combine(_dir, "split", "model.safetensors")));
        Assert.Equal((whole.Steps, whole.TrainTokens, whole.FirstLoss, whole.LastLoss, whole.ValidationLoss),
            (resumed.Steps, resumed.TrainTokens, resumed.FirstLoss, resumed.LastLoss, resumed.ValidationLoss));
        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "whole", "training.json")))!.AsObject();
        var b = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "split", "training.json")))!.AsObject();
        a.Remove("seconds");
        b.Remove("seconds");
        Assert.True(JsonNode.DeepEquals(a, b), $"{a.ToJsonString()}\n{b.ToJsonString()}");
        // The run ended: its checkpoints are gone, the folder holds the model only.
        Assert.False(Directory.Exists(Path.Combine(_dir, "split", "checkpoints")));
    }

    /// <summary>Crashes (throws) at the progress report of <paramref name="step"/>, as a killed process stops.</summary>
    private sealed class CrashAt(long step) : IProgress<LmProgress>
    {
        public void Report(LmProgress value)
        {
            if (value.Step == step) throw new InvalidOperationException("crash");
        }
    }

    /// <summary>The checkpoint written by --checkpoint-every resumes too (a run killed without the graceful stop).</summary>
    [Fact]
    public void A_periodic_checkpoint_of_a_crashed_run_resumes_to_the_same_weights()
    {
        LmTrainer.Train(Tiny("whole"));
        var o = Tiny("crashed") with { CheckpointEverySteps = 7 };
        Assert.Throws<InvalidOperationException>(() => LmTrainer.Train(o, new CrashAt(10)));
        Assert.Equal(["step_000000007"], Directory.GetDirectories(Path.Combine(o.OutDir, "checkpoints")).Select(Path.GetFileName));
        LmTrainer.Train(o with { Resume = true });
        Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "whole", "model.safetensors")), File.ReadAllBytes(Path.Combine(o.OutDir, "model.safetensors")));
    }

    [Fact]
    public void A_bad_resume_is_refused_naming_the_problem_and_writes_nothing()
    {
        var fresh = Tiny("fresh") with { Resume = true };
        var e = Assert.Throws<SaeSharpException>(() => LmTrainer.Train(fresh));
        Assert.Contains($"--resume: no checkpoints in {Path.Combine(fresh.OutDir, "checkpoints")}", e.Message);
        Assert.False(Directory.Exists(fresh.OutDir));

        var o = Tiny("run");
        StopAt10(o);
        var before = Files(o.OutDir);
        void Unchanged() => Assert.All(before, kv => Assert.Equal(kv.Value, File.ReadAllBytes(kv.Key)));

        e = Assert.Throws<SaeSharpException>(() => LmTrainer.Train(o with { Resume = true, Lr = 1e-2, DModel = 32 }));
        Assert.Contains("--lr 0.01 (the checkpoint's run: 0.003)", e.Message);
        Assert.Contains("--d-model 32 (the checkpoint's run: 16)", e.Message);
        Unchanged();
        var other = Path.Combine(_dir, "other.jsonl");
        LabelledCorpus.Write(other, 10, 12);
        e = Assert.Throws<SaeSharpException>(() => LmTrainer.Train(o with { Resume = true, CorpusPath = other }));
        Assert.Contains("the training stories", e.Message);
        Unchanged();
        Assert.Contains("not both", Assert.Throws<SaeSharpException>(() => LmTrainer.Train(o with { Resume = true, Overwrite = true })).Message);
        // Neither --resume nor --force: the folder is refused, the message offers the resume.
        Assert.Contains("continue its stopped run with --resume", Assert.Throws<SaeSharpException>(() => LmTrainer.Train(o)).Message);
        Unchanged();

        // A truncated tensor file is named.
        var tensors = Directory.GetFiles(Path.Combine(o.OutDir, "checkpoints"), "lm.safetensors", SearchOption.AllDirectories).Single();
        var bytes = File.ReadAllBytes(tensors);
        File.WriteAllBytes(tensors, bytes[..(bytes.Length / 2)]);
        before = Files(o.OutDir);
        Assert.Contains(tensors, Assert.Throws<SaeSharpException>(() => LmTrainer.Train(o with { Resume = true })).Message);
        Unchanged();
    }

    /// <summary>Validation stories longer than a window would be cut, so the entropy floor would not bound their loss:
    /// refused as <c>lm eval</c> refuses them, naming the smallest context that holds them.</summary>
    [Fact]
    public void Training_refuses_validation_stories_longer_than_the_context()
    {
        var o = Tiny("cut") with { ContextSize = 16 };
        var e = Assert.Throws<SaeSharpException>(() => LmTrainer.Train(o));
        Assert.Contains("--context-size 16:", e.Message);
        Assert.Matches(@"give --context-size \d+ or more", e.Message);
        Assert.False(Directory.Exists(o.OutDir));
    }
}
