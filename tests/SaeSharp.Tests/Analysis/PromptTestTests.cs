using System.Globalization;
using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>TransformerLens's test_prompt (<see cref="PromptTest"/>, <c>sae model test-prompt</c>) on a tiny GPT-2 with
/// GPT-2's real tokenizer: ranks, logits and probabilities against a softmax written out by hand over the model's logits.</summary>
public class PromptTestTests : ModelTestBase
{
    private const int Bos = 50256, Hello = 15496, SpaceWorld = 995;   // GPT-2 ids of <|endoftext|>, "Hello", " world"

    private string Gpt2Folder()
    {
        string dir = TinyModels.WriteGpt2(Sub("gpt2tok"), seed: 3, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        return dir;
    }

    [Fact]
    public void Each_answer_token_is_ranked_by_the_softmax_of_the_logits_before_it()
    {
        using var model = ModelLoader.FromPretrained(Gpt2Folder());
        // "world Hello" gets a space: " world Hello" = [995, 18435]; teacher-forced after <|endoftext|> Hello.
        var r = PromptTest.Run(model, "Hello", "world Hello", topK: 5);
        Assert.Equal(["<|endoftext|>", "Hello"], r.PromptTokens);
        Assert.Equal([" world", " Hello"], r.AnswerTokens);
        using var tokens = tensor(new long[] { Bos, Hello, SpaceWorld, 18435 }).unsqueeze(0);
        using var logits = model.Forward(tokens);
        for (int i = 0; i < 2; i++)
        {
            double[] l = logits[0, 1 + i].to(ScalarType.Float64).data<double>().ToArray();
            double max = l.Max(), z = l.Sum(v => Math.Exp(v - max));
            int answer = i == 0 ? SpaceWorld : 18435;
            var p = r.Predictions[i];
            Assert.Equal(answer, p.Answer.Id);
            Assert.Equal(l[answer], p.Answer.Logit, 1e-9);
            Assert.Equal(Math.Exp(l[answer] - max) / z, p.Answer.Prob, 1e-9);
            Assert.Equal(l.Count(v => v > l[answer]), p.Answer.Rank);
            int[] expectedTop = Enumerable.Range(0, l.Length).OrderByDescending(j => l[j]).Take(5).ToArray();
            Assert.Equal(expectedTop, p.Top.Select(t => t.Id));
            Assert.Equal([0, 1, 2, 3, 4], p.Top.Select(t => t.Rank));
        }
        Assert.Equal([(" world", r.Predictions[0].Answer.Rank), (" Hello", r.Predictions[1].Answer.Rank)], r.AnswerRanks);
    }

    [Fact]
    public void The_space_and_the_bos_follow_the_flags_and_custom_logits_replace_the_run()
    {
        using var model = ModelLoader.FromPretrained(Gpt2Folder());
        var asWritten = PromptTest.Run(model, "Hello", " world", prependSpaceToAnswer: false, prependBos: false);
        Assert.Equal(["Hello"], asWritten.PromptTokens);
        Assert.Equal([" world"], asWritten.AnswerTokens);                       // already had its space
        var noSpace = PromptTest.Run(model, "Hello", "world", prependSpaceToAnswer: false);
        Assert.Equal(["world"], noSpace.AnswerTokens);
        Assert.NotEqual(SpaceWorld, noSpace.Predictions[0].Answer.Id);

        // Logits 0, 1, ..., V-1 / 1000 at every position: token j has rank V-1-j and probability e^(j/1000) / Σ e^(k/1000).
        const int v = 50257;
        Func<Tensor, Tensor> ramp = t => (TorchScalars.Arange(v, dtype: ScalarType.Float32) / 1000f).expand(1, t.shape[1], v).contiguous();
        var custom = PromptTest.Run(model, "Hello", "world", topK: 3, logits: ramp);
        double z = Enumerable.Range(0, v).Sum(k => Math.Exp((k - (v - 1)) / 1000.0));
        Assert.Equal(v - 1 - SpaceWorld, custom.Predictions[0].Answer.Rank);
        Assert.Equal(Math.Exp((SpaceWorld - (v - 1)) / 1000.0) / z, custom.Predictions[0].Answer.Prob, 1e-6);
        Assert.Equal([v - 1, v - 2, v - 3], custom.Predictions[0].Top.Select(t => t.Id));
    }

    [Fact]
    public void Test_prompt_command_prints_the_ranks_the_library_finds_and_refuses_an_empty_answer()
    {
        string folder = Gpt2Folder();
        using var model = ModelLoader.FromPretrained(folder);
        var r = PromptTest.Run(model, "Hello", "world", topK: 2);
        var (exit, output, err) = CliRunner.Run("model", "test-prompt", "--model", folder, "--prompt", "Hello", "--answer", "world", "--top-k", "2");
        Assert.True(exit == 0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("Tokenized prompt: ['<|endoftext|>', 'Hello']", lines[0]);
        Assert.Equal("Tokenized answer: [' world']", lines[1]);
        Assert.StartsWith($"Performance on answer token \" world\": rank {r.Predictions[0].Answer.Rank}, ", lines[2]);
        Assert.Equal("rank\ttoken\tlogit\tprob", lines[3]);
        Assert.Equal(4, lines[4].Split('\t').Length);
        Assert.Equal($"Ranks of the answer tokens: [(' world', {r.Predictions[0].Answer.Rank})]", lines[^1]);

        (exit, _, err) = CliRunner.Run("model", "test-prompt", "--model", folder, "--prompt", "Hello", "--answer", "", "--no-prepend-space");
        Assert.NotEqual(0, exit);
        Assert.Contains("the answer '' gives no token", err);
    }

    /// <summary>On a word-level vocabulary (the built-in model's) an answer it does not know becomes its unk token; ranking
    /// that token answered another question, so the answer is refused naming it.</summary>
    [Fact]
    public void An_answer_outside_a_word_level_vocabulary_is_refused_not_ranked_as_unk()
    {
        var (exit, output, err) = CliRunner.Run("model", "test-prompt", "--model", "builtin", "--prompt", "the cat sat on the", "--answer", "zqxv");
        Assert.Equal(1, exit);
        Assert.Contains("the answer 'zqxv' is not in the vocabulary of", err);
        Assert.Contains("<unk>", err);
        Assert.DoesNotContain("Ranks of the answer tokens", output);
        (exit, _, err) = CliRunner.Run("model", "test-prompt", "--model", "builtin", "--prompt", "the cat sat on the", "--answer", "dog", "--top-k", "2");
        Assert.True(exit == 0, err);
    }

    /// <summary>The probability the command prints for the (single) answer token, read back from the pipe's round-trip number.</summary>
    private static double PrintedProb(string output) =>
        double.Parse(output.Split('\n').First(l => l.StartsWith("Performance")).Split("prob ")[1].Trim(), CultureInfo.InvariantCulture);

    /// <summary>As SAELens's tutorial 2.0 test_prompt_with_ablation: --error-term alone gives the clean numbers; ablating
    /// feature F with the error term kept equals the clean run with f_F·W_dec[F] subtracted at the hook (f encoded by hand).</summary>
    [Fact]
    public void Test_prompt_with_an_sae_ablation_equals_subtracting_the_features_decoder_row_by_hand()
    {
        const string hook = "blocks.0.hook_resid_post";
        string folder = Gpt2Folder(), saeDir = Sub("sae");
        using (var s0 = InterventionTests.RandomSae(hook, 16, 32, 5)) SaeLensFormat.Save(s0, saeDir);
        using var sae = SaeLensFormat.Load(saeDir);
        using var model = ModelLoader.FromPretrained(folder);
        string[] common = ["model", "test-prompt", "--model", folder, "--prompt", "Hello world and", "--answer", "Hello"];
        var (exit, clean, err) = CliRunner.Run(common);
        Assert.True(exit == 0, err);
        (exit, var spliced, err) = CliRunner.Run([.. common, "--sae", saeDir, "--error-term"]);
        Assert.True(exit == 0, err);
        Assert.Equal(PrintedProb(clean), PrintedProb(spliced), 1e-5);

        using var tokens = model.ToTokens("Hello world and Hello");
        using var x = model.RunWithCache(tokens, [hook]);
        using var f = (matmul(x.Cache[hook] - sae.BDec, sae.WEnc) + sae.BEnc).relu();
        int feature = (int)f[0, -2].argmax().item<long>();   // a feature active at the prompt's last token
        Assert.True(f[0, -2, feature].item<float>() > 0);
        using var removed = f[.., .., feature].unsqueeze(-1) * sae.WDec[feature];
        using var logits = model.RunWithHooks(tokens, (hook, y => y - removed));
        double[] l = logits[0, -2].to(ScalarType.Float64).data<double>().ToArray();
        double max = l.Max(), expected = Math.Exp(l[18435] - max) / l.Sum(v => Math.Exp(v - max));
        (exit, var ablated, err) = CliRunner.Run([.. common, "--sae", saeDir, "--error-term", "--ablate", $"{feature}"]);
        Assert.True(exit == 0, err);
        Assert.Equal(expected, PrintedProb(ablated), 1e-5);
        Assert.NotEqual(PrintedProb(clean), PrintedProb(ablated));   // the ablation changed the run
    }
}
