namespace SaeSharp.Tests.Cli;

/// <summary>Notes, warnings and errors on a terminal break between words (the terminal itself would cut
/// "log_to_wandb" into "l" and "og_to_wandb" at column 80), continuation lines indented.</summary>
public sealed class ErrorLineWrapTests
{
    [Fact]
    public void Lines_break_between_words_within_the_width_and_join_back_to_the_line()
    {
        const string line = "note: run.json: ignored: logger (log_to_wandb, log_activations_store_to_wandb, log_optimizer_state_to_wandb, " +
                            "wandb_project, wandb_id) (SaeSharp does not log to Weights & Biases; its logs are train_log.jsonl and tensorboard)";
        foreach (int width in new[] { 80, 40, 33 })
        {
            var lines = SaeSharp.Cli.Cli.Wrap(line, width).Split(Environment.NewLine);
            Assert.True(lines.Length > 1);
            Assert.All(lines, l => Assert.True(l.Length <= width, $"{l.Length} > {width}: {l}"));
            Assert.All(lines.Skip(1), l => Assert.Matches("^  [^ ]", l));
            Assert.Equal(line, string.Join(' ', lines.Select(l => l.TrimStart())));   // every word whole, in order
        }
        // A line that fits, or a width too small to wrap usefully, is left as it is; a word longer than a line stays whole.
        Assert.Equal("error: short", SaeSharp.Cli.Cli.Wrap("error: short", 80));
        Assert.Equal(line, SaeSharp.Cli.Cli.Wrap(line, 8));
        Assert.Equal(["error: the file", "  /a/very/long/path/that/does/not/fit/in/twenty", "  is missing"],
            SaeSharp.Cli.Cli.Wrap("error: the file /a/very/long/path/that/does/not/fit/in/twenty is missing", 20).Split(Environment.NewLine));
    }

    [Fact]
    public void A_summary_line_breaks_between_its_items_never_inside_one()
    {
        // sae train's summary at 80 columns ended "(kl" on one line and "0.184)" on the next.
        const string line = "  mse 0.7018  fvu 0.2443  l0 16.0  dead_fraction 0.4 %  ce_loss_score 97.5 % (kl 0.184)";
        var lines = SaeSharp.Cli.Cli.Wrap(line, 80, "  ", "    ").Split(Environment.NewLine);
        Assert.Equal(["  mse 0.7018  fvu 0.2443  l0 16.0  dead_fraction 0.4 %", "    ce_loss_score 97.5 % (kl 0.184)"], lines);
        Assert.Equal(line, SaeSharp.Cli.Cli.Wrap(line, 120, "  ", "    "));
    }
}
