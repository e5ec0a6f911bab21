using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary><see cref="GenerationResult.Rows"/>: how far each row of a generation got (an early EOS, a shorter prompt of a
/// padded batch), and which steering positions took effect in it.</summary>
public class GenerationStopTests : ModelTestBase
{
    private const int NewTokens = 8;

    /// <summary>A left-padded batch of two prompts (3 and 5 real tokens) with an EOS that only the first row emits: the
    /// EOS is the first token of the first row's own greedy continuation (run alone, no EOS) that the second row's does
    /// not contain. That row stops right after it; the other generates every token asked for.</summary>
    [Fact]
    public void Rows_report_each_rows_prompt_its_new_tokens_and_an_early_eos()
    {
        using var m = Gpt2();
        long[] shortPrompt = [9, 4, 17], longPrompt = [1, 2, 3, 4, 5];
        using var aloneShort = m.Generate(Tokens(shortPrompt), NewTokens);
        using var aloneLong = m.Generate(Tokens(longPrompt), NewTokens);
        var shortNew = aloneShort.Tokens[0].data<long>().Skip(shortPrompt.Length).ToArray();
        var longNew = aloneLong.Tokens[0].data<long>().Skip(longPrompt.Length).ToArray();
        int k = Array.FindIndex(shortNew, t => !longNew.Contains(t));
        Assert.True(k >= 0 && k < NewTokens - 1, $"no usable EOS: short {string.Join(",", shortNew)}, long {string.Join(",", longNew)}");
        long eos = shortNew[k];
        int expectedShort = Array.IndexOf(shortNew, eos) + 1; // its first occurrence, k or earlier

        var mask = tensor(new long[] { 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 }).view(2, 5);
        using var batch = m.Generate(Tokens([0, 0, .. shortPrompt], longPrompt), NewTokens, new GenerationOptions { EosTokenId = eos, AttentionMask = mask });

        Assert.Equal(NewTokens, batch.MaxNewTokens);
        Assert.Equal(new GenerationRow(3, expectedShort, GenerationStop.Eos), batch.Rows[0]);
        Assert.Equal(new GenerationRow(5, NewTokens, GenerationStop.MaxNewTokens), batch.Rows[1]);
        // The tokens agree: the short row's EOS is its last new token and what follows is fill.
        var row0 = batch.Tokens[0].data<long>().Skip(5).ToArray();
        Assert.Equal(shortNew.Take(expectedShort), row0.Take(expectedShort));
        Assert.All(row0.Skip(expectedShort), t => Assert.Equal(eos, t));
        Assert.Equal(longNew, batch.Tokens[1].data<long>().Skip(5).ToArray());
    }

    /// <summary>A single row that stops at EOS: steering at a position the row's tokens reach before the EOS changes its
    /// continuation, steering at the EOS's position or later (never run on this row) leaves it exactly as unsteered, and
    /// <see cref="GenerationRow.Affects"/> says which is which.</summary>
    [Fact]
    public void Steering_positions_past_an_early_eos_leave_the_row_unchanged_and_Affects_says_so()
    {
        using var m = Gpt2();
        long[] prompt = [9, 4, 17];
        using var free = m.Generate(Tokens(prompt), NewTokens);
        long eos = free.Tokens[0, prompt.Length + 2].item<long>(); // the third new token
        var o = new GenerationOptions { EosTokenId = eos };
        using var sae = InterventionTests.RandomSae("blocks.0.hook_resid_post", 16, 32, 1);
        var hooked = new HookedSaeTransformer(m);
        using var plain = hooked.Generate(Tokens(prompt), NewTokens, o);
        var row = plain.Rows[0];
        Assert.Equal(GenerationStop.Eos, row.Stop);
        long last = row.Length - 1; // the EOS
        Assert.Equal(eos, plain.Tokens[0, last].item<long>());
        long maxPosition = prompt.Length + NewTokens - 1;
        for (long p = 0; p <= maxPosition; p++)
        {
            using var steered = hooked.Generate(Tokens(prompt), NewTokens, o, [new Steering(sae, 3, 200.0) { Positions = [p] }]);
            bool same = steered.Tokens.shape[1] == plain.Tokens.shape[1] && steered.Tokens.equal(plain.Tokens).all().item<bool>();
            if (p >= last) Assert.True(same, $"position {p}: steering past the EOS at {last} changed the row");
            else if (p >= prompt.Length - 1) Assert.False(same, $"position {p}: steering before the EOS at {last} changed nothing");
            Assert.Equal(p < last, row.Affects(p));
            // The same position counted back from the prompt's end (prompt positions only), steered the same way.
            if (p < prompt.Length)
            {
                long back = p - prompt.Length;
                using var fromEnd = hooked.Generate(Tokens(prompt), NewTokens, o, [new Steering(sae, 3, 200.0) { Positions = [back] }]);
                Assert.True(fromEnd.Tokens.shape[1] == steered.Tokens.shape[1] && fromEnd.Tokens.equal(steered.Tokens).all().item<bool>(), $"position {back}");
                Assert.Equal(row.Affects(p), row.Affects(back));
            }
        }
        Assert.False(row.Affects(-prompt.Length - 1)); // before the prompt's start
    }
}
