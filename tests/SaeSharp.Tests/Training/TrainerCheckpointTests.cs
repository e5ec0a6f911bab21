using System.Text.Json.Nodes;
using SaeSharp.Saes;
using SaeSharp.Training;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>The checkpoint file format: SAELens names in snake_case, and checkpoints written before them still resume.</summary>
public class TrainerCheckpointTests
{
    private static readonly string[] SaeLensNames = ["l1_coefficient", "aux_loss_coefficient", "jumprelu_bandwidth", "jumprelu_init_threshold"];

    private static (string Dir, string Checkpoint) TrainAndCheckpoint(SaeTrainingOptions options)
    {
        var dir = TempDir();
        using var source = new InMemorySource(SparseData(128, 8, 12, 0.1, seed: 3));
        var cfg = Config(4);
        cfg.CheckpointPath = dir;
        var sae = Standard(8, 16);
        sae.Training = options;
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("s", sae)]);
        trainer.Run();
        return (dir, trainer.LastCheckpoint!);
    }

    private static SaeTrainingOptions Unusual() => new()
    {
        SparsityCoefficient = 0.125, AuxKCoefficient = 0.25, Bandwidth = 0.5, InitialThreshold = 0.75,
        Penalty = SparsityPenalty.L1DecoderNorm, JumpReluPenalty = JumpReluPenalty.TargetL0, TargetL0 = 7, KAux = 3,
    };

    private static void AssertSameOptions(SaeTrainingOptions expected, SaeTrainingOptions actual)
    {
        Assert.Equal(expected.SparsityCoefficient, actual.SparsityCoefficient);
        Assert.Equal(expected.AuxKCoefficient, actual.AuxKCoefficient);
        Assert.Equal(expected.Bandwidth, actual.Bandwidth);
        Assert.Equal(expected.InitialThreshold, actual.InitialThreshold);
        Assert.Equal(expected.Penalty, actual.Penalty);
        Assert.Equal(expected.JumpReluPenalty, actual.JumpReluPenalty);
        Assert.Equal(expected.TargetL0, actual.TargetL0);
        Assert.Equal(expected.KAux, actual.KAux);
    }

    [Fact]
    public void TrainingOptionsAreWrittenInSnakeCaseUnderSaeLensNames()
    {
        var (dir, checkpoint) = TrainAndCheckpoint(Unusual());
        try
        {
            var state = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, TrainerCheckpoint.StateFileName)))!;
            var training = state["saes"]![0]!["sae_training"]!.AsObject();
            foreach (var name in SaeLensNames) Assert.True(training.ContainsKey(name), name);
            Assert.Equal(0.125, training["l1_coefficient"]!.GetValue<double>());
            Assert.Equal(0.5, training["jumprelu_bandwidth"]!.GetValue<double>());
            Assert.All(training.Select(kv => kv.Key), k => Assert.Equal(k.ToLowerInvariant(), k));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ResumingAtTheLastStepRemovesWhatAnInterruptedWriteLeft()
    {
        // A kill during a checkpoint write leaves a .tmp_step_* folder; a run killed after its final checkpoint and then
        // resumed has no step left to train, so no new write prunes it: the resume itself must.
        var (dir, checkpoint) = TrainAndCheckpoint(Unusual());
        try
        {
            var stale = Path.Combine(dir, ".tmp_step_000000004_0123");
            Directory.CreateDirectory(stale);
            File.WriteAllBytes(Path.Combine(stale, "sae_0.safetensors"), [1, 2, 3]);
            using var resumed = SaeTrainer.Resume(dir, new InMemorySource(SparseData(128, 8, 12, 0.1, seed: 3)));
            Assert.False(Directory.Exists(stale));
            Assert.True(Directory.Exists(checkpoint), "the complete checkpoint stays");
            using var result = resumed.Run();
            Assert.Equal(checkpoint, TrainerCheckpoint.Resolve(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ACheckpointWithTheOldPascalCaseNamesStillResumes()
    {
        var (dir, checkpoint) = TrainAndCheckpoint(Unusual());
        try
        {
            // Rewrite the options as the earlier format had them: the C# property names.
            var path = Path.Combine(checkpoint, TrainerCheckpoint.StateFileName);
            var state = JsonNode.Parse(File.ReadAllText(path))!;
            var o = Unusual();
            state["saes"]![0]!["sae_training"] = new JsonObject
            {
                ["SparsityCoefficient"] = o.SparsityCoefficient, ["Penalty"] = "L1DecoderNorm", ["AuxKCoefficient"] = o.AuxKCoefficient,
                ["KAux"] = o.KAux, ["Bandwidth"] = o.Bandwidth, ["InitialThreshold"] = o.InitialThreshold,
                ["JumpReluPenalty"] = "TargetL0", ["TargetL0"] = o.TargetL0,
            };
            File.WriteAllText(path, state.ToJsonString());
            using var resumed = SaeTrainer.Resume(dir, new InMemorySource(SparseData(128, 8, 12, 0.1, seed: 3)));
            AssertSameOptions(o, resumed.Saes[0].Training);
        }
        finally { Directory.Delete(dir, true); }
    }
}
