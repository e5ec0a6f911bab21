using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae model head-scores --pattern FILE.npy</c>: a detection pattern saved by numpy (tests/data/head_patterns,
/// written by make_patterns.py with /usr/bin/python3's numpy, float64 and float32) or by our own <see cref="SaeSharp.IO.Npy.Save"/>
/// scores as the same pattern in JSON and as the built-in previous-token score; a pattern above the diagonal, of another
/// dtype or shape, or of another length than the prompt is refused naming --pattern and the file.</summary>
public class HeadPatternNpyTests : ModelTestBase
{
    private const string Prompt = "the cat sat on the mat";   // 7 tokens with BOS

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "data", "head_patterns", name);

    private static JsonNode Scores(string json) => JsonNode.Parse(File.ReadAllText(json))!["pattern_score"]!;

    [Fact]
    public void A_npy_pattern_from_numpy_or_our_writer_scores_as_the_json_pattern_and_the_built_in_previous_token_score()
    {
        string dir = TinyModels.WriteGpt2(Sub("m"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 16);
        AddGpt2Tokenizer(dir);
        using var model = ModelLoader.FromPretrained(dir);
        using var tokens = model.ToTokens(Prompt);
        Assert.Equal(7, tokens.shape[1]);
        var builtIn = HeadDetector.Detect(model, [tokens], HeadErrorMeasure.Mul);

        // The previous-token pattern by hand, as JSON and through our own .npy writer (float32).
        var rows = Enumerable.Range(0, 7).Select(i => Enumerable.Range(0, 7).Select(j => j == i - 1 ? 1.0 : 0.0).ToArray()).ToArray();
        string json = Sub("prev.json"), ours = Sub("prev_ours.npy");
        File.WriteAllText(json, System.Text.Json.JsonSerializer.Serialize(rows));
        using (var t = tensor(rows.SelectMany(r => r).Select(v => (float)v).ToArray(), [7, 7])) SaeSharp.IO.Npy.Save(ours, t);
        foreach (var file in new[] { json, Fixture("previous_token_7.npy"), Fixture("previous_token_7_f32.npy"), ours })
        {
            string outJson = Sub($"{Path.GetFileName(file)}.scores.json");
            var (exit, output, err) = CliRunner.Run("model", "head-scores", "--model", dir, "--prompt", Prompt, "--pattern", file, "--json", outJson);
            Assert.True(exit == 0, $"{file}: {err}");
            Assert.Contains("Pattern score", output);
            Assert.DoesNotContain("values other than 0 and 1", err);
            var scores = Scores(outJson);
            for (int l = 0; l < 2; l++)
                for (int h = 0; h < 4; h++)
                    Assert.Equal(builtIn.PreviousToken[l, h], scores[l]![h]!.GetValue<double>(), 1e-12);
        }
    }

    [Fact]
    public void A_bad_npy_pattern_is_refused_naming_the_option_and_the_file()
    {
        string dir = TinyModels.WriteGpt2(Sub("m"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 16);
        AddGpt2Tokenizer(dir);
        string notNpy = Sub("garbage.npy");
        File.WriteAllText(notNpy, "[[1]]");
        foreach (var (file, prompt, message) in new (string, string, string)[]
        {
            (Fixture("upper_7.npy"), Prompt, $"--pattern {Fixture("upper_7.npy")}: row 0 column 3 is 0.5, above the diagonal"),
            (Fixture("previous_token_7_int64.npy"), Prompt, $"--pattern {Fixture("previous_token_7_int64.npy")}: a .npy array of int64; a detection pattern is float32 or float64"),
            (Fixture("vector_7.npy"), Prompt, $"--pattern {Fixture("vector_7.npy")}: a .npy array of shape (7); a detection pattern is square"),
            (Fixture("previous_token_7.npy"), "the cat sat", $"--pattern {Fixture("previous_token_7.npy")}: a [7, 7] pattern for a --prompt of 4 tokens"),
            (Sub("missing.npy"), Prompt, $"--pattern {Sub("missing.npy")}: no such file"),
            (notNpy, Prompt, $"--pattern {notNpy}"),
        })
        {
            var (exit, _, err) = CliRunner.Run("model", "head-scores", "--model", dir, "--prompt", prompt, "--pattern", file);
            Assert.NotEqual(0, exit);
            Assert.Contains(message, err.ReplaceLineEndings(" "));
            Assert.DoesNotContain("   at ", err);   // a one-line error, no stack trace
        }
    }
}
