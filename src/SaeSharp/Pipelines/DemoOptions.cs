using SaeSharp.LanguageModels;

namespace SaeSharp.Pipelines;

/// <summary>Settings of <see cref="DemoRun"/>: the built-in model's middle layer, a TopK SAE and the sizes of each stage.</summary>
public sealed record DemoOptions
{
    /// <summary>Folder that receives the corpus, the SAE, the label scores, the dashboard and demo.json.</summary>
    public string OutDir { get; init; } = "runs/demo";
    /// <summary>Model folder; null: the built-in model (<see cref="BuiltinModel.Folder"/>).</summary>
    public string? ModelPath { get; init; }
    /// <summary>Hook the SAE reads.</summary>
    public string Hook { get; init; } = BuiltinModel.MiddleHook;
    /// <summary>Activation rows harvested for training (tokens of generated stories, BOS positions left out).</summary>
    public long TrainTokens { get; init; } = 600_000;
    /// <summary>Training steps; null: every harvested row seen once (<see cref="TrainTokens"/> / <see cref="BatchSize"/>).</summary>
    public long? Steps { get; init; }
    /// <summary>Training rows per step.</summary>
    public int BatchSize { get; init; } = 2048;
    /// <summary>Latents (d_sae).</summary>
    public int DSae { get; init; } = 256;
    /// <summary>Active latents per token (TopK k).</summary>
    public int K { get; init; } = 16;
    /// <summary>Tokens per context window (each starts with BOS).</summary>
    public int ContextSize { get; init; } = 128;
    /// <summary>Held-out tokens (another seed of the generator) for the CE/KL evaluation.</summary>
    public long EvalTokens { get; init; } = 16_384;
    /// <summary>Held-out labelled tokens scored against the labels.</summary>
    public long ScoreTokens { get; init; } = 40_000;
    /// <summary>Held-out tokens the dashboard's statistics and examples come from.</summary>
    public long DashboardTokens { get; init; } = 40_000;
    /// <summary>Best-scoring features in the dashboard (the best feature of each of the best-captured labels).</summary>
    public int DashboardTopFeatures { get; init; } = 12;
    /// <summary>Random alive features added to the dashboard.</summary>
    public int DashboardRandomFeatures { get; init; } = 4;
    /// <summary>The sentence of the prompt view.</summary>
    public string Prompt { get; init; } = "Mia had a brown dog called Rex. \"Where is Rex?\" asked Mia.";
    /// <summary>Units (features and neurons) shown in the prompt view.</summary>
    public int PromptTop { get; init; } = 5;
    /// <summary>The prompts the steering example may continue, in the order tried.</summary>
    public IReadOnlyList<string> SteeringPrompts { get; init; } =
        ["Once there was a boy named Tom. Tom had a", "Once there was a boy named Tom. Tom went to the", "Once there was a girl named Mia. Mia saw"];
    /// <summary>Tokens generated (greedily) with and without steering.</summary>
    public int SteeringTokens { get; init; } = 16;
    /// <summary>Labels whose words the steering example tries to bring into the continuation, in order (see <see cref="DemoRun.Steer"/>).</summary>
    public IReadOnlyList<string> SteeringLabels { get; init; } =
        ["cat:colour", "cat:animal", "cat:food", "cat:place", "cat:feeling", "cat:number_word", "cat:object", "cat:weekday", "cat:month"];
    /// <summary>Steering coefficients tried, in multiples of the feature's largest activation on the dashboard tokens; the
    /// smallest that puts more words of the label into the continuation is shown.</summary>
    public IReadOnlyList<double> SteeringScales { get; init; } = [1, 2, 4, 8];
    /// <summary>Seed of the corpus (the training stories use seed + 1000, the held-out ones seed + 2000), the SAE and the random features.</summary>
    public ulong Seed { get; init; }

    /// <summary>A shortened run for CI: a few tens of thousands of tokens and a small SAE (seconds, not minutes).</summary>
    public static DemoOptions Quick(string outDir) => new()
    {
        OutDir = outDir, TrainTokens = 40_960, BatchSize = 1024, DSae = 256, K = 8, EvalTokens = 2048, ScoreTokens = 8192,
        DashboardTokens = 4096, DashboardTopFeatures = 4, DashboardRandomFeatures = 2, SteeringTokens = 12,
    };
}
