using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>TransformerLens's direct logit attribution (<see cref="LogitAttribution"/>, <c>sae model logit-attrs</c>) on a
/// tiny GPT-2 with random LayerNorm and attention biases: the stacks add up to the model's own logit difference once the
/// final LayerNorm's β is counted (TransformerLens's notebook checks the final residual stream the same way), and each
/// layer's heads with its b_O give its attention output, b_O projected by hand.</summary>
public class LogitAttributionTests : ModelTestBase
{
    private static readonly long[][] Prompts = [[5, 9, 3, 12, 40, 7], [63, 1, 22, 8]];
    private static readonly (long, long)[] Answers = [(3, 5), (7, 2)];

    private static List<Tensor> Tokens() => Prompts.Select(p => tensor(p).unsqueeze(0)).ToList();

    private static double LastLogitDiff(HookedTransformer model, Tensor tokens, long a, long b)
    {
        using var logits = model.Forward(tokens);
        return logits[0, -1, a].item<float>() - logits[0, -1, b].item<float>();
    }

    [Fact]
    public void Each_stack_and_the_final_norm_bias_sum_to_the_models_own_logit_difference()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 4, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        var tokens = Tokens();
        var r = LogitAttribution.Run(model, tokens, Answers);

        double expected = Enumerable.Range(0, 2).Average(i => LastLogitDiff(model, tokens[i], Answers[i].Item1, Answers[i].Item2));
        Assert.Equal(expected, r.LogitDiff, 1e-5);
        // GPT-2 has no b_U and ties W_U to wte: the bias terms are β·(wte[A] − wte[B]).
        var sd = model.state_dict();
        double[] beta = sd["transformer.ln_f.bias"].data<float>().Select(v => (double)v).ToArray();
        var wte = sd["transformer.wte.weight"];
        double BiasOf(long a, long b) => beta.Select((v, d) => v * (wte[a, d].item<float>() - wte[b, d].item<float>())).Sum();
        Assert.Equal(Answers.Average(x => BiasOf(x.Item1, x.Item2)), r.Bias, 1e-5);
        Assert.True(Math.Abs(r.Bias) > 1e-3, "the random β should matter");

        Assert.Equal(["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"], r.PerLayer.Select(c => c.Label));
        Assert.Equal(["0_pre", "0_mid", "1_pre", "1_mid", "final_post"], r.Accumulated.Select(c => c.Label));
        Assert.Equal(expected, r.PerLayer.Sum(c => c.LogitDiff) + r.Bias, 1e-4);
        Assert.Equal(expected, r.Accumulated[^1].LogitDiff + r.Bias, 1e-4);
        // The residual stream accumulates the layer outputs: 0_pre = embeddings, 0_mid = 0_pre + 0_attn_out, ...
        double running = 0;
        for (int i = 0; i < r.Accumulated.Count; i++)
        {
            running += i == 0 ? r.PerLayer[0].LogitDiff + r.PerLayer[1].LogitDiff : r.PerLayer[i + 1].LogitDiff;
            Assert.Equal(running, r.Accumulated[i].LogitDiff, 1e-4);
        }
        foreach (var t in tokens) t.Dispose();
    }

    [Fact]
    public void The_logit_lens_with_the_final_LayerNorm_recomputed_runs_each_stream_through_ln_f()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("lens"), seed: 6, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var scope = NewDisposeScope();
        var tokens = tensor(Prompts[0]).unsqueeze(0);
        var (a, b) = Answers[0];
        var r = LogitAttribution.Run(model, [tokens], [(a, b)], recomputeLn: true);
        var cached = LogitAttribution.Run(model, [tokens], [(a, b)]);
        // At the last layer the stream is the final one: the model's own logit difference (with the biases), as without recompute.
        Assert.Equal(LastLogitDiff(model, tokens, a, b), r.Accumulated[^1].LogitDiff + r.Bias, 1e-4);
        Assert.Equal(cached.Accumulated[^1].LogitDiff, r.Accumulated[^1].LogitDiff, 1e-5);
        Assert.Equal(cached.PerLayer.Select(c => c.LogitDiff), r.PerLayer.Select(c => c.LogitDiff));
        // Each earlier stream: ln_f (γ, β, its own mean and variance) applied to it, times wte[A] − wte[B] (tied W_U), less β's share.
        var sd = model.state_dict();
        var (gamma, beta, wte) = (sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], sd["transformer.wte.weight"]);
        var direction = wte[a] - wte[b];
        double betaShare = beta.dot(direction).item<float>();
        var hp = model.HookPoints;
        string[] names = [hp.Blocks[0].ResidPre, hp.Blocks[0].ResidMid, hp.Blocks[1].ResidPre, hp.Blocks[1].ResidMid];
        using var run = model.RunWithCache(tokens, new RunOptions { CacheNames = names });
        bool differs = false;
        for (int i = 0; i < names.Length; i++)
        {
            var x = run.Cache[names[i]][0, -1];
            var normed = nn.functional.layer_norm(x, [16], gamma, beta, model.Config.LayerNormEps);
            double expected = normed.dot(direction).item<float>() - betaShare;
            Assert.Equal(expected, r.Accumulated[i].LogitDiff, 1e-4);
            differs |= Math.Abs(expected - cached.Accumulated[i].LogitDiff) > 1e-3;
        }
        Assert.True(differs, "the final stream's cached scale should differ from an earlier stream's own");
    }

    [Fact]
    public void A_layers_heads_and_its_b_O_projected_by_hand_give_its_attention_output()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 5, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var tokens = tensor(Prompts[0]).unsqueeze(0);
        var r = LogitAttribution.Run(model, [tokens], [Answers[0]]);
        Assert.Equal(8, r.PerHead.Count);
        Assert.Equal("L1H2", r.PerHead[6].Label);

        // apply_ln_to_stack by hand: the final residual stream's LayerNorm divisor √(var + ε), γ ⊙ (wte[A] − wte[B]).
        var sd = model.state_dict();
        using var run = model.RunWithCache(tokens, [model.HookPoints.Blocks[1].ResidPost]);
        double[] x = run.Cache[model.HookPoints.Blocks[1].ResidPost][0, -1].data<float>().Select(v => (double)v).ToArray();
        double mean = x.Average(), s = Math.Sqrt(x.Average(v => (v - mean) * (v - mean)) + 1e-5);
        float[] gamma = sd["transformer.ln_f.weight"].data<float>().ToArray();
        var wte = sd["transformer.wte.weight"];
        double[] dir = gamma.Select((g, d) => g * (wte[3, d].item<float>() - (double)wte[5, d].item<float>())).ToArray();
        for (int l = 0; l < 2; l++)
        {
            double[] bO = sd[$"transformer.h.{l}.attn.c_proj.bias"].data<float>().Select(v => (double)v).ToArray();
            double bMean = bO.Average();
            double bias = bO.Select((v, d) => (v - bMean) / s * dir[d]).Sum();
            double heads = r.PerHead.Skip(4 * l).Take(4).Sum(h => h.LogitDiff);
            Assert.Equal(r.PerLayer[2 + 2 * l].LogitDiff, heads + bias, 1e-4);
        }
    }

    [Fact]
    public void A_layers_neurons_and_its_b_out_sum_to_its_mlp_output()
    {
        using var scope = NewDisposeScope();
        foreach (var model in new[]
                 {
                     ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 6, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64)),
                     NeoX(parallel: true, seed: 7),
                 })
        {
            using var _ = model;
            List<Tensor> tokens = [tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0), tensor(new long[] { 33, 1, 22, 8 }).unsqueeze(0)]; // ids < 50: NeoX's vocabulary
            var r = LogitAttribution.Run(model, tokens, Answers, neurons: true);
            int dMlp = model.Config.DMlp;
            Assert.Equal(2 * dMlp, r.PerNeuron.Count);
            Assert.Equal($"L1N{dMlp - 1}", r.PerNeuron[^1].Label);
            Assert.Equal(["L0_b_out", "L1_b_out"], r.MlpBias.Select(b => b.Label));
            for (int l = 0; l < 2; l++)
            {
                double neurons = r.PerNeuron.Skip(dMlp * l).Take(dMlp).Sum(x => x.LogitDiff);
                double mlpOut = r.PerLayer.Single(x => x.Label == $"{l}_mlp_out").LogitDiff;
                Assert.Equal(mlpOut, neurons + r.MlpBias[l].LogitDiff, 1e-4);
                Assert.True(r.PerNeuron.Skip(dMlp * l).Take(dMlp).Count(x => Math.Abs(x.LogitDiff) > 1e-6) > 1, "the neurons carry no share");
            }
            Assert.Empty(LogitAttribution.Run(model, tokens, Answers).PerNeuron);
        }
    }

    [Fact]
    public void Answers_must_match_the_prompts_and_lie_in_the_vocabulary()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 4, nLayer: 1, nEmbd: 8, nHead: 2, vocab: 16));
        using var tokens = tensor(new long[] { 1, 2, 3 }).unsqueeze(0);
        Assert.Contains("2 answer pairs for 1 prompts", Assert.Throws<SaeSharpException>(() => LogitAttribution.Run(model, [tokens], [(1, 2), (3, 4)])).Message);
        Assert.Contains("token 16 is outside the vocabulary", Assert.Throws<SaeSharpException>(() => LogitAttribution.Run(model, [tokens], [(16, 2)])).Message);
    }

    [Fact]
    public void Logit_attrs_command_prints_and_writes_what_the_library_finds()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 3, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        string json = Path.Combine(Dir, "la.json");
        var (exit, output, err) = CliRunner.Run("model", "logit-attrs", "--model", dir, "--prompt", "Hello world", "--answer", " world,Hello",
            "--top-heads", "2", "--json", json);
        Assert.True(exit == 0, err);
        using var model = ModelLoader.FromPretrained(dir);
        using var tokens = model.ToTokens("Hello world");
        var r = LogitAttribution.Run(model, [tokens], [(995, 15496)]);   // " world", "Hello"
        Assert.Contains($"logit(\" world\") − logit(\"Hello\") at the last token, mean over 1 prompt: {r.LogitDiff:F3}", output);
        Assert.Contains("final_post", output);
        var node = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(r.LogitDiff, node["logit_diff"]!.GetValue<double>(), 1e-9);
        Assert.Equal(4, node["stack_head_results"]!.AsObject().Count);
        Assert.Equal(r.PerLayer[^1].LogitDiff, node["decompose_resid"]!["0_mlp_out"]!.GetValue<double>(), 1e-9);
        Assert.Null(node["stack_neuron_results"]);

        var (withNeurons, neuronOut, neuronErr) = CliRunner.Run("model", "logit-attrs", "--model", dir, "--prompt", "Hello world", "--answer", " world,Hello",
            "--top-neurons", "3", "--json", json);
        Assert.True(withNeurons == 0, neuronErr);
        var rn = LogitAttribution.Run(model, [tokens], [(995, 15496)], neurons: true);
        var top = rn.PerNeuron.MaxBy(x => Math.Abs(x.LogitDiff))!;
        Assert.Contains($"MLP neurons (cache.stack_neuron_results), 3 of {rn.PerNeuron.Count} by |logit diff|", neuronOut);
        Assert.Contains(top.Label, neuronOut);
        node = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(rn.PerNeuron.Count, node["stack_neuron_results"]!.AsObject().Count);
        Assert.Equal(top.LogitDiff, node["stack_neuron_results"]![top.Label]!.GetValue<double>(), 1e-9);

        var (bad, _, badErr) = CliRunner.Run("model", "logit-attrs", "--model", dir, "--prompt", "a", "--prompt", "b", "--prompt", "c",
            "--answer", " world, Hello", "--answer", "1,2");
        Assert.NotEqual(0, bad);
        Assert.Contains("--answer: 2 given for 3 prompts", badErr);
    }
}
