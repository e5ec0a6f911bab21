using System.Diagnostics;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.LanguageModels;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>recipes</c>: every architecture at its <c>sae train</c> defaults (<see cref="SaeRecipes.Create"/> +
/// <see cref="SaeRecipes.RunConfig"/>, docs/recipes.md) for several token budgets, scored on held-out rows: FVU, L0 and
/// the share of latents that never fire there, and with <c>--model M --dataset FILE --hook H</c> the % CE loss recovered
/// (SAELens's <c>ce_loss_score</c>, zero ablation) on <c>--eval-tokens</c> tokens of that text, as <c>sae eval --model</c>
/// computes it. Activations come from <c>--activations FILE</c> (.safetensors/.npy;
/// the last --eval-rows rows are held out unless --eval FILE gives them) or, without it, from the synthetic generator.
/// Usage: <c>recipes [--activations FILE [--eval FILE]] [--arch relu,relu-april,gated,jumprelu,topk,batchtopk,matryoshka]
/// [--tokens 250000,1000000] [--batch 512] [--d-sae 1024] [--k 32] [--eval-rows 16384] [--target-l0 N]
/// [--model builtin --dataset val.jsonl --hook blocks.1.hook_resid_post [--eval-tokens 20000]]</c>.
/// </summary>
internal static class RecipesBench
{
    public static int Run(string[] args)
    {
        var a = BenchArgs.For("recipes", args);
        var recipes = a.List("--arch", SaeRecipes.Names);
        var budgets = a.List("--tokens", ["250000", "1000000"]).Select(long.Parse).ToList();
        int batch = a.Int("--batch", 512), dSae = a.Int("--d-sae", 1024), k = a.Int("--k", 32), evalRows = a.Int("--eval-rows", 16384);
        int targetL0 = a.Int("--target-l0", 0);
        var path = a.List("--activations", []).FirstOrDefault();
        var evalPath = a.List("--eval", []).FirstOrDefault();
        var model = a.List("--model", []).FirstOrDefault();
        var dataset = a.List("--dataset", []).FirstOrDefault();
        var hook = a.List("--hook", []).FirstOrDefault();
        int evalTokens = a.Int("--eval-tokens", 20000);
        if (model is not null && (dataset is null || hook is null)) throw new SaeSharpException("recipes: --model needs --dataset and --hook");
        Console.WriteLine($"recipes bench: {(path ?? "synthetic data (d_in 128, 512 true features)")}; d_sae {dSae}, batch {batch}, k {k} (top-k family)"
            + (targetL0 > 0 ? $", --target-l0 {targetL0} (λ recipes)" : "") + $"; held-out {evalRows:N0} rows");
        Console.WriteLine($"{"recipe",-11} {"tokens",10} {"steps",6} {"FVU",7} {"L0",7} {"dead %",7} {"s",6}"
            + (model is null ? "" : $" {"% CE rec.",9}"));
        foreach (var tokens in budgets)
        {
            foreach (var recipe in recipes)
            {
                using var scope = NewDisposeScope();
                var (train, eval, dIn) = Open(path, evalPath, evalRows);
                using (train)
                using (eval)
                {
                    long steps = Math.Max(1, tokens / batch);
                    var sw = Stopwatch.StartNew();
                    var (m, ce) = TrainAndEvaluate(recipe, train, eval, dIn, dSae, k, batch, steps, evalRows, targetL0,
                        model is null ? null : new ModelDataOptions { ModelPath = BuiltinModel.Resolve(model), DatasetPath = dataset!, Tokens = evalTokens },
                        hook);
                    Console.WriteLine($"{recipe,-11} {tokens,10:N0} {steps,6} {m.Fvu,7:F4} {m.L0,7:F1} {m.DeadFraction * 100,7:F1} {sw.Elapsed.TotalSeconds,6:F0}"
                        + (ce is double c ? $" {c * 100,8:F2}%" : ""));
                }
            }
        }
        return 0;
    }

    private static (IActivationSource Train, IActivationSource Eval, int DIn) Open(string? path, string? evalPath, int evalRows)
    {
        if (path is not null && evalPath is not null)
        {
            var options = new ActivationFileSourceOptions { Seed = 42, Loop = true };
            var train = new ActivationFileSource(path, options);
            return (train, ActivationSplit.EvalFiles([evalPath]), train.DIn);
        }
        if (path is not null)
        {
            var (train, eval) = ActivationSplit.HoldOutLastRows([path], evalRows, new ActivationFileSourceOptions { Seed = 42, Loop = true });
            return (train, eval, train.DIn);
        }
        using var gen = new SyntheticGenerator(new SyntheticOptions { DIn = 128, NFeatures = 512, Seed = 1 });
        var trainRows = gen.SampleActivations(262_144);
        var evalData = gen.SampleActivations(evalRows);
        return (new TensorActivationSource(trainRows, shuffle: true, loop: true, seed: 3), new TensorActivationSource(evalData), 128);
    }

    private static (SaeEvalResult Metrics, double? CeLossScore) TrainAndEvaluate(string recipe, IActivationSource train, IActivationSource eval,
        int dIn, int dSae, int k, int batch, long steps, int evalRows, int targetL0, ModelDataOptions? model, string? hook)
    {
        bool topK = !SaeRecipes.HasSparsityCoefficient(recipe);
        using var sae = SaeRecipes.Create(recipe, dIn, dSae, topK ? k : null, totalSteps: steps);
        if (targetL0 > 0 && !topK) SaeRecipes.AdaptToTargetL0(sae, targetL0);
        var run = new TrainerConfig
        {
            TotalTrainingSteps = steps, TrainBatchSizeTokens = batch, Seed = 42, NormalizeActivations = "expected_average_only_in",
            NBatchesForNormEstimate = Math.Max(1, 16384 / batch), BDecInitRows = 4 * batch, LogEverySteps = (int)Math.Max(1, steps / 10),
        };
        using var trainer = new SaeTrainer(run, train, [new SaeSlot(recipe, sae, SaeRecipes.RunConfig(recipe, run, dSae))]);
        using var result = trainer.Run();
        var trained = result.Saes[0].Sae;
        trained.eval();
        var metrics = SaeEvaluator.Evaluate(trained, eval, evalRows);
        if (model is null) return (metrics, null);
        // Scored in the model through the same path as `sae eval --model`: the SAE is written in SAELens's format first.
        string dir = Path.Combine(Path.GetTempPath(), $"saesharp-recipes-{Environment.ProcessId}-{recipe}");
        try
        {
            trained.Cfg.Metadata.HookName = hook;
            SaeLensFormat.Save(trained, dir);
            return (metrics, ModelPipeline.Evaluate([dir], model, meanAblation: false)[0].CeLossScore);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
