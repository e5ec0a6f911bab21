using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Evaluation;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>
/// An SAE at a mixture-of-experts expert's hook (<c>blocks.L.mlp.experts.E.hook_*</c>) sees only the tokens routed to
/// expert E, as TransformerLens computes the expert on those tokens only: the harvest (training source, SaeSharp cache),
/// the evaluation's reconstruction rows and the feature statistics leave out the zero rows of the other tokens. The
/// expected rows are read independently from the model's own hooks: the expert's [batch, pos, d_mlp] hook at the
/// positions whose <c>hook_expert_indices</c> hold E, in token order. Tiny transformers-written checkpoints:
/// tests/data/hf_models/mixtral (4 experts, top 2) and qwen3_moe (6 experts, top 2); the first test also olmoe (6, top 3) and
/// gpt_oss / gpt_oss-mxfp4 (4, top 2).
/// </summary>
public class ExpertRoutingTests : ModelTestBase
{
    /// <summary>Windows per model run in every harvest here, and per shard of the SaeSharp cache.</summary>
    private const int Batch = 3;

    private static HookedTransformer Load(string family) => ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));

    private static List<long[]> Windows(int count = 6, int ctx = 12, int seed = 3)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, ctx).Select(_ => (long)rng.Next(3, 128)).ToArray()).ToList();
    }

    /// <summary>The expert's hook rows at the positions routed to it (and whose token is not <paramref name="exclude"/>), in
    /// window then position order, with their tokens; and the number of positions in all.</summary>
    private static (Tensor Rows, long[] Tokens, long Positions) Routed(HookedTransformer model, List<long[]> windows, int layer, int expert,
        string hookKind = "hook_post", long? exclude = null)
    {
        string hook = $"blocks.{layer}.mlp.experts.{expert}.{hookKind}", indices = $"blocks.{layer}.mlp.hook_expert_indices";
        int b = windows.Count, s = windows[0].Length;
        // Run in the harvest's groups of Batch windows: another batch size may round differently.
        var acts = new List<Tensor>();
        var chosens = new List<Tensor>();
        foreach (var group in windows.Chunk(Batch))
        {
            var (_, cache) = model.RunWithCache(tensor(group.SelectMany(w => w).ToArray()).view(group.Length, s), [hook, indices]);
            using var _ = cache;
            acts.Add(cache[hook].reshape(group.Length * s, -1).clone());
            chosens.Add(cache[indices].reshape(group.Length * s, -1).clone());
        }
        var act = cat(acts, 0);
        var chosen = cat(chosens, 0);
        long k = chosen.shape[1];
        var c = chosen.data<long>().ToArray();
        var keep = new List<long>();
        var kept = new List<long>();
        for (long i = 0; i < b * s; i++)
        {
            bool routed = false;
            for (long j = 0; j < k; j++) routed |= c[i * k + j] == expert;
            long token = windows[(int)(i / s)][i % s];
            if (routed && token != exclude) { keep.Add(i); kept.Add(token); }
        }
        return (act.index_select(0, tensor(keep.ToArray())).to(ScalarType.Float32).clone(), kept.ToArray(), (long)b * s);
    }

    [Theory]
    [InlineData("mixtral", 0, 2, "hook_post")]
    [InlineData("mixtral", 1, 0, "hook_gate")]
    [InlineData("qwen3_moe", 1, 5, "hook_pre")]
    [InlineData("olmoe", 1, 4, "hook_post")]
    [InlineData("gpt_oss", 2, 3, "hook_post")]
    [InlineData("gpt_oss-mxfp4", 3, 1, "hook_gate")]
    public void The_training_source_and_the_cache_hold_the_routed_tokens_rows_in_token_order(string family, int layer, int expert, string kind)
    {
        using var model = Load(family);
        var windows = Windows();
        string hook = $"blocks.{layer}.mlp.experts.{expert}.{kind}";
        var (expected, tokens, positions) = Routed(model, windows, layer, expert, kind);
        Assert.InRange(expected.shape[0], 1, positions - 1);   // some tokens are routed elsewhere: the test can tell

        using var source = new ModelActivationSource(model, new HarvestSpec(hook), () => windows,
            new ModelActivationSourceOptions { ContextSize = 12, BatchSizePrompts = Batch, BufferContexts = 8, Shuffle = false, MixingFraction = 0 });
        var served = new List<Tensor>();
        while (source.Next(1000) is { } batch) served.Add(batch.Input);
        var rows = cat(served, 0);
        Assert.Equal(expected.shape, rows.shape);
        Assert.True(Same(rows, expected), "the source's rows are not the expert's routed rows in token order");

        var m = ActivationCacheFolder.Write(Sub("cache"), model, new HarvestSpec(hook), windows,
            new ActivationCacheOptions { ContextSize = 12, BatchSizePrompts = Batch, ContextsPerShard = Batch });
        Assert.Equal(expected.shape[0], m.TotalRows);
        var shards = m.Shards.Select(sh => SafeTensors.Load(Path.Combine(Sub("cache"), sh.File))).ToList();
        Assert.True(Same(cat(shards.Select(sh => sh["activations"]).ToList(), 0), expected));
        Assert.Equal(tokens, cat(shards.Select(sh => sh["token_ids"]).ToList(), 0).data<long>().ToArray());
    }

    [Fact]
    public void Routing_and_token_exclusion_both_drop_positions()
    {
        using var model = Load("mixtral");
        var windows = Windows();
        var (routed, routedTokens, _) = Routed(model, windows, 0, 2);
        long excluded = routedTokens[0];
        var (expected, _, _) = Routed(model, windows, 0, 2, exclude: excluded);
        Assert.True(expected.shape[0] < routed.shape[0]);
        using var source = new ModelActivationSource(model, new HarvestSpec("blocks.0.mlp.experts.2.hook_post"), () => windows,
            new ModelActivationSourceOptions { ContextSize = 12, BatchSizePrompts = Batch, BufferContexts = 8, Shuffle = false, MixingFraction = 0, ExcludeTokenIds = [excluded] });
        var served = new List<Tensor>();
        while (source.Next(1000) is { } batch) served.Add(batch.Input);
        var rows = cat(served, 0);
        Assert.True(Same(rows, expected));
    }

    [Fact]
    public void A_hook_outside_the_experts_keeps_every_position()
    {
        using var model = Load("mixtral");
        var windows = Windows();
        var expected = cat(windows.Chunk(Batch).Select(group =>
        {
            var (_, cache) = model.RunWithCache(tensor(group.SelectMany(w => w).ToArray()).view(group.Length, 12), ["blocks.1.hook_mlp_out"]);
            using var _ = cache;
            return cache["blocks.1.hook_mlp_out"].reshape(group.Length * 12, -1).clone();
        }).ToList(), 0);
        Assert.Equal(72, expected.shape[0]);
        using var source = new ModelActivationSource(model, new HarvestSpec("blocks.1.hook_mlp_out"), () => windows,
            new ModelActivationSourceOptions { ContextSize = 12, BatchSizePrompts = Batch, BufferContexts = 8, Shuffle = false, MixingFraction = 0 });
        var served = new List<Tensor>();
        while (source.Next(1000) is { } batch) served.Add(batch.Input);
        Assert.True(Same(cat(served, 0), expected));
    }

    /// <summary>Bit-identical: same shape and every element equal.</summary>
    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static Sae Identity(string hook, int dIn, double decoderScale = 1)
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, ApplyBDecToInput = false };
        cfg.Metadata.HookName = hook;
        var sae = SaeTestUtil.Identity(cfg);
        using var _ = no_grad();
        sae.WDec.mul_(decoderScale);
        return sae;
    }

    [Fact]
    public void Eval_counts_the_routed_rows_and_splices_only_there_and_CE_and_KL_count_every_position()
    {
        using var model = Load("mixtral");
        var windows = Windows();
        const string hook = "blocks.0.mlp.experts.2.hook_post";
        var (x, _, positions) = Routed(model, windows, 0, 2);
        long n = x.shape[0];
        using var exact = Identity(hook, 48);
        using var half = Identity(hook, 48, 0.5);                 // x̂ = x / 2
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(exact, Name: "exact"), new DownstreamTarget(half, Name: "half")], windows,
            new DownstreamEvalOptions { BatchSizePrompts = Batch });

        // Hand-computed over the routed rows only: L0 of the pair [I, −I] is each row's nonzero coordinates; FVU of x/2 is
        // Σ‖x/2‖² / Σ‖x − x̄‖² (zero rows would lower L0 and move the mean).
        var xd = x.to(ScalarType.Float64);
        double l0 = xd.ne(0).sum().item<long>() / (double)n;
        double fvu = (xd * 0.5).pow(2).sum().item<double>() / (xd - xd.mean([0])).pow(2).sum().item<double>();
        foreach (var m in r)
        {
            Assert.Equal(n, m.Reconstruction.Rows);
            Assert.Equal(l0, m.Reconstruction.L0, 9);
            Assert.Equal(positions, m.Tokens);                    // CE and KL: every position
            Assert.Equal(n, (long)m.ToJson()["token_stats"]!["total_tokens_eval_reconstruction"]!);
        }
        Assert.Equal(0, r[0].Reconstruction.Fvu, 9);
        Assert.Equal(fvu, r[1].Reconstruction.Fvu, 6);

        // The exact SAE leaves the model as it was; x/2 at the routed tokens is the model with the expert's hook halved
        // (the other tokens' rows do not reach the model), KL(clean ‖ halved) averaged over every position.
        Assert.Equal(r[0].CeLossWithoutSae, r[0].CeLossWithSae, 5);
        Assert.True(r[0].KlDivWithSae < 1e-6, $"KL {r[0].KlDivWithSae}");
        var tokens = tensor(windows.SelectMany(w => w).ToArray()).view(6, 12);
        var clean = model.Run(tokens, new RunOptions()).Logits!.to(ScalarType.Float64).log_softmax(-1);
        var halved = model.Run(tokens, new RunOptions { Hooks = [(hook, a => a * 0.5)] }).Logits!.to(ScalarType.Float64).log_softmax(-1);
        double kl = (clean.exp() * (clean - halved)).sum(-1).mean().item<double>();
        Assert.True(kl > 1e-6, "halving the expert changes the model: the test can tell");
        Assert.Equal(kl, r[1].KlDivWithSae, 6);
    }

    [Fact]
    public void Feature_densities_are_over_the_routed_tokens()
    {
        using var model = Load("mixtral");
        var windows = Windows();
        const string hook = "blocks.1.mlp.experts.3.hook_post";
        var (x, _, _) = Routed(model, windows, 1, 3);
        using var sae = Identity(hook, 48);
        var report = FeatureAnalysis.Run(model, sae, windows, new FeatureAnalysisOptions { Features = [0, 1, 2, 50], BatchSizePrompts = Batch });
        Assert.Equal(x.shape[0], report.Tokens);
        // Feature j < d_in is relu(x_j), feature d_in + j is relu(−x_j): density = its positive rows / routed rows.
        var fired = new[] { x[.., 0] > 0, x[.., 1] > 0, x[.., 2] > 0, x[.., 2] < 0 };
        for (int i = 0; i < 4; i++)
            Assert.Equal(fired[i].sum().item<long>() / (double)x.shape[0], report.Features[i].Density, 12);
    }

    [Fact]
    public void The_prompt_view_shows_no_feature_at_the_tokens_routed_elsewhere()
    {
        string dir = Sub("mixtral");
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "config.json", "model.safetensors" })
            File.Copy(TestPaths.Data("hf_models", "mixtral", f), Path.Combine(dir, f));
        SentencePieceTokenizerTests.WriteTokenizer(dir);
        using var model = ModelLoader.FromPretrained(dir);
        const string hook = "blocks.0.mlp.experts.1.hook_post";
        using var sae = Identity(hook, 48);
        using (no_grad()) sae.BEnc.fill_(0.1);                   // fires on a zero row too: only the routing can hide it
        var inspector = new PromptInspector(model, sae, Tokenizer.FromFolder(dir), prependBos: false);
        var tokens = inspector.Tokenize("a b ab ba aab abb ba a ab b");
        // The hook's value at every position ([1, pos, 48], zero where the token went to other experts) and the routing.
        var (_, cache) = model.RunWithCache(tensor(tokens).view(1, -1), [hook, "blocks.0.mlp.hook_expert_indices"]);
        using var _ = cache;
        var x = cache[hook][0];
        var routed = cache["blocks.0.mlp.hook_expert_indices"][0].eq(1).any(-1).data<bool>().ToArray();
        Assert.Contains(false, routed);
        Assert.Contains(true, routed);
        var view = inspector.Inspect("prompt", tokens, top: 96, skipPrefix: 0);
        Assert.Equal(96, view.Features.Count);
        foreach (var u in view.Features)
        {
            // Feature j < 48 is relu(x_j + 0.1), 48 + j relu(−x_j + 0.1); nothing at a token routed elsewhere.
            var xj = x[.., u.Index % 48].data<float>().ToArray();
            for (int p = 0; p < tokens.Length; p++)
                Assert.Equal(routed[p] ? Math.Max(0, (u.Index < 48 ? xj[p] : -xj[p]) + 0.1f) : 0f, u.Acts[p], 5);
        }
    }

    [Fact]
    public void A_SAELens_cache_of_an_expert_hook_is_refused()
    {
        using var model = Load("mixtral");
        var e = Assert.Throws<SaeSharpException>(() => SaeLensActivationCache.Write(Sub("saelens"), model,
            new HarvestSpec("blocks.0.mlp.experts.2.hook_post"), Windows(), new SaeLensCacheOptions { ContextSize = 12 }));
        Assert.Contains("expert", e.Message);
        Assert.False(Directory.Exists(Sub("saelens")));
    }

    /// <summary><c>sae score-labels</c> (<see cref="LabelScoring.Run"/>) at an expert's hook scores the labelled tokens routed
    /// to the expert only, as <c>sae features</c> counts them: with the identity SAE (feature j fires where x_j &gt; 0, feature
    /// d + j where x_j &lt; 0) each feature's fire rate is its share of those tokens, counted here from the model's own expert
    /// and router hooks; the zero rows of the other tokens would dilute every rate. The corpus: a word-level tokenizer of 40
    /// words (ids 2..41 of the tiny Mixtral's 128) and documents of random words labelled by their parity.</summary>
    [Fact]
    public void Score_labels_at_an_expert_hook_scores_the_routed_tokens_only()
    {
        using var model = Load("mixtral");
        const int layer = 1, expert = 3, ctx = 16, batch = 4;
        string hook = $"blocks.{layer}.mlp.experts.{expert}.hook_post", indices = $"blocks.{layer}.mlp.hook_expert_indices";
        string dir = Sub("labels");
        Directory.CreateDirectory(dir);
        var words = Enumerable.Range(0, 40).Select(i => $"w{i}").ToList();
        WordLevelTokenizer.WriteTokenizerJson(Path.Combine(dir, "tokenizer.json"), ["<bos>", "<unk>", .. words], ["<bos>", "<unk>"], "<unk>");
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": "<bos>", "eos_token": "<bos>", "unk_token": "<unk>"}""");
        var tokenizer = Tokenizer.FromFolder(dir);
        var rng = new Random(11);
        string corpus = Path.Combine(dir, "corpus.jsonl");
        File.WriteAllLines(corpus, Enumerable.Range(0, 12).Select(_ =>
        {
            var doc = Enumerable.Range(0, 9).Select(_ => rng.Next(words.Count)).ToArray();
            return System.Text.Json.JsonSerializer.Serialize(new
            {
                text = string.Join(" ", doc.Select(w => words[w])),
                labels = doc.Select(w => new[] { w % 2 == 0 ? "parity:even" : "parity:odd" }).ToArray(),
            });
        }));
        var cfg = new SaeConfig { DIn = model.Config.DMlp };
        cfg.Metadata.HookName = hook;
        using var sae = SaeTestUtil.Identity(cfg);
        var report = LabelScoring.Run(sae, model, null, tokenizer, corpus, new LabelScoringOptions { ContextSize = ctx, BatchSize = batch });

        // Independently: the expert's rows at the labelled positions whose router row holds the expert.
        var (windows, labels, _) = LabelScoring.LabelledWindows(corpus, tokenizer, ctx, long.MaxValue);
        int d = cfg.DIn;
        var fires = new long[2 * d];
        long routed = 0, labelled = 0;
        foreach (var group in Enumerable.Range(0, windows.Count).Chunk(batch).SelectMany(c => c.GroupBy(w => windows[w].Length)))
        {
            var idx = group.ToArray();
            int s = windows[idx[0]].Length;
            var (_, cache) = model.RunWithCache(tensor(idx.SelectMany(w => windows[w]).ToArray()).view(idx.Length, s), [hook, indices]);
            using var _ = cache;
            var x = cache[hook].to(ScalarType.Float32).reshape(idx.Length * s, d).data<float>().ToArray();
            var chosen = cache[indices].reshape(idx.Length * s, -1);
            long k = chosen.shape[1];
            var c = chosen.data<long>().ToArray();
            for (int bi = 0; bi < idx.Length; bi++)
                for (int p = 0; p < s; p++)
                {
                    if (labels[idx[bi]][p] is null) continue;
                    labelled++;
                    long row = (long)bi * s + p;
                    if (!Enumerable.Range(0, (int)k).Any(j => c[row * k + j] == expert)) continue;
                    routed++;
                    for (int j = 0; j < d; j++)
                    {
                        if (x[row * d + j] > 0) fires[j]++;
                        if (x[row * d + j] < 0) fires[d + j]++;
                    }
                }
        }
        Assert.Equal(12 * 9, labelled);
        Assert.InRange(routed, 1, labelled - 1);   // some labelled tokens go to other experts: the test can tell
        Assert.Equal(routed, report.Tokens);
        Assert.Equal(routed, report.LabelCounts.Values.Sum());
        Assert.Equal(2 * d, report.Features.Count);
        Assert.Contains(fires, n => n > 0);
        for (int j = 0; j < 2 * d; j++) Assert.Equal((double)fires[j] / routed, report.Features[j].FireRate, 9);
        // The neurons (the hook's own dimensions) are scored on the same tokens: a neuron's fire rate is its share of x_j > 0.
        for (int j = 0; j < d; j++) Assert.Equal((double)fires[j] / routed, report.Neurons[j].FireRate, 9);
    }
}
