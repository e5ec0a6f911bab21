using System.Text.Json.Nodes;
using SaeSharp.Cli.Commands;
using SaeSharp.Analysis;
using SaeSharp.Interventions;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae model path-patch --direct</c>, <c>--sender mlp.L</c> and <c>--receiver-positions</c> on a tiny GPT-2
/// (2 layers of 2 heads, GPT-2's tokenizer): the JSON holds what <see cref="DirectPathPatching"/> and <see cref="PathPatching"/>
/// (each tested against hand-written hook runs) give for the same tokens, the table shows the layers after the source,
/// the fold_ln warning comes and goes with <c>--fold-ln</c>, and bad spellings are refused naming the flag.</summary>
public class PathPatchCommandTests : TinyGpt2CliTestBase
{
    private const string Clean = "The cat sat on the mat", Corrupted = "The dog sat on the mat";
    private static readonly AttributionMetric[] Metric = [AttributionMetric.LogitDiff(262, 13)];

    private static string[] Pair(string model) => ["model", "path-patch", "--model", model, "--clean", Clean, "--corrupted", Corrupted, "--metric", "logit-diff:262,13"];

    private static (Tensor Clean, Tensor Corrupted) Tokens(HookedTransformer m) =>
        (ModelCommands.PromptTokens(m, Clean, true, "--clean"), ModelCommands.PromptTokens(m, Corrupted, true, "--corrupted"));

    private static double[,] Grid(JsonNode? node)
    {
        var rows = node!.AsArray();
        var g = new double[rows.Count, rows[0]!.AsArray().Count];
        for (int i = 0; i < rows.Count; i++)
            for (int j = 0; j < g.GetLength(1); j++) g[i, j] = rows[i]![j]!.GetValue<double>();
        return g;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Direct_prints_the_later_layers_and_writes_TransformerLens_grid_json_and_png(bool foldLn)
    {
        string model = Model();
        var r = CliRunner.Run([.. Pair(model), "--direct", "--sender", "0.1", "--receiver-input", "v", "--json", P("d.json"), "--png", P("d.png"),
            .. (foldLn ? new[] { "--fold-ln" } : [])]);
        Ok(r);
        Assert.Contains("direct path L0H1 → each later head's hook_v", r.Out);
        Assert.Contains("effect: (patched − corrupted) / (clean − corrupted)", r.Out);
        var lines = r.Out.Split('\n');
        Assert.Contains(lines, l => l.StartsWith("L1", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.StartsWith("L0", StringComparison.Ordinal));   // no path to the source's own layer
        Assert.Equal(!foldLn, r.Err.Contains("warning: direct path patching is most accurate when LayerNorm parameters are folded", StringComparison.Ordinal));
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(P("d.png"))[..4]);
        var json = JsonNode.Parse(File.ReadAllText(P("d.json")))!;
        Assert.True(json["direct"]!.GetValue<bool>());
        Assert.Equal("L0H1", json["sender"]!.GetValue<string>());
        var grid = Grid(json["patched"]);
        using var m = ModelLoader.FromPretrained(model);
        if (foldLn) WeightProcessing.Apply(m, new WeightProcessingOptions { FoldLn = true });
        using var scope = NewDisposeScope();
        var (clean, corrupted) = Tokens(m);
        var expected = DirectPathPatching.Run(m, clean, corrupted, new AttentionHead(0, 1), PathReceiverInput.V, Metric);
        Assert.Equal(expected.Corrupted, json["corrupted"]!.GetValue<double>(), 1e-5);
        for (int h = 0; h < 2; h++)
        {
            Assert.Equal(0.0, grid[0, h]);
            Assert.Equal(expected.Patched[1, h], grid[1, h], 1e-5);
        }
    }

    [Fact]
    public void An_MLP_sender_to_one_position_of_a_receiver_is_the_library_run()
    {
        string model = Model();
        var r = CliRunner.Run([.. Pair(model), "--sender", "mlp.0", "--receiver", "1.1", "--receiver-input", "k", "--receiver-positions", "-1,2", "--json", P("m.json")]);
        Ok(r);
        Assert.Contains("path mlp.0 → hook_k_input of L1H1 at positions 6,2: patched", r.Out);
        var json = JsonNode.Parse(File.ReadAllText(P("m.json")))!;
        Assert.Equal("mlp.0", json["senders"]![0]!.GetValue<string>());
        using var m = ModelLoader.FromPretrained(model);
        using var scope = NewDisposeScope();
        var (clean, corrupted) = Tokens(m);
        var expected = PathPatching.Run(m, clean, corrupted, [], [new AttentionHead(1, 1)], PathReceiverInput.K, Metric, senderMlps: [0], receiverPositions: [6, 2]);
        Assert.Equal(expected.Patched, json["patched"]!.GetValue<double>(), 1e-5);
        Assert.NotEqual(expected.Clean, expected.Patched, 1e-6);
    }

    [Fact]
    public void Bad_senders_positions_and_direct_combinations_are_refused_naming_the_flag()
    {
        string model = Model();
        (string[] Args, string Message)[] cases =
        [
            (["--sender", "mlp.x"], "--sender 'mlp.x': write an MLP as mlp.LAYER"),
            (["--sender", "1.mlp"], "--sender '1.mlp': write a head as LAYER.HEAD (0.8) or L0H8, an MLP as mlp.LAYER"),
            (["--sender", "mlp.2"], "--sender mlp.2: "),
            (["--sender", "mlp.1", "--receiver", "1.0"], "--sender mlp.1: layer 1 is not before any --receiver (L1H0)"),
            (["--receiver-positions", "3"], "--receiver-positions: give --receiver heads too"),
            (["--receiver", "1.0", "--receiver-positions", "9"], "--receiver-positions 9: the prompts have 7 tokens"),
            (["--receiver", "1.0", "--receiver-positions", "-8"], "--receiver-positions -8: counts back from the end"),
            (["--direct"], "--direct needs one --sender head L.H (the source; none given)"),
            (["--direct", "--sender", "mlp.0"], "--direct needs one --sender head L.H (the source; mlp.0 is an MLP)"),
            (["--direct", "--sender", "0.0", "--receiver", "1.0"], "--receiver: --direct patches every head after the --sender's layer"),
            (["--direct", "--sender", "0.0", "--receiver-positions", "1"], "--receiver-positions: --direct adds the path at every position"),
            (["--direct", "--sender", "0.2"], "--sender 0.2: head 2 is outside"),
            (["--direct", "--sender", "1.0", "--png", "x.png"], "--sender L1H0 is in the last layer"),
        ];
        foreach (var (args, message) in cases)
            Assert.Contains(message, OneLineError(CliRunner.Run([.. Pair(model), .. args])));
        Assert.False(File.Exists("x.png"));
    }
}
