using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Interventions.CrossLayerAttributionTests;

namespace SaeSharp.Tests.Interventions;

/// <summary>
/// circuit-tracer's <c>feature_intervention</c> on tiny GPT-2s with random CLTs in its files: no-op interventions, the
/// attribution graph's edges as direct effects, decoder rows added by hand, and generation.
/// </summary>
public class CltInterventionTests : CltTestBase
{
    /// <summary>The clean features [pos, F] of every layer.</summary>
    private static Tensor[] CleanFeatures(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens)
    {
        var names = Enumerable.Range(0, Layers).Select(l => $"blocks.{l}.ln2.hook_normalized").ToList();
        var (_, cache) = model.RunWithCache(tokens, names);
        var f = Enumerable.Range(0, Layers).Select(l => clt.EncodeLayer(cache[names[l]][0], l)).ToArray();
        cache.Dispose();
        return f;
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void Setting_features_to_their_clean_values_changes_nothing(bool freeze, bool direct)
    {
        using var model = Model64(seed: 3);
        var (clt, _) = MakeClt(seed: 4);
        using var _c = clt;
        var f = CleanFeatures(model, clt, Prompt);
        // Every feature of position 2 in both layers, and one feature everywhere (its clean value differs by position, so
        // per position), set to what it already is.
        var set = new List<CltFeatureIntervention>();
        for (int l = 0; l < Layers; l++)
            for (int k = 0; k < Features; k++) set.Add(new(l, 2, k, f[l][2, k].item<double>()));
        for (int p = 0; p < 6; p++) set.Add(new(0, p, 3, f[0][p, 3].item<double>()));
        using var result = CltInterventions.FeatureIntervention(model, clt, Prompt, set,
            new CltInterventionOptions { FreezeAttention = freeze, DirectEffects = direct });
        using var clean = model.Forward(Prompt);
        Assert.Equal([1, 6, 50], result.Logits.shape);
        Assert.True((result.Logits - clean).abs().max().item<double>() < 1e-10);
        Assert.Equal([Layers, 6, Features], result.Activations.shape);
        for (int l = 0; l < Layers; l++) Assert.True((result.Activations[l] - f[l]).abs().max().item<double>() < 1e-10);
    }

    [Fact]
    public void Direct_effects_change_features_and_logits_by_the_graph_edges()
    {
        // With every layer constrained (patterns, norm scales and MLP outputs frozen), setting a feature s from a to a(1 + δ)
        // changes each downstream feature's pre-activation and each centred logit by δ·A[t, s]: the graph's edge per unit of
        // the source's activation.
        using var model = Model64(seed: 5);
        var (clt, _) = MakeClt(seed: 6);
        using var _c = clt;
        using var g = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 3, LogitProbability = 1, BatchSize = 64 });
        var options = new CltInterventionOptions { DirectEffects = true, ApplyActivationFunction = false };
        using var baseline = CltInterventions.FeatureIntervention(model, clt, Prompt, [], options);
        var row = g.AdjacencyMatrix[g.LogitNode(0)].data<double>().ToArray();
        var sources = Enumerable.Range(0, g.NFeatures).Where(i => g.ActiveFeatures[g.SelectedFeatures[i]].Layer == 0)
            .OrderByDescending(i => Math.Abs(row[i])).Take(3).ToList();
        Assert.Equal(3, sources.Count);
        const double delta = -3;   // set to −2× its activation
        int edges = 0;
        foreach (int s in sources)
        {
            var n = g.ActiveFeatures[g.SelectedFeatures[s]];
            using var after = CltInterventions.FeatureIntervention(model, clt, Prompt,
                [new CltFeatureIntervention(n.Layer, n.Position, n.Feature, n.Activation * (1 + delta))], options);
            for (int t = 0; t < g.NFeatures; t++)
            {
                var tn = g.ActiveFeatures[g.SelectedFeatures[t]];
                if (tn.Layer == 0) continue;   // constrained: layer 0's own features see no change of their inputs
                double change = (after.Activations[tn.Layer, tn.Position, tn.Feature] - baseline.Activations[tn.Layer, tn.Position, tn.Feature]).item<double>();
                double a = g.AdjacencyMatrix[t, s].item<double>();
                Assert.True(Math.Abs(change - delta * a) < 1e-9 * Math.Max(1, Math.Abs(change)), $"{g.NodeLabel(s)} → {g.NodeLabel(t)}: A = {a}, intervention {change / delta}");
                if (Math.Abs(a) > 1e-6) edges++;
            }
            for (int k = 0; k < g.LogitTokens.Count; k++)
            {
                var last = after.Logits[0, -1];
                var last0 = baseline.Logits[0, -1];
                double change = (last[g.LogitTokens[k]] - last.mean()).item<double>() - (last0[g.LogitTokens[k]] - last0.mean()).item<double>();
                double a = g.AdjacencyMatrix[g.LogitNode(k), s].item<double>();
                Assert.True(Math.Abs(change - delta * a) < 1e-9 * Math.Max(1, Math.Abs(change)), $"{g.NodeLabel(s)} → logit {k}: A = {a}, intervention {change / delta}");
                if (Math.Abs(a) > 1e-6) edges++;
            }
        }
        Assert.True(edges >= 6, $"only {edges} non-zero edges checked");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void A_constrained_intervention_adds_the_decoder_rows_to_the_layers_the_feature_writes(bool perLayer, bool onlyLayer1)
    {
        // Direct effects, no skip: each MLP output is the clean one plus Δ·W_dec[0][f, j] (computed here from the reference
        // weights); a transcoder set's layer-0 feature writes layer 0 only, a CLT's layers 0 and 1. With only layer 1
        // constrained, the CLT's write to layer 0 is dropped (circuit-tracer adds deltas inside the range only), and layer
        // 0's MLP, whose input is unchanged, gives its clean output.
        using var model = Model64(seed: 7);
        var (clt, r) = MakeClt(seed: 8, skip: false, perLayer);
        using var _c = clt;
        var f = CleanFeatures(model, clt, Prompt);
        const int pos = 3, feat = 5;
        const double value = 2.5;
        double delta = value - f[0][pos, feat].item<double>();
        var outs = new Dictionary<string, Tensor>();
        var watch = new List<(string, Func<Tensor, Tensor?>)>();
        for (int l = 0; l < Layers; l++)
            foreach (var name in new[] { $"blocks.{l}.hook_resid_mid", $"blocks.{l}.hook_resid_post" })
                watch.Add((name, t => { outs[name] = t.clone().DetachFromDisposeScope(); return null; }));
        using var cleanRun = model.Run(Prompt, new RunOptions { CacheNames = Enumerable.Range(0, Layers).Select(l => $"blocks.{l}.hook_mlp_out") }).Cache!;
        using var result = CltInterventions.FeatureIntervention(model, clt, Prompt, [new CltFeatureIntervention(0, pos, feat, value)],
            onlyLayer1 ? new CltInterventionOptions { ConstrainedLayers = (1, 2) } : new CltInterventionOptions { DirectEffects = true }, watch);
        for (int l = 0; l < Layers; l++)
        {
            var mlpOut = (outs[$"blocks.{l}.hook_resid_post"] - outs[$"blocks.{l}.hook_resid_mid"])[0];
            var expected = cleanRun[$"blocks.{l}.hook_mlp_out"][0].clone();
            if (perLayer ? l == 0 : !(onlyLayer1 && l == 0))
                expected[pos] += tensor(r.WDec[0][feat][l].Select(v => (double)(float)v).ToArray()) * delta;
            Assert.True((mlpOut - expected).abs().max().item<double>() < 1e-10, $"layer {l}");
        }
        // The feature itself reads as the value set only through the returned deltas, not its activation: constrained
        // layers keep layer 0's input clean.
        Assert.Equal(f[0][pos, feat].item<double>(), result.Activations[0, pos, feat].item<double>(), 12);
    }

    [Fact]
    public void Iterative_patching_equals_a_run_with_the_decoder_rows_added_by_hand()
    {
        // Without freezing, a layer-0 CLT feature set to v adds (v − a)·W_dec[0][f, j] at every output hook j (a its clean
        // activation: layer 0 reads the clean input); the logits equal a plain run with those hooks.
        using var model = Model64(seed: 9);
        var (clt, r) = MakeClt(seed: 10);
        using var _c = clt;
        var f = CleanFeatures(model, clt, Prompt);
        const int pos = 4, feat = 2;
        const double value = -1.5;
        double delta = value - f[0][pos, feat].item<double>();
        using var result = CltInterventions.FeatureIntervention(model, clt, Prompt, [new CltFeatureIntervention(0, pos, feat, value)],
            new CltInterventionOptions { FreezeAttention = false });
        var hooks = Enumerable.Range(0, Layers).Select(l => ($"blocks.{l}.hook_mlp_out", (Func<Tensor, Tensor?>)(y =>
        {
            var z = y.clone();
            z[0, pos] += tensor(r.WDec[0][feat][l].Select(v => (double)(float)v).ToArray()) * delta;
            return z;
        }))).ToList();
        using var manual = model.Run(Prompt, new RunOptions { Hooks = hooks }).Logits!;
        Assert.True((result.Logits - manual).abs().max().item<double>() < 1e-10);
        Assert.True((result.Logits - model.Forward(Prompt)).abs().max().item<double>() > 1e-3, "the intervention changed nothing");
        // Layer 1's features are the intervened run's (they read the changed residual stream).
        Assert.True((result.Activations[1] - f[1]).abs().max().item<double>() > 1e-6);
    }

    [Fact]
    public void Generation_with_no_op_interventions_equals_plain_generation()
    {
        using var model = Model64(seed: 11);
        var (clt, _) = MakeClt(seed: 12);
        using var _c = clt;
        var f = CleanFeatures(model, clt, Prompt);
        var set = Enumerable.Range(0, Features).Select(k => new CltFeatureIntervention(1, 5, k, f[1][5, k].item<double>())).ToList();
        using var result = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, 5);
        using var plain = model.Generate(Prompt, 5, new GenerationOptions { ReturnLogits = true });
        Assert.Equal(plain.Tokens.data<long>().ToArray(), result.Tokens!.data<long>().ToArray());
        Assert.Equal([5, 50], result.Logits.shape);
        Assert.True((result.Logits - plain.Logits![0]).abs().max().item<double>() < 1e-10);
        Assert.Equal([Layers, 6 + 4, Features], result.Activations.shape);
    }

    [Fact]
    public void Open_ended_interventions_reach_every_new_token_as_a_full_run_would()
    {
        // An open-ended intervention (slice(2, None)) without freezing: each new token's logits equal the intervened full run
        // of the sequence so far (KV-cached one-token passes versus whole runs), and its activations too.
        using var model = Model64(seed: 13);
        var (clt, _) = MakeClt(seed: 14);
        using var _c = clt;
        var options = new CltInterventionOptions { FreezeAttention = false };
        CltFeatureIntervention[] set = [new(0, 2, 7, 3.0, Onward: true), new(1, 1, 4, -2.0)];
        using var gen = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, 4, options);
        using var plain = model.Generate(gen.Tokens!.narrow(1, 0, 9), 1, new GenerationOptions { ReturnLogits = true, UseKvCache = false });
        Assert.True((gen.Logits[3] - plain.Logits![0, 0]).abs().max().item<double>() > 1e-3, "the intervention changed nothing");
        var tokens = gen.Tokens!;
        using var whole = CltInterventions.FeatureIntervention(model, clt, tokens.narrow(1, 0, 9), set, options);
        for (int k = 0; k < 4; k++)
        {
            using var run = CltInterventions.FeatureIntervention(model, clt, tokens.narrow(1, 0, 6 + k), set, options);
            Assert.True((gen.Logits[k] - run.Logits[0, -1]).abs().max().item<double>() < 1e-9, $"new token {k}");
        }
        Assert.True((gen.Activations - whole.Activations).abs().max().item<double>() < 1e-9);
    }

    [Fact]
    public void Sampled_generation_draws_each_token_from_the_whole_sequence_intervention_with_one_seeded_generator()
    {
        // Without freezing, each step of a sampled generation is the intervened whole-sequence run of prompt + generated[:t]:
        // the token is drawn from its last row by Generation.Sample with one generator seeded as the options (a hand loop).
        using var model = Model64(seed: 23);
        var (clt, _) = MakeClt(seed: 24);
        using var _c = clt;
        var options = new CltInterventionOptions { FreezeAttention = false };
        CltFeatureIntervention[] set = [new(0, 2, 7, 3.0, Onward: true), new(1, 1, 4, -2.0)];
        var sampling = new GenerationOptions { Temperature = 1.3, TopK = 20, TopP = 0.95, Seed = 7 };
        const int n = 6;
        using var gen = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, n, options, sampling);
        using var generator = new Generator(7);
        var seq = Prompt.clone();
        for (int t = 0; t < n; t++)
        {
            using var run = CltInterventions.FeatureIntervention(model, clt, seq, set, options);
            var last = run.Logits[0, -1];
            Assert.True((gen.Logits[t] - last).abs().max().item<double>() < 1e-9, $"step {t}'s logits");
            using var drawn = Generation.Sample(last.unsqueeze(0), sampling, generator);
            Assert.Equal(drawn.item<long>(), gen.Tokens![0, 6 + t].item<long>());
            var longer = cat([seq, drawn.reshape(1, 1)], 1);
            seq.Dispose();
            seq = longer;
        }
        using (seq) Assert.Equal(seq.data<long>().ToArray(), gen.Tokens!.data<long>().ToArray());
        Assert.Equal(new GenerationRow(6, n, GenerationStop.MaxNewTokens), gen.Row);
        // The first token drawn as EOS: the same draw, then the generation stops there.
        using (var eos = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, n, options, sampling with { EosTokenId = gen.Tokens![0, 6].item<long>() }))
            Assert.Equal(new GenerationRow(6, 1, GenerationStop.Eos), eos.Row);
        // Sampling took place: the greedy continuation of the same interventions differs.
        using var greedy = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, n, options);
        Assert.NotEqual(greedy.Tokens!.data<long>().ToArray(), gen.Tokens!.data<long>().ToArray());
        // Top-k 1 is greedy whatever the temperature.
        using var k1 = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, n, options, sampling with { TopK = 1, TopP = null });
        Assert.Equal(greedy.Tokens!.data<long>().ToArray(), k1.Tokens!.data<long>().ToArray());
    }

    [Fact]
    public void Sampled_generation_with_no_op_interventions_draws_the_plain_generations_tokens()
    {
        // Features set to their clean values (frozen attention, the default) change nothing: with the same seed the intervened
        // generation draws the same random numbers as the plain one, so it samples the same tokens from the same logits.
        using var model = Model64(seed: 25);
        var (clt, _) = MakeClt(seed: 26);
        using var _c = clt;
        var f = CleanFeatures(model, clt, Prompt);
        var set = Enumerable.Range(0, Features).Select(k => new CltFeatureIntervention(0, 3, k, f[0][3, k].item<double>())).ToList();
        var sampling = new GenerationOptions { Temperature = 2.0, Seed = 11, ReturnLogits = true };
        using var gen = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, 6, generation: sampling);
        using var plain = model.Generate(Prompt, 6, sampling);
        Assert.Equal(plain.Tokens.data<long>().ToArray(), gen.Tokens!.data<long>().ToArray());
        Assert.True((gen.Logits - plain.Logits![0]).abs().max().item<double>() < 1e-10);
        using var greedy = model.Generate(Prompt, 6);
        Assert.NotEqual(greedy.Tokens.data<long>().ToArray(), gen.Tokens!.data<long>().ToArray());
    }

    [Theory]
    [InlineData(true, null, null)]
    [InlineData(false, 1, 2)]
    [InlineData(false, 0, 1)]
    public void Generation_with_constrained_layers_starts_from_the_constrained_intervention(bool direct, int? start, int? end)
    {
        // circuit-tracer's feature_intervention_generate constrains the prompt's pass only: the first new token is sampled from
        // feature_intervention's last row with the same range, and the prompt's activations are that run's.
        using var model = Model64(seed: 19);
        var (clt, _) = MakeClt(seed: 20);
        using var _c = clt;
        var options = new CltInterventionOptions { DirectEffects = direct, ConstrainedLayers = start is int s ? (s, end!.Value) : null };
        CltFeatureIntervention[] set = [new(0, 2, 7, 3.0), new(0, 5, 4, -2.0), new(1, 3, 1, 1.5)];
        using var run = CltInterventions.FeatureIntervention(model, clt, Prompt, set, options);
        using var free = CltInterventions.FeatureIntervention(model, clt, Prompt, set);
        Assert.True((run.Logits[0, -1] - free.Logits[0, -1]).abs().max().item<double>() > 1e-6, "constraining changed nothing");
        using var gen = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, 3, options);
        Assert.True((gen.Logits[0] - run.Logits[0, -1]).abs().max().item<double>() < 1e-10);
        Assert.Equal(run.Logits[0, -1].argmax().item<long>(), gen.Tokens![0, 6].item<long>());
        Assert.True((gen.Activations.narrow(1, 0, 6) - run.Activations).abs().max().item<double>() < 1e-10);
        Assert.Equal([3, 50], gen.Logits.shape);
    }

    [Fact]
    public void Generation_with_direct_effects_and_no_op_interventions_equals_plain_generation()
    {
        // Patterns, norm scales and MLP outputs frozen at the clean run's in the prompt's pass replay exactly what that pass
        // computes, and later passes run free: the whole continuation is the plain one.
        using var model = Model64(seed: 21);
        var (clt, _) = MakeClt(seed: 22);
        using var _c = clt;
        var f = CleanFeatures(model, clt, Prompt);
        var set = Enumerable.Range(0, Features).Select(k => new CltFeatureIntervention(0, 4, k, f[0][4, k].item<double>())).ToList();
        using var gen = CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, 4, new CltInterventionOptions { DirectEffects = true });
        using var plain = model.Generate(Prompt, 4, new GenerationOptions { ReturnLogits = true });
        Assert.Equal(plain.Tokens.data<long>().ToArray(), gen.Tokens!.data<long>().ToArray());
        Assert.True((gen.Logits - plain.Logits![0]).abs().max().item<double>() < 1e-10);
    }

    [Fact]
    public void Interventions_free_every_tensor_they_made()
    {
        using var model = Model64(seed: 17);
        var (clt, _) = MakeClt(seed: 18);
        using var _c = clt;
        CltFeatureIntervention[] set = [new(0, 2, 7, 3.0, Onward: true), new(1, 1, 4, -2.0)];
        long leaked = LiveTensors.Leaked(() =>
        {
            foreach (var o in new[] { new CltInterventionOptions(), new CltInterventionOptions { DirectEffects = true }, new CltInterventionOptions { FreezeAttention = false } })
                CltInterventions.FeatureIntervention(model, clt, Prompt, set, o).Dispose();
            CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, 3).Dispose();
            CltInterventions.FeatureInterventionGenerate(model, clt, Prompt, set, 3, new CltInterventionOptions { DirectEffects = true }).Dispose();
        });
        Assert.Equal(0, leaked);
    }

    [Fact]
    public void Bad_interventions_are_named()
    {
        using var model = Model64(seed: 15);
        var (clt, _) = MakeClt(seed: 16);
        using var _c = clt;
        void Fails(string expected, CltFeatureIntervention i, CltInterventionOptions? o = null)
        {
            var e = Assert.Throws<SaeSharpException>(() => CltInterventions.FeatureIntervention(model, clt, Prompt, [i], o));
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }
        Fails("layer 2 is outside 0..1", new(2, 0, 0, 1));
        Fails("feature 12 is outside 0..11", new(0, 0, 12, 1));
        Fails("position 6 is outside the prompt's 0..5", new(0, 6, 0, 1));
        Fails("not a non-empty range", new(0, 0, 0, 1), new CltInterventionOptions { ConstrainedLayers = (1, 1) });
        Fails("not both", new(0, 0, 0, 1), new CltInterventionOptions { ConstrainedLayers = (0, 1), DirectEffects = true });
    }
}
