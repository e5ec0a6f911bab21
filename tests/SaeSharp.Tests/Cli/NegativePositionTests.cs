using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>Python-style negative positions (-1 the prompt's last token) in <c>sae intervene --set …@P</c>, <c>sae model run
/// --positions</c> and <c>sae steer --positions</c>: each gives exactly what the same position counted from 0 gives, per prompt
/// when prompts differ in length, and a position before the prompt's start (or an ambiguous spelling) is refused by name.</summary>
public class NegativePositionTests : ModelTestBase
{
    private const string Hook = "blocks.0.hook_resid_post";
    private static readonly string[] Prompts = ["The quick brown fox", "Sara has a white fox called Luna"];

    private (string Model, long[] Lengths) Setup()
    {
        var (model, _) = TinyGpt2WithText();
        using (var sae = InterventionTests.RandomSae(Hook, 16, 32, 5)) SaeLensFormat.Save(sae, Sub("sae"));
        var r = CltReference.Random(2, 12, 16, 5, threshold: true, skip: true);
        r.ScaleThresholds(0.2);
        r.WriteCircuitTracerLn2(Sub("clt"));
        var tok = Tokenizer.FromFolder(model);
        var lengths = Prompts.Select(p => (long)tok.EncodePrompt(p, true).Length).ToArray();
        Assert.NotEqual(lengths[0], lengths[1]);
        return (model, lengths);
    }

    [Fact]
    public void Negative_set_positions_equal_the_positive_ones_of_each_prompt()
    {
        var (model, n) = Setup();
        // The layer-0 feature most active at the last token of both prompts, so that x2 of its clean value there changes something.
        var tok = Tokenizer.FromFolder(model);
        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(Sub("clt"));
        var atLast = Prompts.Select(text =>
        {
            using var t = SaeSharp.Cli.Commands.InterventionCommands.PromptTokens(tok, text, true);
            using var clean = CltInterventions.FeatureIntervention(m, clt, t, []);
            return clean.Activations[0, -1].clone();
        }).ToList();
        int f = (int)minimum(atLast[0], atLast[1]).argmax().item<long>();
        Assert.True(minimum(atLast[0], atLast[1])[f].item<float>() > 0, "no layer-0 feature is active at the last token of both prompts");
        string[] common = ["intervene", "--model", model, "--sae", Sub("clt"), "--top", "4", "--generate", "4", "--no-freeze-attention"];
        // A position from the end, an open-ended one (reaching the new tokens) and a list with a range from the end.
        string[] Sets(string last, string onward, string list) => ["--set", $"0:{f}:x2@{last}", "--set", $"1:7:-3@{onward}", "--set", $"1:2:1.5@{list}"];
        var (exit, both, err) = CliRunner.Run([.. common, "--prompt", Prompts[0], "--prompt", Prompts[1], .. Sets("-1", "-3-", "0,-3--2")]);
        Assert.True(exit == 0, err + both);
        var sets = CltInterveneCommandTests.Tables(both, "layer\tfeature\tposition\ttoken\tclean\tset");
        var nexts = CltInterveneCommandTests.Tables(both, "rank\tclean\tp clean\tintervened\tp after");
        for (int i = 0; i < 2; i++)
        {
            long last = n[i] - 1;
            var (code, alone, error) = CliRunner.Run([.. common, "--prompt", Prompts[i], .. Sets($"{last}", $"{n[i] - 3}-", $"0,{n[i] - 3}-{n[i] - 2}")]);
            Assert.True(code == 0, error + alone);
            var set = CltInterveneCommandTests.Tables(alone, "layer\tfeature\tposition\ttoken\tclean\tset").Single();
            Assert.Equal(set, sets[i]);
            Assert.Equal($"{last}", set[0][2]);   // shown as the position it is in this prompt
            Assert.Equal($"{n[i] - 3}-", set[1][2]);
            Assert.NotEqual("0.0000", set[0][4]);   // the clean value whose multiple is set
            Assert.Equal(CltInterveneCommandTests.Tables(alone, "rank\tclean\tp clean\tintervened\tp after").Single(), nexts[i]);
            Assert.Equal(CltInterveneCommandTests.Rows(alone, "intervened").Single(), CltInterveneCommandTests.Rows(both, "intervened")[i]);
            Assert.Equal(CltInterveneCommandTests.Rows(alone, "clean").Single(), CltInterveneCommandTests.Rows(both, "clean")[i]);
        }
        Assert.NotEqual(CltInterveneCommandTests.Rows(both, "clean"), CltInterveneCommandTests.Rows(both, "intervened"));
    }

    [Fact]
    public void Negative_steering_positions_equal_the_positive_ones_in_model_run_and_steer()
    {
        var (model, n) = Setup();
        // --generate: -1 stays the prompt's last token while the sequence grows (the positive one says the same).
        string[] flags = ["--sae", Sub("sae"), "--steer", "2:30", "--generate", "4", "--hooks", Hook];
        var (exit, stdout, err) = CliRunner.Run(["model", "run", "--model", model, "--prompt", Prompts[0], "--prompt", Prompts[1], .. flags,
            "--positions", "-1,-3", "--out", Sub("both.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        var both = SafeTensors.Load(Sub("both.safetensors"));
        for (int i = 0; i < 2; i++)
        {
            (exit, var alone, err) = CliRunner.Run(["model", "run", "--model", model, "--prompt", Prompts[i], .. flags,
                "--positions", $"{n[i] - 1},{n[i] - 3}", "--out", Sub($"p{i}.safetensors")]);
            Assert.True(exit == 0, err + alone);
            var one = SafeTensors.Load(Sub($"p{i}.safetensors"));
            foreach (var (key, t) in one)
                Assert.True(t.eq(both[$"{key}.{i}"]).all().item<bool>(), $"{key}.{i}");
            Assert.Equal(CltInterveneCommandTests.Rows(alone, "edited"), [CltInterveneCommandTests.Rows(stdout, "edited")[i]]);
            // The steering is there: the prompt's last logits differ from the clean run's.
            (exit, _, err) = CliRunner.Run(["model", "run", "--model", model, "--prompt", Prompts[i], "--hooks", Hook, "--out", Sub("clean.safetensors")]);
            Assert.True(exit == 0, err);
            using var clean = SafeTensors.Load(Sub("clean.safetensors"))["logits"];
            Assert.True((clean[0, -1] - one["logits"][0, -1]).abs().max().item<float>() > 1e-3);
        }

        // sae steer: one prompt, a sampled continuation (the same seeds), -1 as its last position.
        string[] steer = ["steer", "--model", model, "--sae", Sub("sae"), "--feature", "2", "--scale", "30", "--prompt", Prompts[1],
            "--max-new-tokens", "5", "--runs", "2", "--temperature", "0.9", "--seed", "4"];
        var negative = CliRunner.Run([.. steer, "--positions", "-1,-2"]);
        var positive = CliRunner.Run([.. steer, "--positions", $"{n[1] - 1},{n[1] - 2}"]);
        Assert.True(negative.Exit == 0, negative.Err);
        Assert.Equal(positive.Out, negative.Out);
        Assert.Equal(positive.Err, negative.Err);
    }

    [Fact]
    public void A_position_named_twice_in_positions_is_steered_once()
    {
        // In a 6-token prompt -1 is 5: 5,-1,0 names positions 5 and 0, as PyTorch's x[:, [5, 5, 0]] += v adds once at each.
        Assert.Equal([5L, 0L], SaeSharp.Cli.Commands.InterventionCommands.ParsePositions("5,-1,0", 6, 10, "x")!);
        Assert.Equal([0L, 3L, 5L], SaeSharp.Cli.Commands.InterventionCommands.ParsePositions("0,3,-1", 6, 10, "x")!);
        Assert.Null(SaeSharp.Cli.Commands.InterventionCommands.ParsePositions(" ", 6, 10, "x"));
    }

    [Fact]
    public void Positions_before_the_prompts_start_and_ambiguous_spellings_are_refused_by_name()
    {
        var (model, n) = Setup();
        string Error(params string[] args)
        {
            var (exit, stdout, err) = CliRunner.Run(args);
            Assert.True(exit != 0, stdout);
            Assert.DoesNotContain("interventions", stdout);
            Assert.False(File.Exists(Sub("x.safetensors")));
            return err.ReplaceLineEndings(" ");
        }
        string[] clt = ["intervene", "--model", model, "--sae", Sub("clt"), "--prompt", Prompts[1], "--prompt", Prompts[0]];
        Assert.Contains($"--set '0:3:1@-{n[0] + 1}': position -{n[0] + 1}: counts back from the end of prompt 1, which has {n[0]} tokens (negative positions run -{n[0]}..-1)",
            Error([.. clt, "--set", $"0:3:1@-{n[0] + 1}"]));
        Assert.Contains($"--set '0:3:1@-{n[0] + 1}-': position -{n[0] + 1}-: counts back from the end of prompt 1",
            Error([.. clt, "--set", $"0:3:1@-{n[0] + 1}-"]));
        // -1 is 4 in a 5-token prompt: given twice there (not in the longer prompt, which is checked first).
        Assert.Contains($"--set '0:3:1@{n[0] - 1},-1': position {n[0] - 1} is given twice (negative positions count from the end of prompt 1, which has {n[0]} tokens)",
            Error([.. clt, "--set", $"0:3:1@{n[0] - 1},-1"]));
        Assert.Contains($"--set '0:3:1@-1-2': the range -1-2 is empty in prompt 0 of {n[1]} tokens (-1 is {n[1] - 1}, 2 is 2; A-B needs A ≤ B)",
            Error([.. clt, "--set", "0:3:1@-1-2"]));
        Assert.Contains("the range -1--3 is empty (A-B needs A ≤ B)", Error([.. clt, "--set", "0:3:1@-1--3"]));
        // Python's slices and an "up to" form are refused with the spelling to use.
        Assert.Contains("'-3:' is a Python slice; positions here are P, A-B (both ends included) and P- (from P on, new tokens included), " +
                        "negative ones counting from the prompt's end: e.g. -3- for [-3:], -3--2 for [-3:-1]", Error([.. clt, "--set", "0:3:1@-3:"]));
        Assert.Contains("'--2' has no first position; a range is A-B with both ends given (a leading minus is a negative position's sign), e.g. 0--2 for positions 0 to -2",
            Error([.. clt, "--set", "0:3:1@--2"]));
        foreach (var bad in new[] { "-0", "-", "+1", "-1--", "-x" })
            Assert.Contains($"the position '{bad}' must be an integer P (negative: from the prompt's end, -1 its last token)", Error([.. clt, "--set", $"0:3:1@{bad}"]));

        string[] run = ["model", "run", "--model", model, "--sae", Sub("sae"), "--steer", "2:30", "--prompt", Prompts[1], "--prompt", Prompts[0],
            "--generate", "3", "--out", Sub("x.safetensors")];
        Assert.Contains($"--positions -{n[0] + 1}: counts back from the end of prompt 1, which has {n[0]} tokens (negative positions run -{n[0]}..-1)",
            Error([.. run, "--positions", $"-{n[0] + 1}"]));
        Assert.Contains("--positions '1,-0': expected comma-separated integers (negative ones count from the prompt's end, -1 its last token)",
            Error([.. run, "--positions", "1,-0"]));
        Assert.Contains($"--positions -{n[1] + 1}: counts back from the end of the prompt, which has {n[1]} tokens",
            Error(["steer", "--model", model, "--sae", Sub("sae"), "--feature", "2", "--scale", "30", "--prompt", Prompts[1], "--positions", $"-{n[1] + 1}"]));
    }
}
