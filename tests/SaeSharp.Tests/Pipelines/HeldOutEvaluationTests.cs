using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary><c>sae train --model</c> holds the dataset's first windows out of training and evaluates metrics.json on
/// them: a tiny GPT-2 with the real GPT-2 tokenizer; at <c>hook_embed</c> each row is its token's embedding, so on a
/// pre-tokenized dataset whose every token id is different a row names the window it came from.</summary>
public class HeldOutEvaluationTests : ModelTestBase
{
    private const string Embed = "hook_embed";

    /// <summary>A pre-tokenized jsonl of <paramref name="windows"/> rows of <paramref name="ctx"/> ids, all different
    /// (window w holds 1000 + w·ctx, ...).</summary>
    private string UniqueTokenWindows(int windows, int ctx)
    {
        string path = Sub("tokens.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, windows).Select(w =>
            new JsonObject { ["input_ids"] = new JsonArray(Enumerable.Range(0, ctx).Select(p => (JsonNode)(1000 + w * ctx + p)).ToArray()) }.ToJsonString()));
        return path;
    }

    /// <summary>Every row of <paramref name="source"/>, as the windows they came from (a row of <c>hook_embed</c> is looked up
    /// in <paramref name="windowOf"/>, its values as the key).</summary>
    private static List<int> WindowsRead(IActivationSource source, Dictionary<string, int> windowOf)
    {
        var read = new List<int>();
        while (source.Next(5) is { } b)
        {
            using (b)
            {
                var x = b.Input.data<float>().ToArray();
                int d = (int)b.Input.shape[1];
                for (int i = 0; i < x.Length / d; i++) read.Add(windowOf[Key(x.AsSpan(i * d, d))]);
            }
        }
        return read;
    }

    private static string Key(ReadOnlySpan<float> row) => string.Join(",", row.ToArray().Select(v => BitConverter.SingleToInt32Bits(v)));

    /// <summary>The embedding row of every token of the dataset, keyed to its window: the whole dataset drained in harvest
    /// order with nothing held out (ctx rows per window).</summary>
    private static Dictionary<string, int> WindowOfEmbeddings(ModelDataOptions data, int ctx, int windows)
    {
        var (rows, contexts) = Drain(data with { SeqposSlice = null, Epochs = 1, Tokens = null }, Embed);
        using (rows)
        {
            Assert.Equal(windows, contexts);
            var x = rows.data<float>().ToArray();
            int d = (int)rows.shape[1];
            var map = new Dictionary<string, int>();
            for (int i = 0; i < windows * ctx; i++) map.Add(Key(x.AsSpan(i * d, d)), i / ctx); // Add: every token's row differs
            return map;
        }
    }

    /// <summary>Training never reads a held-out window, in any pass: with 20 windows of 8 tokens and --eval-rows 15 the first
    /// ⌈15 / 8⌉ = 2 windows (⌈15 / 7⌉ = 3 with seqpos_slice 1:, which keeps 7 positions) are the evaluation's, each row of
    /// them once, and training reads every other window's kept positions once per epoch.</summary>
    [Theory]
    [InlineData(1, null, 2, 8)]
    [InlineData(2, null, 2, 8)]
    [InlineData(3, "1:", 3, 7)]
    public void Training_never_reads_the_held_out_windows_and_the_evaluation_reads_only_them(int epochs, string? slice, int heldOut, int positions)
    {
        const int windows = 20, ctx = 8;
        var (model, _) = TinyGpt2WithText();
        var data = new ModelDataOptions
        {
            ModelPath = model, DatasetPath = UniqueTokenWindows(windows, ctx), ContextSize = ctx, BatchSizePrompts = 3, PrependBos = false,
            SeqposSlice = slice is null ? null : SeqposSlice.Parse(slice),
        };
        var windowOf = WindowOfEmbeddings(data, ctx, windows);
        var s = new TrainingSettings { Architecture = "topk", K = 2, DSae = 32, BatchSize = 16, Steps = 5, EvalRows = 15, Epochs = epochs, Out = Sub("run") };
        using var plan = TrainingPlan.ForModel(s, data, Embed);
        Assert.Equal(heldOut, plan.HeldOutContexts);
        Assert.Equal(heldOut * positions, plan.ModelEvalTokens);

        var trained = WindowsRead(plan.Options.TrainSource, windowOf);
        Assert.DoesNotContain(trained, w => w < heldOut);
        var perWindow = trained.GroupBy(w => w).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(Enumerable.Range(heldOut, windows - heldOut), perWindow.Keys.Order());
        Assert.All(perWindow.Values, n => Assert.Equal(positions * epochs, n));

        var evaluated = WindowsRead(plan.Options.EvalSource!, windowOf);
        Assert.Equal(Enumerable.Range(0, heldOut).SelectMany(w => Enumerable.Repeat(w, positions)), evaluated.Order());
        Assert.True(plan.Options.EvalRows >= evaluated.Count, "metrics.json reads every row of the held-out windows");
    }

    /// <summary>metrics.json of a run is the evaluation of the saved SAE, by hand, on the dataset's first ⌈--eval-rows /
    /// context size⌉ windows: the reconstruction metrics (SaeEvaluator on those windows' rows) and the CE loss recovered
    /// inside the model (sae eval --model over their tokens); it records them as held out.</summary>
    [Fact]
    public void The_end_of_run_metrics_are_those_of_the_first_windows_evaluated_by_hand()
    {
        var (model, text) = TinyGpt2WithText();
        const string hook = "blocks.0.hook_resid_post";
        var data = new ModelDataOptions { ModelPath = model, DatasetPath = text, ContextSize = 16, BatchSizePrompts = 2 };
        var s = new TrainingSettings { Architecture = "topk", K = 4, DSae = 32, BatchSize = 32, Steps = 6, EvalRows = 40, Seed = 3, Epochs = 0, Out = Sub("run") };
        using var plan = TrainingPlan.ForModel(s, data, hook);
        Assert.Equal(3, plan.HeldOutContexts); // ⌈40 / 16⌉
        var result = plan.Run();
        var ce = plan.EvaluateInModel(result.Saes)!;
        var m = JsonNode.Parse(File.ReadAllText(Path.Combine(Sub("run"), "metrics.json")))!;
        Assert.True(m["eval_held_out"]!.GetValue<bool>());
        Assert.Equal(3, m["eval_contexts"]!.GetValue<int>());
        Assert.Equal(48, m["eval_tokens"]!.GetValue<long>());
        Assert.Equal(48, m["n_rows"]!.GetValue<long>());

        // By hand: the first three windows, harvested in order, through the saved SAE.
        var (rows, contexts) = Drain(data with { Tokens = 48 }, hook);
        Assert.Equal(3, contexts);
        using var sae = SaeLoader.Load(Sub("run"));
        sae.eval();
        SaeEvalResult byHand;
        using (rows) byHand = SaeEvaluator.Evaluate(sae, [new ActivationBatch(rows.alias(), null)]);
        Assert.Equal(48, byHand.Rows);
        Assert.Equal(byHand.Mse, m["mse"]!.GetValue<double>(), 1e-6);
        Assert.Equal(byHand.Fvu, m["fvu"]!.GetValue<double>(), 1e-5);
        Assert.Equal(byHand.L0, m["l0"]!.GetValue<double>(), 9);
        var inModel = ModelPipeline.Evaluate([Sub("run")], data with { Tokens = 48 }, meanAblation: false)[0];
        Assert.Equal(inModel.CeLossScore, m["ce_loss_score"]!.GetValue<double>(), 9);
        Assert.Equal(inModel.KlDivWithSae, m["kl_div_with_sae"]!.GetValue<double>(), 9);
        Assert.Equal(inModel.CeLossScore, ce[0].CeLossScore, 12);
        // The same SAE on the next three windows (which it trained on) scores differently: the windows matter.
        var (next, _) = Drain(data with { Tokens = 96 }, hook);
        using (next)
        using (var later = next.narrow(0, 48, 48))
            Assert.NotEqual(byHand.Mse, SaeEvaluator.Evaluate(sae, [new ActivationBatch(later.alias(), null)]).Mse);
    }

    /// <summary>A dataset too small for the hold-out: an explicit --eval-rows whose windows leave none to train on is an
    /// error naming the numbers; the default holds out a tenth of the windows (at least one) and says so; one window is
    /// an error.</summary>
    [Fact]
    public void Too_little_data_for_the_hold_out_is_an_error_or_a_tenth_stated_in_a_note()
    {
        var (model, text) = TinyGpt2WithText();
        var data = new ModelDataOptions { ModelPath = model, DatasetPath = text, ContextSize = 16 };
        int n = ModelPipeline.Windows(Tokenizer.FromFolder(model), text, 16, true).Count();
        Assert.InRange(n, 20, 100);
        TrainingSettings S(long? evalRows) => new() { Architecture = "topk", K = 2, DSae = 32, BatchSize = 16, Steps = 2, EvalRows = evalRows, Out = Sub("run") };

        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForModel(S(16 * n), data, Embed));
        Assert.Contains($"--eval-rows {16 * n} holds out the first {n} context windows (16 tokens each)", e.Message);
        Assert.Contains($"yields only {n}, leaving none to train on", e.Message);
        Assert.Contains($"give at most {16 * (n - 1)}", e.Message);
        using (var plan = TrainingPlan.ForModel(S(16 * (n - 1)), data, Embed))
            Assert.Equal(n - 1, plan.HeldOutContexts);

        using (var plan = TrainingPlan.ForModel(S(null), data, Embed))
        {
            Assert.Equal(n / 10, plan.HeldOutContexts);
            Assert.Contains(plan.Notes, note => note.Contains($"yields {n} context windows", StringComparison.Ordinal) && note.Contains("a tenth", StringComparison.Ordinal));
        }

        string one = Sub("one.txt");
        File.WriteAllText(one, "Line 1: the quick brown fox jumps over the lazy dog number 7, twice.\n");
        Assert.Single(ModelPipeline.Windows(Tokenizer.FromFolder(model), one, 16, true));
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForModel(S(null), data with { DatasetPath = one }, Embed));
        Assert.Contains("yields 1 context window of 16 tokens; a run on a model needs at least 2", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForModel(S(16), data with { DatasetPath = one }, Embed));
        Assert.Contains("yields 1 context window of 16 tokens; a run on a model needs at least 2", e.Message);
    }

    /// <summary>With disable_concat_sequences (one window per line of text) the held-out windows are the first lines: a
    /// source holding out 2 windows hands out exactly the rows of a full run from its third window on (one window per
    /// model run, so the two runs compute alike).</summary>
    [Fact]
    public void Per_document_windows_hold_out_the_first_documents()
    {
        var (model, text) = TinyGpt2WithText();
        var data = new ModelDataOptions { ModelPath = model, DatasetPath = text, ContextSize = 16, BatchSizePrompts = 1, DisableConcatSequences = true };
        const string hook = "blocks.0.hook_resid_post";
        var (full, all) = Drain(data, hook);
        Assert.Equal(File.ReadAllLines(text).Length, all);
        using var src = ModelPipeline.OpenSource(data with { ActivationsMixingFraction = 0 }, hook, bufferContexts: 2, seed: 1, heldOutContexts: 2);
        var parts = new List<Tensor>();
        while (src.Next(7) is { } b)
            using (b) parts.Add(b.Input.clone());
        using var rest = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        Assert.Equal(all - 2, src.ContextsConsumed);
        using (full)
        using (var expected = full.narrow(0, 2 * 16, full.shape[0] - 2 * 16))
        {
            Assert.Equal(expected.shape, rest.shape);
            Assert.True(rest.equal(expected).all().item<bool>(), "the rows after the two held-out documents");
        }
    }

    /// <summary>A saved training state records the windows held out; a resume that would hold out others is refused
    /// (the saved window counts would point at other windows).</summary>
    [Fact]
    public void A_resume_with_another_hold_out_is_refused()
    {
        var (model, text) = TinyGpt2WithText();
        var data = new ModelDataOptions { ModelPath = model, DatasetPath = text, ContextSize = 16, BatchSizePrompts = 2 };
        JsonNode state;
        using (var src = ModelPipeline.OpenSource(data, Embed, bufferContexts: 2, heldOutContexts: 2))
        {
            src.Next(8)!.Dispose();
            state = src.SaveState();
        }
        Assert.Equal(2, state["held_out_contexts"]!.GetValue<int>());
        using (var same = ModelPipeline.OpenSource(data, Embed, bufferContexts: 2, heldOutContexts: 2))
            same.LoadState(state);
        using var other = ModelPipeline.OpenSource(data, Embed, bufferContexts: 2, heldOutContexts: 3);
        var e = Assert.Throws<SaeSharpException>(() => other.LoadState(state));
        Assert.Contains("skipped the first 2 context windows (held out for evaluation) but this source skips 3", e.Message);
    }
}
