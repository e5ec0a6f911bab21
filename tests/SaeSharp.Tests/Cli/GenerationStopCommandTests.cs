using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Analysis;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// <c>sae model generate</c> and <c>sae steer</c> when a row stops at EOS before the tokens asked for: the commands say
/// after how many tokens, and which steering positions were never applied. The model is the tiny word-level model of
/// <see cref="AnalysisFixture"/> with the unembedding rows of EOS (id 0) and of a token t swapped: greedy decoding then
/// emits EOS exactly where the original model's greedy continuation has its first t (when no EOS comes before), which is
/// where the row must stop.
/// </summary>
public sealed class GenerationStopCommandTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    private const string Prompt = "the cat sat";
    private const int NewTokens = 8;

    public void Dispose() => _fx.Dispose();

    /// <summary>The swapped model's folder, the prompt's ids, and the number of new tokens greedy decoding must stop after.</summary>
    private (string Model, long[] Ids, int StopsAfter) EosModel()
    {
        var tok = Tokenizer.FromFolder(_fx.ModelDir);
        Assert.Equal(0, tok.EosTokenId);
        var ids = tok.EncodePrompt(Prompt, prependBos: false);
        Assert.Equal(ids, tok.EncodeWithSpecialTokens(Prompt).Select(i => (long)i)); // sae model generate's encoding: the same ids
        long[] free;
        using (var m = ModelLoader.FromPretrained(_fx.ModelDir))
        using (var g = m.Generate(tensor(ids).unsqueeze(0), NewTokens))
            free = g.Tokens[0].data<long>().Skip(ids.Length).ToArray();
        long t = free[3];
        int stop = Array.IndexOf(free, t);
        Assert.True(t != 0 && !free.Take(stop).Contains(0), $"the free continuation {string.Join(",", free)} has EOS before token 4");

        string dir = Path.Combine(_fx.Dir, "eos-model");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(_fx.ModelDir)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var weights = SafeTensors.Load(Path.Combine(_fx.ModelDir, "model.safetensors"));
        using (no_grad())
        {
            var u = weights["embed_out.weight"];
            var row0 = u[0].clone();
            u[0].copy_(u[t]);
            u[t].copy_(row0);
        }
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), weights);
        foreach (var w in weights.Values) w.Dispose();
        return (dir, ids, stop + 1);
    }

    private static (List<string> Out, List<string> Err) Run(params string[] args)
    {
        using var process = new CliProcess(args);
        int exit = process.WaitForExit(TimeSpan.FromMinutes(2));
        Assert.True(exit == 0, string.Join("\n", process.Lines));
        return (process.Output.ToList(), process.Errors.ToList());
    }

    [Fact]
    public void Model_generate_says_after_how_many_tokens_it_stopped_at_eos()
    {
        var (model, _, stopsAfter) = EosModel();
        var (_, err) = Run("model", "generate", "--model", model, "--prompt", Prompt, "--max-new-tokens", NewTokens.ToString());
        Assert.Equal([$"note: stopped at EOS after {stopsAfter} of {NewTokens} new tokens"], err);
        // Asked for no more than it generates: nothing to say.
        (_, err) = Run("model", "generate", "--model", model, "--prompt", Prompt, "--max-new-tokens", (stopsAfter - 1).ToString());
        Assert.Empty(err);
    }

    /// <summary>sae steer with steering positions before the EOS, at it, and at the last position asked for: both
    /// continuations stop at the EOS (the steering scale is 0), and the steered one names the two positions never applied.</summary>
    [Fact]
    public void Steer_names_the_steering_positions_an_early_eos_left_unapplied()
    {
        var (model, ids, stopsAfter) = EosModel();
        int eosAt = ids.Length + stopsAfter - 1, lastAsked = ids.Length + NewTokens - 1;
        var (_, err) = Run("steer", "--model", model, "--sae", _fx.SaeDir, "--feature", "0", "--scale", "0", "--prompt", Prompt,
            "--no-prepend-bos", "--runs", "1", "--temperature", "0", "--max-new-tokens", NewTokens.ToString(),
            "--positions", $"{ids.Length - 1},{eosAt},{lastAsked}");
        string stopped = $"stopped at EOS after {stopsAfter} of {NewTokens} new tokens";
        Assert.Equal(2, err.Count);
        Assert.Equal($"note: seed 0, unsteered: {stopped}", err[0]);
        Assert.StartsWith($"note: seed 0, steered: {stopped}; steering at positions {eosAt}, {lastAsked} never applied", err[1]);
    }
}
