using System.Text.Json.Nodes;
using SaeSharp.Corpus;
using SaeSharp.IO;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae lm train</c>'s optimiser flags reach the optimiser; bad values are refused before anything is written.</summary>
public class LmTrainCommandTests : CliTempDirTestBase
{
    private string[] Tiny(string outDir, params string[] more) =>
    [
        "lm", "train", "--corpus", P("c.jsonl"), "--out", outDir, "--steps", "1", "--warm-up-steps", "1", "--d-model", "16",
        "--n-layers", "1", "--n-heads", "2", "--d-mlp", "32", "--context-size", "64", "--batch-size", "2", "--val-docs", "3",
        "--checkpoint-every", "0", "--seed", "1", .. more,
    ];

    /// <summary>
    /// One AdamW step from weights p₀ with gradient g: p₁ = p₀·(1 − lr·W) − lr·ĝ/(√v̂ + ε), and at the first step
    /// ĝ/√v̂ = g/|g|. With lr·W = 1 the decay wipes p₀ out: every element of a decayed matrix is ±lr·|g|/(|g| + ε), at
    /// most lr and (|g| ≫ ε) almost exactly lr. Without the flag (W = 0.1) the start weights N(0, 0.02) stay in. The
    /// embedding is not decayed, so it keeps them either way.
    /// </summary>
    [Fact]
    public void Weight_decay_reaches_adamw_and_is_recorded()
    {
        LabelledCorpus.Write(P("c.jsonl"), 9, 12);
        const double lr = 0.5;
        var r = CliRunner.Run(Tiny(P("w2"), "--lr", "0.5", "--weight-decay", "2"));
        Assert.True(r.Exit == 0, r.Err);
        r = CliRunner.Run(Tiny(P("default"), "--lr", "0.5"));
        Assert.True(r.Exit == 0, r.Err);
        static double AtLr(string dir, string key)
        {
            var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"))[key].data<float>().ToArray();
            Assert.All(w, x => Assert.True(Math.Abs(x) <= lr * (1 + 1e-6), $"{key}: {x} beyond lr"));
            return w.Count(x => Math.Abs(Math.Abs(x) - lr) < 1e-3 * lr) / (double)w.Length;
        }
        Assert.True(AtLr(P("w2"), "gpt_neox.layers.0.mlp.dense_h_to_4h.weight") > 0.95);
        Assert.True(AtLr(P("w2"), "embed_out.weight") > 0.95);
        var embedding = SafeTensors.Load(Path.Combine(P("w2"), "model.safetensors"))["gpt_neox.embed_in.weight"].data<float>().ToArray();
        Assert.True(embedding.Count(x => Math.Abs(Math.Abs(x) - lr) < 1e-3 * lr) < embedding.Length / 2, "the embedding was decayed");
        var kept = SafeTensors.Load(Path.Combine(P("default"), "model.safetensors"))["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"].data<float>().ToArray();
        Assert.True(kept.Count(x => Math.Abs(Math.Abs(x) - lr) < 1e-3 * lr) < kept.Length / 2, "decay 0.1 wiped the weights");
        Assert.Equal(2.0, JsonNode.Parse(File.ReadAllText(P("w2", "training.json")))!["weight_decay"]!.GetValue<double>());
        Assert.Equal(0.1, JsonNode.Parse(File.ReadAllText(P("default", "training.json")))!["weight_decay"]!.GetValue<double>());
    }

    [Theory]
    [InlineData("-1", "--weight-decay -1: expected 0 or more")]
    [InlineData("NaN", "--weight-decay NaN: expected a finite number >= 0")]
    [InlineData("Infinity", "--weight-decay Infinity: expected a finite number >= 0")]
    public void A_bad_weight_decay_writes_nothing(string value, string message)
    {
        LabelledCorpus.Write(P("c.jsonl"), 9, 12);
        var r = CliRunner.Run(Tiny(P("lm"), "--weight-decay", value));
        Assert.Equal(1, r.Exit);
        Assert.Contains(message, r.Err);
        Assert.False(Directory.Exists(P("lm")));
    }

    /// <summary>A context whose attention scores cannot fit (16·4·100000² floats per layer) is refused before the folder is made.</summary>
    [Fact]
    public void A_context_too_large_for_memory_is_refused_before_the_folder()
    {
        LabelledCorpus.Write(P("c.jsonl"), 9, 12);
        var r = CliRunner.Run("lm", "train", "--corpus", P("c.jsonl"), "--out", P("lm"), "--context-size", "100000");
        Assert.Equal(1, r.Exit);
        string err = r.Err.Trim();
        Assert.Matches(@"^error: --context-size 100000, --batch-size 16: one training step needs about [0-9.]+ [TP]B .* but [0-9.]+ [kMGT]B of memory is available; make --context-size or --batch-size smaller", err);
        Assert.DoesNotContain('\n', err);
        Assert.False(Directory.Exists(P("lm")));
    }
}
