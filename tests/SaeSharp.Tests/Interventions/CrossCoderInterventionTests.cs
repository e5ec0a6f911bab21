using SaeSharp.Evaluation;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Evaluation;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>
/// <see cref="CrossCoderInterventions"/> against hooks written here: steering adds a·W_dec[l, i] (over the slot's
/// normaliser scale when the checkpoint has one) at each slot's hook; latent edits add (f' − f)·W_dec[l] computed from the
/// clean activations of every slot.
/// </summary>
public class CrossCoderInterventionTests : ModelTestBase
{
    private const int D = 16;
    private static readonly string[] Hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"];

    private static Tensor Run(HookedTransformer model, Tensor tokens, IEnumerable<(string Name, Func<Tensor, Tensor?> Fn)> hooks) =>
        model.Run(tokens, new RunOptions { Hooks = hooks.ToList() }).Logits!;

    [Fact]
    public void Steering_adds_the_scaled_decoder_row_of_each_slot_at_its_hook()
    {
        using var model = Gpt2();
        using var tokens = Tokens([.. ModelActivationSourceTests.Windows(2, 8)]);
        using var cc = CrossCoderDownstreamTests.Random(2, D, 24, seed: 3);
        using var steered = Run(model, tokens, CrossCoderInterventions.Steering(cc, 5, 2.5, [(0, Hooks[0]), (1, Hooks[1])]));
        using var hand = Run(model, tokens, Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(x => x + cc.Decoder.Weight[l, 5] * 2.5))));
        AssertAllClose(hand, steered, 1e-5, "steered logits");
        // Only the second slot's hook: the first is left alone.
        using var one = Run(model, tokens, CrossCoderInterventions.Steering(cc, 5, 2.5, [(1, Hooks[1])]));
        using var handOne = Run(model, tokens, [(Hooks[1], x => x + cc.Decoder.Weight[1, 5] * 2.5)]);
        AssertAllClose(handOne, one, 1e-5, "one slot");
        Assert.True((one - steered).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void Steering_at_positions_adds_the_rows_only_there_and_refuses_positions_outside_the_run_and_counts_negative_ones_from_the_end()
    {
        using var model = Gpt2();
        using var tokens = Tokens([.. ModelActivationSourceTests.Windows(2, 8)]);
        using var cc = CrossCoderDownstreamTests.Random(2, D, 24, seed: 3);
        using var mask = zeros(1, tokens.shape[1], 1);
        mask[0, 1, 0] = tensor(1f);
        mask[0, 3, 0] = tensor(1f);
        using var steered = Run(model, tokens, CrossCoderInterventions.Steering(cc, 5, 2.5, [(0, Hooks[0]), (1, Hooks[1])], [3, 1]));
        using var hand = Run(model, tokens, Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(x => x + mask * (cc.Decoder.Weight[l, 5] * 2.5)))));
        AssertAllClose(hand, steered, 1e-5, "steered at positions 1 and 3");
        // Positions before the first steered one see nothing (causal attention): position 0's logits are the clean run's.
        using var clean = Run(model, tokens, []);
        AssertAllClose(clean.narrow(1, 0, 1), steered.narrow(1, 0, 1), 1e-6, "position 0");
        // Counted from the end as Steering counts them: -1 and -7 are the 8-token rows' positions 7 and 1; -9 is before the start.
        using (var fromEnd = Run(model, tokens, CrossCoderInterventions.Steering(cc, 5, 2.5, [(0, Hooks[0]), (1, Hooks[1])], [-5, -7])))
            AssertAllClose(steered, fromEnd, 0, "positions -5, -7 = 3, 1");
        Assert.Contains("-9", Assert.Throws<SaeSharpException>(() => Run(model, tokens, CrossCoderInterventions.Steering(cc, 5, 1, [(0, Hooks[0])], [-9])).Dispose()).Message);
        var outside = Assert.Throws<SaeSharpException>(() => Run(model, tokens, CrossCoderInterventions.Steering(cc, 5, 1, [(0, Hooks[0])], [tokens.shape[1]])).Dispose());
        Assert.Contains($"position {tokens.shape[1]} is outside the sequence", outside.Message);
    }

    [Fact]
    public void With_an_activation_normaliser_steering_is_in_the_activations_units()
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = D, DictSize = 8, NumLayers = 2, NormalizerBuffers = true });
        using (cc)
        {
            using (var g = new Generator(2)) cc.InitializeWeights(g, null);
            using var mean = randn(2, D);
            using var std = rand(2, D) + 0.5;
            cc.SetActivationNormalizer(mean, std);
            // global_scale_l = 1 / √(Σ_d std² + 1e-8); x̂ = (f·W_dec + b)/(scale + 1e-8) + mean, so latent i at a writes a·W_dec[l, i]/(scale + 1e-8).
            using var v = CrossCoderInterventions.SteeringVectors(cc, 2, 3.0);
            for (int l = 0; l < 2; l++)
            {
                double scale = 1 / Math.Sqrt(std[l].pow(2).sum().item<float>() + 1e-8);
                using var expected = cc.Decoder.Weight[l, 2] * 3.0 / (scale + 1e-8);
                AssertAllClose(expected, v[l], 1e-4, $"slot {l}");
            }
        }
    }

    [Fact]
    public void Ablating_and_clamping_latents_add_their_decoder_change_from_the_clean_encoding_with_the_error_term()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        using var tokens = Tokens([.. windows]);
        using var cc = CrossCoderDownstreamTests.Random(2, D, 24, seed: 6);
        var runs = new[] { new CrossCoderModelRun(model) };
        using var x = CrossCoderInterventions.CleanInput(runs, Hooks, [0, 0], tokens);
        Assert.Equal(new long[] { 3, 8, 2, D }, x.shape);
        using (var cache = model.RunWithCache(tokens, Hooks).Cache)
            AssertAllClose(cache![Hooks[1]], x.select(2, 1), 1e-6, "slot 1 is the hook's activation");

        // By hand: f of the clean rows; (f' − f) @ W_dec[l] added at slot l's hook.
        using var f = cc.Encode(x.reshape(-1, 2, D));
        // The latent means over two inputs are those over their tokens together (8 + 16 rows).
        using (var means = CrossCoderInterventions.LatentMeans(cc, [x.narrow(0, 0, 1), x.narrow(0, 1, 2)]))
            AssertAllClose(f.mean([0]), means, 1e-6, "latent means");
        int[] latents = [f.gt(0).sum(0).argmax().item<long>() is var busiest ? (int)busiest : 0, 7];
        using var fAblated = f.clone();
        foreach (var i in latents) fAblated[.., i] = tensor(0f);
        using var delta = stack([(fAblated - f).matmul(cc.Decoder.Weight[0]), (fAblated - f).matmul(cc.Decoder.Weight[1])], 1).view(3, 8, 2, D);
        Assert.True(delta.abs().max().item<float>() > 1e-3, "the ablated latents fire on these tokens");
        using var hand = Run(model, tokens, Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(y => y + delta.select(2, l)))));
        using (var edit = CrossCoderInterventions.EditLatents(cc, x, [(0, Hooks[0]), (1, Hooks[1])], CrossCoderInterventions.Ablate(cc, latents)))
        {
            using var edited = Run(model, tokens, edit.Hooks);
            AssertAllClose(hand, edited, 1e-5, "zero ablation");
        }

        // Clamp latent 4 to 3.0: (3 − f_4)·W_dec[l, 4].
        using var d4 = (3.0 - f[.., 4]).unsqueeze(1);
        using var handClamp = Run(model, tokens, Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(y => y + (d4 * cc.Decoder.Weight[l, 4]).view(y.shape)))));
        using (var edit = CrossCoderInterventions.EditLatents(cc, x, [(0, Hooks[0]), (1, Hooks[1])], CrossCoderInterventions.Clamp(cc, 4, 3.0)))
        {
            using var clamped = Run(model, tokens, edit.Hooks);
            AssertAllClose(handClamp, clamped, 1e-5, "clamp");
        }

        // Editing nothing (clamping a latent to its own value) leaves the model's logits as they are.
        using var clean = model.Forward(tokens);
        using (var none = CrossCoderInterventions.EditLatents(cc, x, [(0, Hooks[0]), (1, Hooks[1])], ff => ff.clone()))
        using (var same = Run(model, tokens, none.Hooks))
            AssertAllClose(clean, same, 1e-6, "no edit");
        Assert.Equal("latent 24 is out of range for a crosscoder with dict_size=24 (0..23)",
            Assert.Throws<SaeSharpException>(() => CrossCoderInterventions.Ablate(cc, [24])).Message);
    }

    [Fact]
    public void Model_diffing_edits_the_chat_model_from_an_encoding_of_both_models()
    {
        using var baseModel = Gpt2(seed: 4);
        using var chat = Gpt2(seed: 9);
        const string hook = "blocks.1.hook_resid_post";
        using var tokens = Tokens([.. ModelActivationSourceTests.Windows(2, 8)]);
        using var cc = CrossCoderDownstreamTests.Random(2, D, 20, seed: 8);
        using var x = CrossCoderInterventions.CleanInput([new(baseModel), new(chat)], [hook, hook], [0, 1], tokens);
        using var f = cc.Encode(x.reshape(-1, 2, D));
        using var fa = f.clone();
        fa[.., 3] = tensor(0f);
        using var delta = (fa - f).matmul(cc.Decoder.Weight[1]);
        using var hand = Run(chat, tokens, [(hook, y => y + delta.view(y.shape))]);
        using var edit = CrossCoderInterventions.EditLatents(cc, x, [(1, hook)], CrossCoderInterventions.Ablate(cc, [3]));
        using var edited = Run(chat, tokens, edit.Hooks);
        AssertAllClose(hand, edited, 1e-5, "chat model");
    }
    /// <summary>The whole-sequence edit (<see cref="CrossCoderInterventions.CleanInput"/> of every model, then
    /// <see cref="CrossCoderInterventions.EditLatents"/> in slot <paramref name="slot"/>'s model) on each prefix
    /// prompt + generated[:t] of <paramref name="g"/>: its last position's logits must be the ones generation chose token t
    /// from, and token t their argmax (greedy).</summary>
    private static void AssertEachStepIsTheWholeSequenceEdit(GenerationResult g, long promptLength, CrossCoder cc, HookedTransformer[] models,
        string[] slotHooks, int[] slotModels, int slot, Func<Tensor, Tensor>? edit, bool errorTerm, string what)
    {
        var runs = models.Select(m => new CrossCoderModelRun(m)).ToList();
        var slots = Enumerable.Range(0, slotHooks.Length).Where(j => slotModels[j] == slotModels[slot]).Select(j => (j, slotHooks[j])).ToList();
        Assert.NotNull(g.Logits);
        for (int t = 0; t < g.Logits!.shape[1]; t++)
        {
            using var scope = NewDisposeScope();
            var prefix = g.Tokens.narrow(1, 0, promptLength + t);
            using var x = CrossCoderInterventions.CleanInput(runs, slotHooks, slotModels, prefix);
            using var e = CrossCoderInterventions.EditLatents(cc, x, slots, edit, errorTerm);
            var last = Run(models[slotModels[slot]], prefix, e.Hooks).select(1, -1);
            AssertAllClose(last, g.Logits.select(1, t), 1e-4, $"{what}: logits of new token {t}");
            Assert.Equal(last.argmax(-1).data<long>().ToArray(), g.Tokens.select(1, promptLength + t).data<long>().ToArray());
        }
    }

    [Fact]
    public void Generation_with_latent_edits_equals_the_whole_sequence_edit_at_every_step_for_one_model_at_two_hooks()
    {
        using var model = Gpt2(seed: 5);
        using var prompt = Tokens([3, 17, 8, 41, 2], [9, 9, 30, 1, 44]);
        using var cc = CrossCoderDownstreamTests.Random(2, D, 24, seed: 6);
        var runs = new[] { new CrossCoderModelRun(model) };
        // The busiest latent over the prompt, clamped to 0, and latents 2 and 7 ablated to means of the prompt's tokens.
        using var x = CrossCoderInterventions.CleanInput(runs, Hooks, [0, 0], prompt);
        using var f = cc.Encode(x.reshape(-1, 2, D));
        int busiest = (int)f.gt(0).sum(0).argmax().item<long>();
        using var means = CrossCoderInterventions.LatentMeans(cc, [x]);
        var clamp = CrossCoderInterventions.Clamp(cc, busiest, 0);
        var ablate = CrossCoderInterventions.Ablate(cc, [2, 7], means);
        var o = new GenerationOptions { ReturnLogits = true };
        using var plain = model.Generate(prompt, 6, o);
        foreach (var (edit, name) in new[] { (clamp, "clamp"), (ablate, "mean ablation"), ((Func<Tensor, Tensor>?)null, "no edit") })
            foreach (bool errorTerm in new[] { true, false })
            {
                if (edit is null && errorTerm) continue;
                using var g = CrossCoderInterventions.Generate(cc, runs, Hooks, [0, 0], 1, edit, prompt, 6, o, errorTerm);
                Assert.Equal(new long[] { 2, 11 }, g.Tokens.shape);
                AssertEachStepIsTheWholeSequenceEdit(g, 5, cc, [model], Hooks, [0, 0], 1, edit, errorTerm, $"{name}, error term {errorTerm}");
                Assert.True((g.Logits! - plain.Logits!).abs().max().item<float>() > 1e-3, $"{name}, error term {errorTerm}: the edit changed nothing");
            }
        // With the error term and no edit, generation is the model's own.
        using var same = CrossCoderInterventions.Generate(cc, runs, Hooks, [0, 0], 0, null, prompt, 6, o);
        AssertAllClose(plain.Logits!, same.Logits!, 1e-4, "error term, no edit");
        Assert.Equal(plain.Tokens.data<long>().ToArray(), same.Tokens.data<long>().ToArray());

        // Steering in the options' hooks runs after the edit, as in sae model run; no tensor is left behind.
        using (var steered = CrossCoderInterventions.Generate(cc, runs, Hooks, [0, 0], 1, clamp, prompt, 3,
                   o with { Hooks = CrossCoderInterventions.Steering(cc, 4, 2.0, [(0, Hooks[0]), (1, Hooks[1])]) }))
        using (var hand = CrossCoderInterventions.Generate(cc, runs, Hooks, [0, 0], 1, clamp, prompt, 3,
                   o with { Hooks = Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(y => y + cc.Decoder.Weight[l, 4] * 2.0))).ToList() }))
            AssertAllClose(hand.Logits!, steered.Logits!, 1e-5, "steered");
        Assert.Equal(0, LiveTensors.Leaked(() => CrossCoderInterventions.Generate(cc, runs, Hooks, [0, 0], 1, clamp, prompt, 3, o).Dispose()));
    }

    [Fact]
    public void Generation_with_latent_edits_in_a_model_diffing_pair_encodes_from_both_models_at_every_step()
    {
        using var baseModel = Gpt2(seed: 4);
        using var chat = Gpt2(seed: 9);
        const string hook = "blocks.1.hook_resid_post";
        string[] hooks = [hook, hook];
        using var prompt = Tokens([5, 22, 13, 7]);
        using var cc = CrossCoderDownstreamTests.Random(2, D, 20, seed: 8);
        var runs = new[] { new CrossCoderModelRun(baseModel), new CrossCoderModelRun(chat) };
        var o = new GenerationOptions { ReturnLogits = true };
        using var plainChat = chat.Generate(prompt, 5, o);
        foreach (int slot in new[] { 1, 0 })
            foreach (bool errorTerm in new[] { true, false })
            {
                var edit = CrossCoderInterventions.Ablate(cc, [3, 11]);
                using var g = CrossCoderInterventions.Generate(cc, runs, hooks, [0, 1], slot, edit, prompt, 5, o, errorTerm);
                AssertEachStepIsTheWholeSequenceEdit(g, 4, cc, [baseModel, chat], hooks, [0, 1], slot, edit, errorTerm, $"slot {slot}, error term {errorTerm}");
            }
        // The chat slot's edit reads the base model: with another base model the chat model's logits change.
        using var otherBase = Gpt2(seed: 12);
        var ablate = CrossCoderInterventions.Ablate(cc, [3, 11]);
        using (var a = CrossCoderInterventions.Generate(cc, runs, hooks, [0, 1], 1, ablate, prompt, 5, o, useErrorTerm: false))
        using (var b = CrossCoderInterventions.Generate(cc, [new(otherBase), new(chat)], hooks, [0, 1], 1, ablate, prompt, 5, o, useErrorTerm: false))
            Assert.True((a.Logits!.select(1, 0) - b.Logits!.select(1, 0)).abs().max().item<float>() > 1e-4, "the base model's slot reaches the encoder");

        Assert.Equal("slot 2 is out of range for a crosscoder with num_layers=2 (0..1)",
            Assert.Throws<SaeSharpException>(() => CrossCoderInterventions.Generate(cc, runs, hooks, [0, 1], 2, null, prompt, 3)).Message);
        Assert.Contains("slot 1 reads model 1, but 1 model is given (a model-diffing crosscoder needs both models",
            Assert.Throws<SaeSharpException>(() => CrossCoderInterventions.Generate(cc, [new(chat)], hooks, [0, 1], 1, null, prompt, 3)).Message);
    }
}
