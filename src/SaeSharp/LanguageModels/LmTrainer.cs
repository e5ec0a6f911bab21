using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Corpus;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tokenizers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.LanguageModels;

/// <summary>Settings of <c>sae lm train</c>: the corpus, the GPT-NeoX shape, and the optimiser.</summary>
public sealed record LmTrainingOptions
{
    /// <summary>Labelled corpus (.jsonl with <c>text</c>, optional <c>choice_nats</c>), e.g. written by <c>sae corpus</c>.</summary>
    public required string CorpusPath { get; init; }
    /// <summary>Output folder: a Hugging Face GPT-NeoX model folder (config.json, model.safetensors, tokenizer.json).</summary>
    public required string OutDir { get; init; }
    /// <summary>Residual stream width (GPT-NeoX <c>hidden_size</c>).</summary>
    public int DModel { get; init; } = 128;
    /// <summary>Transformer blocks (<c>num_hidden_layers</c>).</summary>
    public int NLayers { get; init; } = 4;
    /// <summary>Attention heads (<c>num_attention_heads</c>); must divide <see cref="DModel"/>.</summary>
    public int NHeads { get; init; } = 4;
    /// <summary>MLP hidden width (<c>intermediate_size</c>).</summary>
    public int DMlp { get; init; } = 512;
    /// <summary>Tokens per training window; whole stories are packed into windows (never split).</summary>
    public int ContextSize { get; init; } = 256;
    /// <summary>Windows per step.</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Optimiser steps.</summary>
    public long Steps { get; init; } = 2000;
    /// <summary>Peak learning rate of AdamW (β = 0.9, 0.95), reached after <see cref="WarmUpSteps"/> of linear warm-up, then cosine decay to 10%.</summary>
    public double Lr { get; init; } = 3e-3;
    /// <summary>Steps of linear warm-up from 0 to <see cref="Lr"/>.</summary>
    public long WarmUpSteps { get; init; } = 100;
    /// <summary>Decoupled weight decay on the matrices (not on biases, norms or embeddings).</summary>
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>Global gradient-norm clip.</summary>
    public double GradClip { get; init; } = 1.0;
    /// <summary>The last stories of the corpus, held out for the validation loss (when there is no <see cref="ValidationCorpusPath"/>).</summary>
    public int ValidationDocuments { get; init; } = 300;
    /// <summary>A separate validation corpus (all of it is used; nothing is held out of the training corpus).</summary>
    public string? ValidationCorpusPath { get; init; }
    /// <summary>Validate on <see cref="ValidationDocuments"/> stories generated from this seed (nothing is held out of the training corpus).</summary>
    public ulong? ValidationSeed { get; init; }
    /// <summary>Save the model folder every this many steps (0: only at the end).</summary>
    public long CheckpointEverySteps { get; init; } = 500;
    /// <summary>Seed of the weight initialisation and the window order.</summary>
    public ulong Seed { get; init; }
    /// <summary>Replace a model already in <see cref="OutDir"/> (<c>--force</c>); without it such a folder is an error.</summary>
    public bool Overwrite { get; init; }
    /// <summary>Continue the run whose checkpoint is in <c>OutDir/checkpoints</c> (<c>--resume</c>): every other setting must
    /// be that run's; the weights reached are those of an uninterrupted run, bit for bit.</summary>
    public bool Resume { get; init; }
}

/// <summary>Progress of <see cref="LmTrainer.Train"/>.</summary>
public sealed record LmProgress(long Step, long TotalSteps, double Loss, double Lr, double TokensPerSecond, TimeSpan? Eta);

/// <summary>What a training run reached: validation loss against the corpus's entropy floor (nats per token).</summary>
/// <param name="OutDir">The model folder written.</param>
/// <param name="Steps">Optimiser steps taken.</param>
/// <param name="TrainTokens">Predicted tokens seen in training.</param>
/// <param name="Seconds">Wall-clock training time.</param>
/// <param name="FirstLoss">Training loss of the first step.</param>
/// <param name="LastLoss">Smoothed training loss at the end.</param>
/// <param name="ValidationLoss">Mean cross-entropy per predicted token on the held-out stories.</param>
/// <param name="EntropyFloor">Mean information per predicted token of the generator's choices on the same tokens (null without <c>choice_nats</c>).</param>
public sealed record LmTrainingResult(string OutDir, long Steps, long TrainTokens, double Seconds, double ValidationLoss,
    double? EntropyFloor, double FirstLoss, double LastLoss)
{
    /// <summary>The checkpoint folder written when the run was stopped (cancelled) before its last step; null when it
    /// ended. A stopped run has no validation loss (NaN) and no training.json.</summary>
    public string? StoppedCheckpoint { get; init; }
}

/// <summary>
/// Trains a small GPT-NeoX-layout causal language model from scratch on a text corpus with SaeSharp's own model code:
/// cross-entropy on the next token, AdamW, linear warm-up then cosine decay, gradient clipping, periodic checkpoints.
/// The output folder is a Hugging Face model folder that <see cref="ModelLoader.FromPretrained"/> loads.
/// </summary>
public static class LmTrainer
{
    /// <summary>Packed windows of whole documents: ids [n, ctx], targets [n, ctx] (-100 where not scored), per-target nats.</summary>
    internal sealed record Packed(long[][] Ids, long[][] Targets, double[][] Nats);

    /// <summary>Trains the model described by <paramref name="o"/>, writes its folder to <see cref="LmTrainingOptions.OutDir"/>
    /// (checkpoints on the way), and reports <paramref name="progress"/> after each step. Cancelling <paramref name="cancel"/>
    /// stops after the current step: the weights and a resumable checkpoint (<see cref="LmTrainingResult.StoppedCheckpoint"/>)
    /// are written and the result returned.</summary>
    public static LmTrainingResult Train(LmTrainingOptions o, IProgress<LmProgress>? progress = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(o);
        if (o.DModel % o.NHeads != 0) throw new SaeSharpException($"d_model {o.DModel} must be a multiple of n_heads {o.NHeads}");
        if (o.Steps <= 0 || o.BatchSize <= 0 || o.ContextSize < 8) throw new SaeSharpException("steps and batch size must be positive and the context at least 8 tokens");
        if (!double.IsFinite(o.Lr) || o.Lr <= 0) throw new SaeSharpException($"--lr {o.Lr}: expected a finite number > 0");
        if (!double.IsFinite(o.WeightDecay) || o.WeightDecay < 0) throw new SaeSharpException($"--weight-decay {o.WeightDecay}: expected a finite number >= 0");
        if (!double.IsFinite(o.GradClip) || o.GradClip <= 0) throw new SaeSharpException($"gradient clip {o.GradClip}: expected a finite number > 0");
        if (o.Resume && o.Overwrite) throw new SaeSharpException("give --resume (continue the run in --out) or --force (replace it), not both");
        // Everything is read and checked before the output folder is touched: a refused run leaves nothing behind.
        if (!o.Overwrite && !o.Resume && Directory.Exists(o.OutDir) && ModelFiles.Where(f => File.Exists(Path.Combine(o.OutDir, f))).ToList() is { Count: > 0 } modelFiles)
            throw new SaeSharpException($"{o.OutDir} holds a language model ({string.Join(", ", modelFiles)}): replace it with --force" +
                (Directory.Exists(LmCheckpoint.Root(o.OutDir)) ? ", continue its stopped run with --resume" : "") + ", or choose another --out");
        var tokenizer = BuiltinTokenizer();
        CheckMemory(o, tokenizer.VocabSize, HostMemory.AvailableBytes());
        var docs = ReadDocuments(o.CorpusPath, tokenizer).ToList();
        int held = o.ValidationCorpusPath is null && o.ValidationSeed is null ? o.ValidationDocuments : 0;
        if (docs.Count <= held)
            throw new SaeSharpException($"{o.CorpusPath}: {docs.Count} documents; need more than the {held} held out for validation");
        int bos = tokenizer.BosTokenId ?? 0;
        var train = Pack(docs.Take(docs.Count - held), o.ContextSize, bos);
        var valDocs = (o.ValidationSeed is ulong vs ? Tokenize(CorpusGenerator.Generate(vs, o.ValidationDocuments), tokenizer)
            : o.ValidationCorpusPath is { } vp ? ReadDocuments(vp, tokenizer)
            : docs.Skip(docs.Count - held)).ToList();
        if (valDocs.Count == 0)
            throw new SaeSharpException(o.ValidationCorpusPath is { } empty ? $"{empty}: no validation documents"
                : $"--val-docs {o.ValidationDocuments}: no validation documents; give at least 1");
        RefuseCutDocuments(valDocs, o.ContextSize, o.ValidationSeed is ulong seed ? $"--val-seed {seed}" : o.ValidationCorpusPath ?? o.CorpusPath);
        var val = Pack(valDocs, o.ContextSize, bos);
        var run = LmCheckpoint.Run(o, train, val);
        using var resumed = o.Resume ? LmCheckpoint.Load(o.OutDir, run) : null;
        bool created = !Directory.Exists(o.OutDir) || !Directory.EnumerateFileSystemEntries(o.OutDir).Any();
        try
        {
            return TrainInto(o, tokenizer, train, val, run, resumed, progress, cancel);
        }
        catch when (created && !File.Exists(Path.Combine(o.OutDir, "model.safetensors")))
        {
            // A run that fails before its first weights (divergence, out of memory) leaves no folder without a model.
            try { Directory.Delete(o.OutDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>The files of a trained model folder that a new run would replace.</summary>
    private static readonly string[] ModelFiles = ["model.safetensors", "config.json", "training.json"];

    /// <summary>The built-in word-level tokenizer, as <c>tokenizer.json</c> in the output folder will hold it.</summary>
    private static WordLevelTokenizer BuiltinTokenizer()
    {
        var dir = Directory.CreateTempSubdirectory("sae-lm-tokenizer-");
        try
        {
            LabelledCorpus.WriteTokenizer(dir.FullName);
            return Tokenizer.FromWordLevelJson(Path.Combine(dir.FullName, "tokenizer.json"));
        }
        finally { dir.Delete(recursive: true); }
    }

    private static LmTrainingResult TrainInto(LmTrainingOptions o, WordLevelTokenizer tokenizer, Packed train, Packed val,
        System.Text.Json.Nodes.JsonObject run, LmCheckpoint.Loaded? resumed, IProgress<LmProgress>? progress, CancellationToken cancel)
    {
        Directory.CreateDirectory(o.OutDir);
        // The checkpoints of a run --force replaces must not be taken for this run's by a later --resume.
        if (resumed is null) LmCheckpoint.Delete(o.OutDir);
        LabelledCorpus.WriteTokenizer(o.OutDir);
        WriteConfig(o, tokenizer.VocabSize);

        using var model = (GptNeoXModel)ModelLoader.Create(o.OutDir);
        // A generator of the run's own, seeded as torch.manual_seed seeds the global one (the same draws): another thread
        // drawing from the global generator cannot change the start weights.
        using (var init = new Generator(o.Seed)) Initialise(model, o.NLayers, init);
        model.SetRequiresGrad(true);
        // AdamW (β 0.9/0.95) with weight decay on the 2-D weights but the embedding, TorchSharp's AdamW op for op (Fused off:
        // the weights models/builtin's command reproduces).
        using var opt = new Kernels.AdamOptimizer(model.named_parameters()
            .Select(np => (np.name, np.parameter, IsDecayed(np.name, np.parameter) ? o.WeightDecay : 0.0)), beta1: 0.9, beta2: 0.95) { Fused = false };
        var rng = new SeededRandom(o.Seed);
        long[] order = rng.Permutation(train.Ids.Length);
        long cursor = 0, trainTokens = 0, start = 1;
        double first = double.NaN, ema = double.NaN, earlier = 0;
        if (resumed?.Position is { } at)
        {
            resumed.Apply(model, opt);
            (rng, order, cursor, trainTokens, first, ema, earlier, start) =
                (SeededRandom.FromState(at.Rng), at.Order, at.Cursor, at.TrainTokens, at.FirstLoss, at.Ema, at.Seconds, at.Step + 1);
        }
        var watch = Stopwatch.StartNew();
        double Seconds() => earlier + watch.Elapsed.TotalSeconds;
        string Checkpoint(long done)
        {
            SaveWeights(model, o.OutDir);
            return LmCheckpoint.Save(o.OutDir, model, opt, run,
                new LmCheckpoint.Position(done, trainTokens, opt.StepCount, rng.GetState(), order, cursor, first, ema, Seconds()));
        }
        model.train();
        for (long step = start; step <= o.Steps; step++)
        {
            if (cancel.IsCancellationRequested)
                return new LmTrainingResult(o.OutDir, step - 1, trainTokens, Seconds(), double.NaN, null, first, ema) { StoppedCheckpoint = Checkpoint(step - 1) };
            using var scope = NewDisposeScope();
            var rows = new long[o.BatchSize];
            for (int b = 0; b < rows.Length; b++)
            {
                if (cursor == order.Length) { order = rng.Permutation(train.Ids.Length); cursor = 0; }
                rows[b] = order[cursor++];
            }
            var ids = tensor(rows.SelectMany(r => train.Ids[r]).ToArray()).view(o.BatchSize, o.ContextSize);
            var targets = tensor(rows.SelectMany(r => train.Targets[r]).ToArray()).view(-1);
            double lr = LearningRate(o, step);
            model.zero_grad();
            var logits = model.Run(ids, new RunOptions { Grad = true }).Logits!;
            var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), targets, ignore_index: -100);
            loss.backward();
            nn.utils.clip_grad_norm_(model.parameters(), o.GradClip);
            opt.Step(lr);
            double l = loss.item<float>();
            if (!double.IsFinite(l)) throw new SaeSharpException($"language-model training diverged at step {step} (loss {l}); lower --lr");
            trainTokens += rows.Sum(r => train.Targets[r].Count(t => t >= 0));
            if (step == 1) first = l;
            ema = double.IsNaN(ema) ? l : 0.95 * ema + 0.05 * l;
            if (progress is not null && (step % 10 == 0 || step == o.Steps))
            {
                double sec = Seconds();
                progress.Report(new LmProgress(step, o.Steps, ema, lr, trainTokens / Math.Max(sec, 1e-9),
                    TimeSpan.FromSeconds(sec / step * (o.Steps - step))));
            }
            if (o.CheckpointEverySteps > 0 && step % o.CheckpointEverySteps == 0 && step < o.Steps) Checkpoint(step);
        }
        model.eval();
        model.SetRequiresGrad(false);
        SaveWeights(model, o.OutDir);
        var (valLoss, floor) = Validate(model, val, o.BatchSize);
        (double, double?)? quick = o.ValidationSeed is ulong qs
            ? Validate(model, tokenizer, CorpusGenerator.Generate(qs, QuickCheckDocuments), o.ContextSize) : null;
        var result = new LmTrainingResult(o.OutDir, o.Steps, trainTokens, Seconds(), valLoss, floor, first, ema);
        WriteReport(o, result, quick);
        // The run ended: nothing is left to resume, and the model folder holds only the model.
        LmCheckpoint.Delete(o.OutDir);
        return result;
    }

    /// <summary>Weights of the GPT-NeoX model <paramref name="o"/> describes: the embedding and the unembedding (untied), per
    /// layer two layer norms, query_key_value, dense and the MLP's two matrices (all with biases), and the final norm.</summary>
    public static long ParameterCount(LmTrainingOptions o, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(o);
        long d = o.DModel, f = o.DMlp;
        long layer = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d);
        return 2L * vocabSize * d + o.NLayers * layer + 2 * d;
    }

    /// <summary>
    /// An upper estimate (within about 2×) of the memory one training step takes, in bytes (float32): the weights with
    /// their gradients, AdamW's two moments and room for the update's temporaries (6 per weight); per layer the tensors of
    /// one batch that the step keeps until it ends (20 of [batch, ctx, d_model]: norms, query_key_value, rotary, copies
    /// for the products, z, outputs, residual sums; 2 of [batch, ctx, d_mlp]; 4 of the attention scores [batch, heads,
    /// ctx, ctx]), one layer's worth again for the gradients in flight (4 score-sized), the embedding and final norm, and
    /// the logits with their log-softmax and two gradients (4 of [batch, ctx, vocab]). The scores grow with ctx², the
    /// rest with ctx. Measured by <c>bench lm-memory</c> (peak resident memory of 3 steps and the validation, 13 shapes,
    /// ctx 64 → 2048, 1 → 8 layers; BENCHMARKS.md): the scores take about 3.2 score tensors per layer plus 3.4 (the
    /// heap's fragmentation included), and this estimate is 1.14–1.75× the measured peak.
    /// </summary>
    public static double PeakMemoryBytes(LmTrainingOptions o, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(o);
        double tokens = (double)o.BatchSize * o.ContextSize, scores = tokens * o.NHeads * o.ContextSize;
        double perLayer = tokens * (20.0 * o.DModel + 2.0 * o.DMlp);
        double floats = 6.0 * ParameterCount(o, vocabSize) + (o.NLayers + 1) * perLayer + tokens * (2.0 * o.DModel + 4.0 * vocabSize)
            + scores * (4.0 * o.NLayers + 4);
        return 4 * floats;
    }

    /// <summary>Refuses a run whose step (<see cref="PeakMemoryBytes"/>) needs more than <paramref name="available"/> bytes.</summary>
    internal static void CheckMemory(LmTrainingOptions o, int vocabSize, long available)
    {
        double need = PeakMemoryBytes(o, vocabSize);
        if (need <= available) return;
        throw new SaeSharpException($"--context-size {o.ContextSize}, --batch-size {o.BatchSize}: one training step needs about " +
            $"{HostMemory.Format(need)} (an upper estimate; the attention scores grow with the square of the context) but " +
            $"{HostMemory.Format(available)} of memory is available; make --context-size or --batch-size smaller " +
            "(or --n-heads, --d-model, --d-mlp, --n-layers)");
    }

    private static bool IsDecayed(string name, Parameter p) => name.EndsWith(".weight", StringComparison.Ordinal) && p.dim() == 2 && !name.Contains("embed_in");

    /// <summary>
    /// Validation loss of a model folder on the held-out stories of a corpus, as <see cref="Train"/> measures it
    /// (the last <paramref name="documents"/> stories, or all of them when it is 0, packed into windows of <paramref name="contextSize"/>).
    /// When the corpus has fewer than <paramref name="documents"/> stories, all are scored and <paramref name="notes"/> says so.
    /// </summary>
    public static (double Loss, double? Floor) Validate(HookedTransformer model, ITextTokenizer tokenizer,
        string corpusPath, int documents, int contextSize, IProgress<WorkProgress>? progress = null, ICollection<string>? notes = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var docs = ReadDocuments(corpusPath, tokenizer).ToList();
        if (docs.Count == 0) throw new SaeSharpException($"{corpusPath}: no stories (an empty corpus)");
        var scored = documents > 0 ? docs.Skip(Math.Max(0, docs.Count - documents)).ToList() : docs;
        if (documents > docs.Count)
            notes?.Add($"--docs {documents}: {corpusPath} has {docs.Count} {(docs.Count == 1 ? "story" : "stories")}; scoring all of them");
        RefuseCutDocuments(scored, contextSize, corpusPath);
        var c = model.Config;
        int batch = 16;
        double need = ValidationPeakBytes(Math.Min(batch, scored.Count), c.NHeads, contextSize, c.DModel, c.DMlp, c.DVocab);
        long available = HostMemory.AvailableBytes();
        if (need > available)
            throw new SaeSharpException($"--context-size {contextSize}: the validation pass needs about {HostMemory.Format(need)} (an estimate; " +
                $"the attention scores grow with the square of the context) but {HostMemory.Format(available)} of memory is available; " +
                "give a smaller --context-size");
        var val = Pack(scored, contextSize, tokenizer.BosTokenId ?? 0);
        return Validate(model, val, batch, progress);
    }

    /// <summary>An estimate of the memory (float32 bytes) of one validation batch of <paramref name="batch"/> windows without
    /// gradients: one layer at a time, its attention scores and their softmax, its activations, and the logits twice
    /// (with the per-token losses).</summary>
    internal static double ValidationPeakBytes(int batch, int heads, int ctx, int dModel, int dMlp, int vocab)
    {
        double tokens = (double)batch * ctx;
        return 4 * (2 * tokens * heads * ctx + tokens * (8.0 * dModel + 2.0 * dMlp) + 2 * tokens * vocab);
    }

    /// <summary>Refuses validation stories longer than a window (<paramref name="ctx"/> − 1 tokens after BOS): <see cref="Pack"/>
    /// would cut them, and the entropy floor of a story's first tokens is no bound on their loss (the generator's choices
    /// are counted where they are made, not where the text reveals them).</summary>
    private static void RefuseCutDocuments(List<(int[] Ids, double[] Nats)> docs, int ctx, string source)
    {
        int longest = docs.Count == 0 ? 0 : docs.Max(d => d.Ids.Length);
        if (longest <= ctx - 1) return;
        int cut = docs.Count(d => d.Ids.Length > ctx - 1);
        throw new SaeSharpException($"--context-size {ctx}: {cut} of the {docs.Count} validation stories of {source} {(cut == 1 ? "is" : "are")} longer than a window " +
            $"({ctx - 1} tokens after BOS; the longest has {longest}): their loss and entropy floor would be of cut stories; " +
            $"give --context-size {longest + 1} or more");
    }

    /// <summary>Validation loss of a model on generated documents (their text re-tokenized), with their entropy floor.</summary>
    public static (double Loss, double? Floor) Validate(HookedTransformer model, ITextTokenizer tokenizer,
        IEnumerable<LabelledDocument> documents, int contextSize)
    {
        return Validate(model, Pack(Tokenize(documents, tokenizer), contextSize, tokenizer.BosTokenId ?? 0), 16);
    }

    private static IEnumerable<(int[] Ids, double[] Nats)> Tokenize(IEnumerable<LabelledDocument> documents, ITextTokenizer tokenizer) =>
        documents.Select(d =>
        {
            var ids = tokenizer.Encode(d.Text);
            if (ids.Length != d.ChoiceNats.Count)
                throw new SaeSharpException($"the tokenizer splits a document into {ids.Length} tokens but it has {d.ChoiceNats.Count}");
            return (ids, d.ChoiceNats.ToArray());
        });

    private static (double, double?) Validate(HookedTransformer model, Packed val, int batch, IProgress<WorkProgress>? progress = null)
    {
        var counter = new ProgressCounter(progress, "tokens", val.Ids.Sum(w => (long)w.Length));
        double sum = 0, floor = 0;
        long n = 0;
        bool hasNats = true;
        using var _ = no_grad();
        for (int start = 0; start < val.Ids.Length; start += batch)
        {
            using var scope = NewDisposeScope();
            int b = Math.Min(batch, val.Ids.Length - start);
            var ids = tensor(val.Ids.Skip(start).Take(b).SelectMany(x => x).ToArray()).view(b, -1);
            var targets = val.Targets.Skip(start).Take(b).SelectMany(x => x).ToArray();
            var nats = val.Nats.Skip(start).Take(b).SelectMany(x => x).ToArray();
            var logits = model.Forward(ids);
            var losses = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), tensor(targets), ignore_index: -100,
                reduction: nn.Reduction.None).data<float>().ToArray();
            for (int i = 0; i < targets.Length; i++)
            {
                if (targets[i] < 0) continue;
                sum += losses[i];
                n++;
                if (double.IsNaN(nats[i])) hasNats = false;
                else floor += nats[i];
            }
            counter.Add(ids.numel());
        }
        if (n == 0) throw new SaeSharpException("no validation tokens");
        return (sum / n, hasNats ? floor / n : null);
    }

    /// <summary>Linear warm-up to the peak, then cosine decay to 10% of it at the last step.</summary>
    internal static double LearningRate(LmTrainingOptions o, long step)
    {
        if (step <= o.WarmUpSteps) return o.Lr * step / Math.Max(1, o.WarmUpSteps);
        double t = (double)(step - o.WarmUpSteps) / Math.Max(1, o.Steps - o.WarmUpSteps);
        return o.Lr * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, t))));
    }

    /// <summary>Token ids and per-token nats (NaN when the corpus has none) of each document.</summary>
    internal static IEnumerable<(int[] Ids, double[] Nats)> ReadDocuments(string path, ITextTokenizer tokenizer)
    {
        LabelledCorpus.RefuseFolder(path, "a text field");
        foreach (var (e, line) in Data.TextDataset.JsonLines(path))
        {
            if (!e.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                throw new SaeSharpException($"{path} line {line}: no string field 'text'");
            var ids = tokenizer.Encode(t.GetString()!);
            var nats = LabelledCorpus.ChoiceNats(e, path, line) ?? Enumerable.Repeat(double.NaN, ids.Length).ToArray();
            if (nats.Length != ids.Length)
                throw new SaeSharpException($"{path} line {line}: {nats.Length} choice_nats but the text has {ids.Length} tokens");
            yield return (ids, nats);
        }
    }

    /// <summary>
    /// Packs whole documents, each preceded by BOS, into windows of <paramref name="ctx"/> tokens (padding with BOS);
    /// the target of each position is the next token, not scored (-100) past the last real token. A document longer than
    /// the window is cut. The nats of a target are the document's choice nats of that token (0 for a BOS target).
    /// </summary>
    internal static Packed Pack(IEnumerable<(int[] Ids, double[] Nats)> docs, int ctx, int bos)
    {
        var ids = new List<long[]>();
        var targets = new List<long[]>();
        var nats = new List<double[]>();
        var curIds = new List<long>();
        var curNats = new List<double>();
        void Flush()
        {
            if (curIds.Count == 0) return;
            var w = new long[ctx];
            var tg = new long[ctx];
            var nt = new double[ctx];
            Array.Fill(w, bos);
            Array.Fill(tg, -100);
            for (int i = 0; i < curIds.Count; i++) w[i] = curIds[i];
            for (int i = 0; i + 1 < curIds.Count; i++)
            {
                tg[i] = curIds[i + 1];
                nt[i] = curNats[i + 1];
            }
            ids.Add(w);
            targets.Add(tg);
            nats.Add(nt);
            curIds.Clear();
            curNats.Clear();
        }
        foreach (var (docIds, docNats) in docs)
        {
            int len = Math.Min(docIds.Length, ctx - 1);
            if (curIds.Count + 1 + len > ctx) Flush();
            curIds.Add(bos);
            curNats.Add(0);
            for (int i = 0; i < len; i++)
            {
                curIds.Add(docIds[i]);
                curNats.Add(docNats[i]);
            }
        }
        Flush();
        return new Packed(ids.ToArray(), targets.ToArray(), nats.ToArray());
    }

    /// <summary>config.json without <c>_name_or_path</c>: the loader names the model after its folder, so the shipped
    /// <c>models/builtin</c> is <c>builtin</c>, the name <c>--model</c> takes (and caches and cfg.json record).</summary>
    private static void WriteConfig(LmTrainingOptions o, int vocab)
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("GPTNeoXForCausalLM"),
            ["model_type"] = "gpt_neox",
            ["hidden_act"] = "gelu",
            ["hidden_size"] = o.DModel, ["num_hidden_layers"] = o.NLayers, ["num_attention_heads"] = o.NHeads,
            ["intermediate_size"] = o.DMlp, ["rotary_pct"] = 0.25, ["rotary_emb_base"] = 10000,
            ["use_parallel_residual"] = true, ["layer_norm_eps"] = 1e-5, ["vocab_size"] = vocab,
            ["max_position_embeddings"] = o.ContextSize, ["tie_word_embeddings"] = false, ["initializer_range"] = 0.02,
            ["bos_token_id"] = 0, ["eos_token_id"] = 0, ["torch_dtype"] = "float32",
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>GPT-NeoX initialisation: N(0, 0.02) matrices and embeddings, output projections scaled by 1/√(2·n_layers), zero biases, unit norms.</summary>
    private static void Initialise(nn.Module model, int nLayers, Generator generator)
    {
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal)) p.fill_(TorchScalars.Of(0));
            else if (name.Contains("layernorm") || name.Contains("layer_norm")) p.fill_(TorchScalars.Of(1.0));
            else
            {
                double std = 0.02 * (name.Contains("attention.dense") || name.Contains("dense_4h_to_h") ? 1 / Math.Sqrt(2 * nLayers) : 1);
                p.normal_(0, std, generator);
            }
        }
    }

    private static void SaveWeights(nn.Module model, string dir)
    {
        using var scope = NewDisposeScope();
        var weights = model.state_dict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().contiguous())).ToList();
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), weights, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>Stories of the quick check recorded in training.json: the validation loss on the first few validation stories, for tests.</summary>
    public const int QuickCheckDocuments = 24;

    private static void WriteReport(LmTrainingOptions o, LmTrainingResult r, (double Loss, double? Floor)? quick)
    {
        var json = new JsonObject
        {
            ["corpus"] = Path.GetFileName(o.CorpusPath), ["steps"] = r.Steps, ["batch_size"] = o.BatchSize, ["context_size"] = o.ContextSize,
            ["lr"] = o.Lr, ["warm_up_steps"] = o.WarmUpSteps, ["weight_decay"] = o.WeightDecay, ["seed"] = o.Seed,
            ["validation"] = o.ValidationSeed is not null ? "generated" : o.ValidationCorpusPath is { } vp ? Path.GetFileName(vp) : $"last {o.ValidationDocuments} documents of the corpus",
            ["validation_corpus"] = o.ValidationSeed is ulong vs ? new JsonObject { ["seed"] = vs, ["documents"] = o.ValidationDocuments } : null, ["train_tokens"] = r.TrainTokens, ["seconds"] = Math.Round(r.Seconds, 1),
            ["validation_loss"] = r.ValidationLoss, ["entropy_floor"] = r.EntropyFloor,
            ["first_train_loss"] = r.FirstLoss, ["last_train_loss"] = r.LastLoss,
            ["quick_check"] = quick is { } q ? new JsonObject { ["documents"] = QuickCheckDocuments, ["validation_loss"] = q.Loss, ["entropy_floor"] = q.Floor } : null,
        };
        AtomicFile.WriteAllText(Path.Combine(o.OutDir, "training.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
