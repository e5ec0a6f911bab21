using SaeSharp.Analysis;
using SaeSharp.Data;
using SaeSharp.Evaluation;
using SaeSharp.Hooks;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>
/// SAEs that see only some positions of a run: at an MoE expert's hook the tokens routed to the expert (TransformerLens
/// fires the hook [n_routed, d]), and with a <c>seqpos_slice</c> the slice's positions. Expected values are built
/// independently: a temporal SAE given each window's routed rows as its whole sequence (what SAELens's SAE would receive
/// from TransformerLens's hook), and the model run with a hand-written hook that halves the activation at the slice's
/// positions. Tiny checkpoints: tests/data/hf_models/mixtral (4 experts, top 2, d_mlp 48) and a tiny GPT-2 (d_model 16).
/// </summary>
public sealed class ExpertAndSlicedSpliceTests : ModelTestBase
{
    private const string ExpertHook = "blocks.0.mlp.experts.2.hook_post";
    private const string Indices = "blocks.0.mlp.hook_expert_indices";

    private static HookedTransformer Mixtral() => ModelLoader.FromPretrained(TestPaths.Data("hf_models", "mixtral"));

    private static List<long[]> Windows(int count, int ctx, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, ctx).Select(_ => (long)rng.Next(3, 128)).ToArray()).ToList();
    }

    /// <summary>A temporal SAE (relu, untied, two attention layers) with seeded random weights, at <paramref name="hook"/>.</summary>
    private static TemporalSae Temporal(string hook, int dIn)
    {
        var cfg = SaeConfig.FromJson($$$"""
            {"architecture": "temporal", "d_in": {{{dIn}}}, "d_sae": 64, "n_heads": 2, "bottleneck_factor": 8, "n_attn_layers": 2,
             "sae_diff_type": "relu", "tied_weights": false, "apply_b_dec_to_input": true, "metadata": {"hook_name": "{{{hook}}}"}}
            """);
        var sae = (TemporalSae)SaeFactory.Create(cfg);
        var g = new TorchSharp.torch.Generator(7);
        using var _ = no_grad();
        foreach (var (_, p) in sae.named_parameters()) p.copy_(randn(p.shape, generator: g) * 0.3);
        return sae;
    }

    /// <summary>The pair [I, −I] (x̂ = x) with the decoder scaled (x̂ = x·scale) and, with <paramref name="slice"/>, b_dec =
    /// <see cref="Shift"/> (x̂ = x·scale + shift: a layer norm downstream sees the change, as it would not see a scaling).</summary>
    private static Sae Identity(string hook, int dIn, double decoderScale = 1, SeqposSlice? slice = null)
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, ApplyBDecToInput = false };
        cfg.Metadata.HookName = hook;
        if (slice is not null) cfg.Metadata.SetWindowFields(slice, null, null);
        var sae = SaeTestUtil.Identity(cfg);
        using var _ = no_grad();
        sae.WDec.mul_(decoderScale);
        if (slice is not null) sae.BDec.copy_(Shift(dIn));
        return sae;
    }

    private static Tensor Shift(int d) => linspace(-0.5, 0.5, d);

    [Fact]
    public void A_temporal_SAE_at_an_expert_hook_reads_only_the_routed_tokens_as_context()
    {
        using var model = Mixtral();
        using var sae = Temporal(ExpertHook, 48);
        var windows = Windows(3, 10, 5);
        using var scope = NewDisposeScope();
        var tokens = tensor(windows.SelectMany(w => w).ToArray()).view(3, 10);
        var (_, cache) = model.RunWithCache(tokens, [ExpertHook, Indices]);
        using var c = cache;
        var x = cache[ExpertHook].to(ScalarType.Float32);                          // [3, 10, 48], zeros where routed elsewhere
        var routed = cache[Indices].eq(2).any(-1);                                   // [3, 10]
        long n = routed.sum().item<long>();
        Assert.InRange(n, 4, 29);                                                   // some tokens go elsewhere: the test can tell

        // Independently: each window's routed rows as the whole sequence given to the SAE ([1, n_routed, 48], the rows
        // TransformerLens fires the hook with), its codes and reconstruction put back at the routed positions.
        var novel = zeros(3, 10, 64);
        var recon = zeros(3, 10, 48);
        for (int w = 0; w < 3; w++)
        {
            var idx = routed[w].nonzero().squeeze(1);
            if (idx.shape[0] == 0) continue;
            var xw = x[w].index_select(0, idx).unsqueeze(0);
            var (nw, pw) = sae.EncodeWithPredictions(xw);
            novel[w].index_copy_(0, idx, nw[0]);
            recon[w].index_copy_(0, idx, sae.ReconstructWithPredictions(nw, pw)[0]);
        }
        var r3 = routed.unsqueeze(-1);
        // Reading the zero rows of the other tokens as context gives other codes: the test can tell.
        Assert.False(sae.Encode(x).masked_select(r3).allclose(novel.masked_select(r3), 1e-4, 1e-4));

        // Spliced into a run: the codes and the output at the routed tokens.
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(sae, ExpertHook);
        var (_, spliced) = hooked.RunWithCache(tokens, [a.HookName(SaeHookPoints.ActsPost), a.HookName(SaeHookPoints.Output)]);
        using (spliced)
        {
            SaeTestUtil.AssertClose(novel.masked_select(r3), spliced[a.HookName(SaeHookPoints.ActsPost)].masked_select(r3), rtol: 1e-4, atol: 1e-5, what: "hook_sae_acts_post");
            SaeTestUtil.AssertClose(recon.masked_select(r3), spliced[a.HookName(SaeHookPoints.Output)].masked_select(r3), rtol: 1e-4, atol: 1e-5, what: "hook_sae_output");
        }

        // sae eval --model: MSE and L0 over the routed rows, from those codes.
        var m = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows, new DownstreamEvalOptions { BatchSizePrompts = 3 })[0];
        var xr = x.masked_select(r3).to(ScalarType.Float64);
        double mse = (recon.masked_select(r3).to(ScalarType.Float64) - xr).pow(2).sum().item<double>() / (n * 48);
        double l0 = novel.ne(0).logical_and(r3).sum().item<long>() / (double)n;
        Assert.Equal(n, m.Reconstruction.Rows);
        Assert.Equal(mse, m.Reconstruction.Mse, 5);
        Assert.Equal(l0, m.Reconstruction.L0, 9);

        // sae features: densities and maxima over the routed tokens, from those codes.
        var report = FeatureAnalysis.Run(model, sae, windows, new FeatureAnalysisOptions { Features = [.. Enumerable.Range(0, 64)], BatchSizePrompts = 3 });
        Assert.Equal(n, report.Tokens);
        var rows = novel.view(30, 64).index_select(0, routed.view(-1).nonzero().squeeze(1));
        Assert.Contains(Enumerable.Range(0, 64), j => report.Features[j].Density > 0);
        for (int j = 0; j < 64; j++)
        {
            Assert.Equal(rows[.., j].ne(0).sum().item<long>() / (double)n, report.Features[j].Density, 12);
            Assert.Equal(rows[.., j].max().item<float>(), report.Features[j].MaxActivation, 4);
        }
    }

    [Fact]
    public void An_expert_no_token_reached_is_reported_and_the_other_SAEs_keep_their_results()
    {
        using var model = Mixtral();
        var windows = Windows(3, 12, 3);
        // The router never picks expert 3 (its softmax weight set below every other's): no token is routed to it.
        (string, Func<Tensor, Tensor?>) noExpert3 = ("blocks.0.mlp.hook_expert_weights", w => w.index_fill(-1, tensor(new long[] { 3 }), -1.0));
        using var empty = Identity("blocks.0.mlp.experts.3.hook_post", 48);
        using var half = Identity(ExpertHook, 48, 0.5);
        var options = new DownstreamEvalOptions { BatchSizePrompts = 3, ModelHooks = [noExpert3] };
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(empty, Name: "e3"), new DownstreamTarget(half, Name: "e2")], windows, options);

        Assert.NotNull(r[0].NoRows);
        foreach (var part in new[] { "e3", "blocks.0.mlp.experts.3.hook_post", "expert 3 of layer 0", "36 tokens", "more tokens" })
            Assert.Contains(part, r[0].NoRows);
        Assert.Equal(0, r[0].Reconstruction.Rows);
        Assert.True(double.IsNaN(r[0].Mse) && double.IsNaN(r[0].CeLossWithSae) && double.IsNaN(r[0].KlDivWithSae) && double.IsNaN(r[0].CeLossScore));
        Assert.Equal([r[0].NoRows!], r[0].NonFiniteNotes());
        Assert.Equal(r[0].NoRows, (string?)r[0].ToJson()["no_rows"]);
        using (var stream = new MemoryStream())
        {
            using (var writer = new System.Text.Json.Utf8JsonWriter(stream)) r[0].WriteJson(writer);   // NaN written as null, no throw
            Assert.Contains("no_rows", System.Text.Encoding.UTF8.GetString(stream.ToArray()));
        }

        // The other SAE's results are those it gets evaluated alone, over the tokens routed to expert 2 under the same hook.
        var tokens = tensor(windows.SelectMany(w => w).ToArray()).view(3, 12);
        var (_, cache) = model.Run(tokens, new RunOptions { Hooks = [noExpert3], CacheNames = [Indices] });
        long routed;
        using (cache) routed = cache![Indices].eq(2).any(-1).sum().item<long>();
        Assert.InRange(routed, 1, 35);
        Assert.Null(r[1].NoRows);
        Assert.Null(r[1].ToJson()["no_rows"]);
        Assert.Equal(routed, r[1].Reconstruction.Rows);
        var alone = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(half, Name: "e2")], windows, options)[0];
        Assert.Equal(alone.Reconstruction.Fvu, r[1].Reconstruction.Fvu, 12);
        Assert.Equal(alone.CeLossWithSae, r[1].CeLossWithSae, 12);
        Assert.Equal(alone.KlDivWithSae, r[1].KlDivWithSae, 12);
        Assert.True(alone.KlDivWithSae > 0);
    }

    /// <summary>The model run with the activation x at <paramref name="hook"/> replaced by x/2 + <see cref="Shift"/> at
    /// <paramref name="positions"/> only.</summary>
    private static Tensor HalvedAt(HookedTransformer model, Tensor tokens, string hook, IReadOnlyCollection<long> positions) =>
        model.Run(tokens, new RunOptions
        {
            Hooks = [(hook, x =>
            {
                var at = isin(TorchScalars.Arange(x.shape[1]), tensor(positions.ToArray())).view(1, -1, 1);
                return where(at, x * 0.5 + Shift((int)x.shape[^1]), x);
            })],
        }).Logits!;

    [Fact]
    public void A_sliced_SAE_is_spliced_at_its_slice_only_as_eval_splices_it()
    {
        using var model = Gpt2();
        const string hook = "blocks.0.hook_resid_post";
        var slice = SeqposSlice.Parse("2:-1");
        using var sae = Identity(hook, 16, 0.5, slice);                     // x̂ = x/2 + shift
        using var scope = NewDisposeScope();
        var windows = Windows(2, 7, 9).Select(w => w.Select(t => t % 50).ToArray()).ToList();
        var tokens = tensor(windows.SelectMany(w => w).ToArray()).view(2, 7);
        var clean = model.Run(tokens, new RunOptions()).Logits!;
        var expected = HalvedAt(model, tokens, hook, [2, 3, 4, 5]);       // range(7)[2:-1]
        Assert.False(expected.allclose(clean, 1e-4, 1e-4));

        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae);
        SaeTestUtil.AssertClose(expected, hooked.Run(tokens).Logits!, rtol: 1e-5, atol: 1e-5, what: "spliced at the slice");
        // SaeSlice.All: every position, as SAELens's HookedSAETransformer splices it.
        var everywhere = model.Run(tokens, new RunOptions { Saes = [model.Attach(sae) with { SeqposSlice = SeqposSlice.All }] }).Logits!;
        SaeTestUtil.AssertClose(HalvedAt(model, tokens, hook, [0, 1, 2, 3, 4, 5, 6]), everywhere, rtol: 1e-5, atol: 1e-5, what: "spliced everywhere");
        // Steering on hook_sae_output still reaches every position; clamping (an edit of f) only the slice's.
        var clamped = hooked.Run(tokens, interventions: [new Clamp(sae, 0, 0.0)]).Logits!;
        Assert.True(clamped.narrow(1, 0, 2).allclose(clean.narrow(1, 0, 2), 1e-5, 1e-5), "clamping outside the slice changed the run");

        // sae eval --model on the same windows and slice: KL(clean ‖ spliced) averaged over the slice's positions is
        // the spliced run's.
        var m = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 2, SeqposSlice = slice })[0];
        var lc = clean.to(ScalarType.Float64).log_softmax(-1).narrow(1, 2, 4);
        var ls = expected.to(ScalarType.Float64).log_softmax(-1).narrow(1, 2, 4);
        double kl = (lc.exp() * (lc - ls)).sum(-1).mean().item<double>();
        Assert.Equal(kl, m.KlDivWithSae, 6);
    }

    [Fact]
    public void A_slice_from_the_end_is_the_sliced_splice_of_every_generation_step()
    {
        using var model = Gpt2();
        const string hook = "blocks.0.hook_resid_post";
        using var sae = Identity(hook, 16, 0.5, SeqposSlice.Parse(":-2"));
        using var scope = NewDisposeScope();
        var prompt = tensor(new long[] { 3, 17, 8, 41 }).view(1, 4);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae);
        using var generated = hooked.Generate(prompt, 4, new GenerationOptions { Temperature = 0, ReturnLogits = true });
        // By hand: greedy steps, each on the whole sequence with the activation halved at range(len)[:-2] (a KV cache would
        // keep the earlier positions as they were spliced when they were the last ones).
        var seq = prompt;
        for (int step = 0; step < 4; step++)
        {
            long len = seq.shape[1];
            var last = HalvedAt(model, seq, hook, [.. Enumerable.Range(0, (int)len - 2).Select(p => (long)p)])[.., -1];
            SaeTestUtil.AssertClose(last, generated.Logits![.., step], rtol: 1e-5, atol: 1e-5, what: $"step {step} logits");
            seq = cat([seq, last.argmax(-1).view(1, 1)], 1);
        }
        Assert.Equal(seq.data<long>().ToArray(), generated.Tokens.data<long>().ToArray());
    }
}
