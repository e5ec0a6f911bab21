using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Corpus;
using SaeSharp.Evaluation;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Pipelines;

/// <summary>
/// <c>sae demo</c> as a library: the seeds' flow on the built-in model, one stage per method, each built on the API of the
/// command that does the same job alone. Call the stages in order (each needs the previous ones), or <see cref="RunAll"/>:
/// <list type="number">
/// <item><see cref="GenerateCorpus"/> and <see cref="Harvest"/>: labelled stories, and the hook's activations on them
/// streamed to the trainer (<see cref="TrainingPlan.ForModel"/>, as <c>sae train --model</c>);</item>
/// <item><see cref="Train"/>: a TopK SAE (<see cref="TrainingPlan.Run"/>), written in SAELens layout;</item>
/// <item><see cref="Evaluate"/>: FVU, L0, dead share, CE loss recovered and KL on held-out stories (<c>sae eval --model</c>);</item>
/// <item><see cref="ScoreLabels"/>: features and neurons against the token labels (<c>sae score-labels</c>);</item>
/// <item><see cref="WriteDashboard"/>: the dashboard site of the best-scoring and a few random features (<c>sae features --html</c>);</item>
/// <item><see cref="InspectPrompt"/> and <see cref="Steer"/>: the prompt view (<c>sae inspect --neurons</c>) and a
/// steering example (<c>sae steer</c>) with a feature whose label makes the change visible.</item>
/// </list>
/// Everything is written under <see cref="DemoOptions.OutDir"/>; <see cref="WriteSummary"/> adds demo.json.
/// </summary>
public sealed class DemoRun : IDisposable
{
    /// <summary>The file of every figure, in <see cref="DemoOptions.OutDir"/>.</summary>
    public const string SummaryFile = "demo.json";

    private readonly DemoOptions _o;
    private TrainingPlan? _plan;

    /// <summary>Checks the sizes and finds the model (the built-in one unless <see cref="DemoOptions.ModelPath"/> is given).</summary>
    public DemoRun(DemoOptions options)
    {
        _o = options ?? throw new ArgumentNullException(nameof(options));
        if (_o.TrainTokens < _o.BatchSize) throw new SaeSharpException($"the demo needs at least one batch of tokens ({_o.BatchSize}), got {_o.TrainTokens}");
        if (_o.DSae <= 0 || _o.K <= 0 || _o.K > _o.DSae) throw new SaeSharpException($"d_sae {_o.DSae} and k {_o.K}: expected 0 < k <= d_sae");
        ModelPath = _o.ModelPath ?? BuiltinModel.Folder;
    }

    /// <summary>The settings of this run.</summary>
    public DemoOptions Options => _o;
    /// <summary>The model folder.</summary>
    public string ModelPath { get; }
    /// <summary>The trained SAE's folder (SAELens layout).</summary>
    public string SaePath => Path.Combine(_o.OutDir, "sae");
    /// <summary>Every unit's label scores (<c>sae score-labels --json</c>).</summary>
    public string LabelScoresPath => Path.Combine(_o.OutDir, "label_scores.json");
    /// <summary>The dashboard site's folder.</summary>
    public string DashboardPath => Path.Combine(_o.OutDir, "dashboard");

    /// <summary>Result of <see cref="GenerateCorpus"/>, once run.</summary>
    public DemoCorpus? Corpus { get; private set; }
    /// <summary>Result of <see cref="Harvest"/>, once run.</summary>
    public DemoHarvest? Harvested { get; private set; }
    /// <summary>Result of <see cref="Train"/>, once run.</summary>
    public TrainingRunResult? Training { get; private set; }
    /// <summary>Result of <see cref="Evaluate"/>, once run.</summary>
    public DownstreamMetrics? Evaluation { get; private set; }
    /// <summary>Result of <see cref="ScoreLabels"/>, once run.</summary>
    public LabelScoringReport? LabelScores { get; private set; }
    /// <summary>Result of <see cref="WriteDashboard"/>, once run.</summary>
    public DemoDashboard? Dashboard { get; private set; }
    /// <summary>Result of <see cref="InspectPrompt"/>, once run.</summary>
    public DemoPromptView? PromptView { get; private set; }
    /// <summary>Result of <see cref="Steer"/>, once run.</summary>
    public DemoSteering? Steering { get; private set; }

    /// <summary>Writes the training stories (enough for <see cref="DemoOptions.TrainTokens"/>) and the held-out stories.</summary>
    public DemoCorpus GenerateCorpus()
    {
        var dir = Path.Combine(_o.OutDir, "corpus");
        Directory.CreateDirectory(dir);
        long heldOutTokens = Math.Max(Math.Max(_o.EvalTokens, _o.ScoreTokens), _o.DashboardTokens);
        string train = Path.Combine(dir, "train.jsonl"), heldOut = Path.Combine(dir, "heldout.jsonl");
        // The harvest reads the rows of the normalisation estimate and the b_dec sample before the training rows
        // (TrainingPlan.ForModel adds them to the budget), after the first EvalTokens tokens, which the plan holds out for
        // metrics.json: the stories cover all three.
        long trainTokens = WriteStories(train, _o.Seed + 1000,
            _o.EvalTokens + _o.TrainTokens + TrainingPlan.InitializationRows(Settings().Trainer.Clone(), _o.BatchSize));
        long heldTokens = WriteStories(heldOut, _o.Seed + 2000, heldOutTokens);
        return Corpus = new DemoCorpus(train, trainTokens, heldOut, heldTokens);
    }

    /// <summary>Stories until <paramref name="tokens"/> tokens plus their document separators are covered (a story has
    /// about 78 tokens; a few more stories than that are written, so the windows never run short).</summary>
    private static long WriteStories(string path, ulong seed, long tokens)
    {
        int docs = (int)Math.Min(int.MaxValue, tokens / 70 + 16);
        return LabelledCorpus.Write(path, seed, docs);
    }

    private ModelDataOptions Data(string dataset, long tokens) => new()
    {
        ModelPath = ModelPath, DatasetPath = dataset, Tokens = tokens, ContextSize = _o.ContextSize, PrependBos = true, ExcludeSpecialTokens = true,
    };

    /// <summary>The demo's <c>sae train</c> settings.</summary>
    private TrainingSettings Settings() => new()
    {
        Architecture = "topk", K = _o.K, DSae = _o.DSae, BatchSize = _o.BatchSize, Steps = _o.Steps, Seed = (long)_o.Seed,
        Out = SaePath, EvalRows = _o.EvalTokens, Overwrite = true,
    };

    /// <summary>
    /// Prepares the training run exactly as <c>sae train --model M --hook H --dataset train.jsonl --tokens N --arch topk
    /// --k K --dict-size D --exclude-special-tokens</c> does (<see cref="TrainingPlan.ForModel"/>): the model is run on the
    /// training stories and the hook's activations (BOS positions left out) stream through a shuffling buffer of 64 contexts
    /// into the trainer (the rows of metrics.json come from the first contexts, held out of training, as in <c>sae train</c>;
    /// <see cref="Evaluate"/> measures on held-out stories).
    /// </summary>
    public DemoHarvest Harvest()
    {
        var corpus = Corpus ?? throw new InvalidOperationException("generate the corpus first");
        _plan?.Dispose();
        _plan = TrainingPlan.ForModel(Settings(), Data(corpus.TrainPath, _o.TrainTokens), _o.Hook);
        return Harvested = new DemoHarvest(_o.Hook, _o.TrainTokens, _plan.Options.TrainSource.DIn, _plan.Options.Trainer.Steps);
    }

    /// <summary>Trains the TopK SAE (each training token seen once) and writes it to <see cref="SaePath"/> in SAELens
    /// layout.</summary>
    public TrainingRunResult Train(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var plan = _plan ?? throw new InvalidOperationException("prepare the harvest first");
        try
        {
            return Training = plan.Run(progress, cancellationToken);
        }
        finally
        {
            plan.Dispose();
            _plan = null;
        }
    }

    /// <summary>The SAE spliced into the model on held-out stories: reconstruction (FVU, L0, dead share) and downstream
    /// (% CE loss recovered, KL) metrics over <see cref="DemoOptions.EvalTokens"/> tokens.</summary>
    public DownstreamMetrics Evaluate()
    {
        var corpus = Corpus ?? throw new InvalidOperationException("generate the corpus first");
        return Evaluation = ModelPipeline.Evaluate([SaePath], Data(corpus.HeldOutPath, _o.EvalTokens))[0];
    }

    /// <summary>Label scores of the SAE's features and of the hook's dimensions on <see cref="DemoOptions.ScoreTokens"/>
    /// held-out tokens (exactly <c>sae score-labels</c>), written to <see cref="LabelScoresPath"/>.</summary>
    public LabelScoringReport ScoreLabels()
    {
        var corpus = Corpus ?? throw new InvalidOperationException("generate the corpus first");
        var report = AnalysisPipeline.ScoreLabels(SaePath, ModelPath, corpus.HeldOutPath, new LabelScoringOptions { Tokens = _o.ScoreTokens });
        report.WriteJson(LabelScoresPath);
        return LabelScores = report;
    }

    /// <summary>The feature statistics over held-out stories and the dashboard site of the best feature of each of the
    /// <see cref="DemoOptions.DashboardTopFeatures"/> best-captured labels and <see cref="DemoOptions.DashboardRandomFeatures"/>
    /// random alive features.</summary>
    public DemoDashboard WriteDashboard()
    {
        var corpus = Corpus ?? throw new InvalidOperationException("generate the corpus first");
        var scores = LabelScores ?? throw new InvalidOperationException("score the labels first");
        var top = scores.BestFeaturePerLabel().Take(_o.DashboardTopFeatures).Select(f => f.Index).ToList();
        var rest = scores.Features.Where(f => f.Alive && !top.Contains(f.Index)).Select(f => f.Index).ToArray();
        new Random((int)(_o.Seed % int.MaxValue)).Shuffle(rest);
        var random = rest.Take(_o.DashboardRandomFeatures).Order().ToList();
        var report = AnalysisPipeline.Features(SaePath, Data(corpus.HeldOutPath, _o.DashboardTokens),
            new FeatureAnalysisOptions { Features = [.. top, .. random] });
        report.Save(Path.Combine(_o.OutDir, "features"));
        var index = DashboardWriter.Write(report, DashboardPath);
        return Dashboard = new DemoDashboard(index, top, random, report);
    }

    /// <summary>The prompt view of <see cref="DemoOptions.Prompt"/>: its top features and top neurons (hook dimensions).</summary>
    public DemoPromptView InspectPrompt()
    {
        var (sae, pm) = ModelForSae.LoadWithSae(SaePath, ModelPath);
        using (sae)
        using (pm)
        {
            var inspector = new PromptInspector(pm.Model, sae, Tokenizer.FromFolder(ModelPath), pm.Hooks);
            var view = inspector.Inspect(_o.Prompt, _o.PromptTop, neurons: true);
            return PromptView = new DemoPromptView(view, inspector.Notes(view.Features.Select(u => u.Index)), inspector.Hook);
        }
    }

    /// <summary>
    /// The steering example. For each of <see cref="DemoOptions.SteeringLabels"/> in turn, the alive feature whose decoder
    /// direction raises the logits of the label's words most (W_dec·W_U, each feature's logits standardised over the
    /// vocabulary; a word of a label carries it in at least half of its held-out occurrences) is added, from the prompt's
    /// last token on, at each of <see cref="DemoOptions.SteeringScales"/> (× the feature's largest activation on held-out
    /// tokens), on each of <see cref="DemoOptions.SteeringPrompts"/>. Shown: for the first label where some steering puts
    /// more distinct words of the label into the greedy continuation without one token making up half of it, the one that
    /// adds most (the first prompt and smallest scale among equals); when none does, the first steering that changed the
    /// continuation.
    /// </summary>
    public DemoSteering Steer()
    {
        var corpus = Corpus ?? throw new InvalidOperationException("generate the corpus first");
        var scores = LabelScores ?? throw new InvalidOperationException("score the labels first");
        var (sae, pm) = ModelForSae.LoadWithSae(SaePath, ModelPath);
        using (sae)
        using (pm)
        {
            var tokenizer = Tokenizer.FromFolder(ModelPath);
            var wordLabels = WordLabels(corpus.HeldOutPath, tokenizer);
            var alive = scores.Features.Where(f => f.Alive).Select(f => f.Index).ToList();
            var candidates = new List<(string Label, int Feature, IReadOnlyList<string> Words)>();
            using (var logits = LogitEffects(pm.Model, sae, alive, Math.Min(tokenizer.VocabSize, pm.Model.Config.DVocab)))
                foreach (var label in _o.SteeringLabels)
                {
                    var words = wordLabels.Where(kv => kv.Value.Contains(label)).Select(kv => (long)kv.Key).Order().ToArray();
                    if (words.Length == 0) continue;
                    using var scope = NewDisposeScope();
                    var mean = logits.index_select(1, tensor(words)).mean([1]);                     // [alive]
                    int best = (int)mean.argmax().item<long>();
                    var top = logits[best].index_select(0, tensor(words)).topk(Math.Min(3, words.Length)).indexes.data<long>()
                        .Select(i => tokenizer.Decode([(int)words[i]])).ToList();
                    candidates.Add((label, alive[best], top));
                }
            if (candidates.Count == 0) throw new SaeSharpException($"no word of the labels {string.Join(", ", _o.SteeringLabels)} occurs in {corpus.HeldOutPath}");
            var maxActs = MaxActivations(pm, sae, candidates.Select(c => c.Feature).Distinct().ToList());
            var hooked = new HookedSaeTransformer(pm.Model);
            var options = new GenerationOptions { Temperature = 0, EosTokenIds = pm.Model.StopTokenIds, Hooks = pm.Hooks };
            long bos = tokenizer.BosTokenId ?? throw new SaeSharpException("the tokenizer has no BOS token");
            // (text, distinct words of the label, fluent: no token makes up more than half of the continuation)
            (string Text, int LabelWords, bool Fluent) Continue(long[] ids, string label, IEnumerable<Intervention> edits)
            {
                using var scope = NewDisposeScope();
                using var prompt = tensor(ids).unsqueeze(0);
                using var g = hooked.Generate(prompt, _o.SteeringTokens, options, edits);
                var generated = g.Tokens[0].narrow(0, ids.Length, g.Tokens.shape[1] - ids.Length).data<long>().Select(v => (int)v).ToArray();
                int labelWords = generated.Where(t => wordLabels.TryGetValue(t, out var ls) && ls.Contains(label)).Distinct().Count();
                bool fluent = generated.Length == 0 || generated.GroupBy(t => t).Max(g => g.Count()) * 2 <= generated.Length;
                return (tokenizer.Decode(generated, skipSpecialTokens: true), labelWords, fluent);
            }
            DemoSteering? fallback = null;
            foreach (var (label, feature, words) in candidates)
            {
                DemoSteering? best = null;
                foreach (var text in _o.SteeringPrompts)
                {
                    var ids = new[] { bos }.Concat(tokenizer.Encode(text).Select(i => (long)i)).ToArray();
                    var positions = Enumerable.Range(ids.Length - 1, _o.SteeringTokens + 1).Select(p => (long)p).ToArray();
                    var before = Continue(ids, label, []);
                    foreach (var m in _o.SteeringScales)
                    {
                        double scale = m * maxActs[feature];
                        var after = Continue(ids, label, [new Interventions.Steering(sae, feature, scale) { Positions = positions }]);
                        var example = new DemoSteering(feature, label, words, scores.Features[feature].Best, scale, m, text,
                            before.Text, after.Text, before.LabelWords, after.LabelWords);
                        int gain = after.LabelWords - before.LabelWords;
                        if (gain > 0 && after.Fluent && (best is null || gain > best.LabelWordsAfter - best.LabelWordsBefore)) best = example;
                        fallback ??= after.Text != before.Text ? example : null;
                    }
                }
                if (best is not null) return Steering = best;
            }
            return Steering = fallback ?? throw new SaeSharpException("no steering changed the continuation");
        }
    }

    /// <summary>W_dec·W_U of <paramref name="features"/> over the first <paramref name="vocab"/> tokens, each row standardised
    /// (zero mean, unit variance over the vocabulary), [features, vocab].</summary>
    private Tensor LogitEffects(HookedTransformer model, Sae sae, IReadOnlyList<int> features, int vocab)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var l = FeatureWeights.ResidualDirections(model, sae, _o.Hook, features).matmul(FeatureWeights.FoldedUnembed(model)).narrow(1, 0, vocab);
        return ((l - l.mean([1], keepdim: true)) / l.std(1, keepdim: true)).MoveToOuterDisposeScope();
    }

    /// <summary>Each feature's largest activation over the held-out dashboard tokens (1 for a feature that never fired).</summary>
    private Dictionary<int, double> MaxActivations(ProcessedModel pm, Sae sae, IReadOnlyList<int> features)
    {
        var tokenizer = Tokenizer.FromFolder(ModelPath);
        var report = FeatureAnalysis.Run(pm.Model, sae, ModelPipeline.Windows(tokenizer, Corpus!.HeldOutPath, _o.ContextSize, prependBos: true),
            new FeatureAnalysisOptions
            {
                Features = features, ModelHooks = pm.Hooks, MaxContexts = ModelPipeline.ContextsFor(_o.DashboardTokens, _o.ContextSize),
                ExcludeTokenIds = ExcludedTokens.SpecialTokenIds(tokenizer),
            });
        return report.Features.ToDictionary(f => f.Feature, f => f.MaxActivation > 0 ? (double)f.MaxActivation : 1.0);
    }

    /// <summary>For each token id, the labels it carries in at least half of its occurrences in a labelled corpus.</summary>
    private static Dictionary<int, HashSet<string>> WordLabels(string datasetPath, ITextTokenizer tokenizer)
    {
        var seen = new Dictionary<int, int>();
        var counts = new Dictionary<(int, string), int>();
        foreach (var row in LabelledCorpus.Read(datasetPath))
        {
            var tokens = tokenizer.Encode(row.Text);
            for (int i = 0; i < Math.Min(tokens.Length, row.Labels.Count); i++)
            {
                seen[tokens[i]] = seen.GetValueOrDefault(tokens[i]) + 1;
                foreach (var l in row.Labels[i]) counts[(tokens[i], l)] = counts.GetValueOrDefault((tokens[i], l)) + 1;
            }
        }
        var result = new Dictionary<int, HashSet<string>>();
        foreach (var ((token, label), n) in counts)
            if (2 * n >= seen[token]) (result.TryGetValue(token, out var set) ? set : result[token] = []).Add(label);
        return result;
    }

    /// <summary>Every stage in order; <paramref name="progress"/> gets the training progress.</summary>
    public void RunAll(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        GenerateCorpus();
        Harvest();
        var trained = Train(progress, cancellationToken);
        if (trained.Saes.Count == 0) throw new OperationCanceledException("training stopped before the end");
        Evaluate();
        ScoreLabels();
        WriteDashboard();
        InspectPrompt();
        Steer();
        WriteSummary();
    }

    /// <summary>Writes demo.json: the figures of every stage that ran.</summary>
    public string WriteSummary()
    {
        var root = new JsonObject
        {
            ["model"] = ModelPath, ["hook"] = _o.Hook, ["sae"] = SaePath, ["d_sae"] = _o.DSae, ["k"] = _o.K,
            ["train_tokens"] = Training?.Tokens, ["steps"] = Training?.Steps,
        };
        if (Evaluation is { } e)
            root["eval"] = new JsonObject
            {
                ["tokens"] = e.Tokens, ["fvu"] = e.Reconstruction.Fvu, ["l0"] = e.L0, ["dead_fraction"] = e.Reconstruction.DeadFraction,
                ["ce_loss_score"] = e.CeLossScore, ["kl_div_with_sae"] = e.KlDivWithSae,
                ["ce_loss_without_sae"] = e.CeLossWithoutSae, ["ce_loss_with_sae"] = e.CeLossWithSae, ["ce_loss_with_ablation"] = e.CeLossWithAblation,
            };
        if (LabelScores is { } s)
        {
            static JsonObject Summary(LabelScoreSummary x) => new()
            {
                ["alive"] = x.Alive, ["units"] = x.Units, ["share_f1_at_least_0_8"] = x.ShareF1AtLeast08, ["share_f1_at_least_0_5"] = x.ShareF1AtLeast05,
                ["mean_best_f1"] = x.MeanBestF1, ["labels_covered_f1_0_8"] = x.LabelsCovered, ["labels_scored"] = x.LabelsScored,
            };
            root["label_scores"] = new JsonObject
            {
                ["file"] = LabelScoresPath, ["tokens"] = s.Tokens, ["features"] = Summary(s.FeatureSummary), ["neurons"] = Summary(s.NeuronSummary),
            };
        }
        if (Dashboard is { } d)
            root["dashboard"] = new JsonObject
            {
                ["index"] = d.IndexPath,
                ["top_features"] = new JsonArray(d.TopFeatures.Select(i => (JsonNode)i).ToArray()),
                ["random_features"] = new JsonArray(d.RandomFeatures.Select(i => (JsonNode)i).ToArray()),
            };
        if (Steering is { } st)
            root["steering"] = new JsonObject
            {
                ["feature"] = st.Feature, ["label"] = st.Label, ["top_words"] = new JsonArray(st.TopWords.Select(w => (JsonNode)w).ToArray()),
                ["fires_on"] = st.FiresOn?.Label, ["fires_on_f1"] = st.FiresOn?.F1, ["scale"] = st.Scale, ["scale_in_max_activations"] = st.ScaleInMaxActivations,
                ["prompt"] = st.Prompt, ["before"] = st.Before, ["after"] = st.After,
                ["label_words_before"] = st.LabelWordsBefore, ["label_words_after"] = st.LabelWordsAfter,
            };
        var path = Path.Combine(_o.OutDir, SummaryFile);
        AtomicFile.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    /// <summary>Closes a prepared training run that was not run.</summary>
    public void Dispose()
    {
        _plan?.Dispose();
        _plan = null;
    }
}
