using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SaeSharp.Cli.Commands;
using SaeSharp.Corpus;
using SaeSharp.IO;
using SaeSharp.LanguageModels;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae lm train</c>'s optimiser flags reach the optimiser; bad values are refused before anything is written.</summary>
public class LmTrainCommandTests : CliTempDirTestBase
{
    private string[] Tiny(string outDir, params string[] more) =>
    [
        "lm", "train", "--corpus", P("c.jsonl"), "--out", outDir, "--steps", "1", "--warm-up-steps", "1", "--d-model", "16",
        "--n-layers", "1", "--n-heads", "2", "--d-mlp", "32", "--context-size", "128", "--batch-size", "2", "--val-docs", "3",
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

    /// <summary>The line after a stop names the weights and the checkpoint written, and the command that continues: the
    /// same arguments without --force, with --resume, a path with a space quoted for the shell.</summary>
    [Fact]
    public void The_stop_line_names_what_was_written_and_the_resume_command()
    {
        var r = new LmTrainingResult("m", 10, 0, 0, double.NaN, null, 1, 1);
        Assert.Equal($"stopped at step 10; wrote {Path.Combine("m", "model.safetensors")} and the checkpoint /x/m/checkpoints/step_000000010 " +
            "(no training.json: the run did not end)\ncontinue with: sae lm train --corpus 'my corpus.jsonl' --out m --resume",
            LmCommand.StoppedLine(r, "/x/m/checkpoints/step_000000010", ["lm", "train", "--corpus", "my corpus.jsonl", "--out", "m", "--force"]));
        Assert.EndsWith("--out m --resume --seed 1",
            LmCommand.StoppedLine(r, "c", ["lm", "train", "--out", "m", "--resume", "--seed", "1"]));
        // Started as ./sae (the script passes its path in SAE_LAUNCHER), the line starts so; a path with a space is quoted.
        Assert.EndsWith("\ncontinue with: ./sae lm train --out m --resume", LmCommand.StoppedLine(r, "c", ["lm", "train", "--out", "m"], "./sae"));
        Assert.EndsWith("\ncontinue with: '/my tools/sae' lm train --out m --resume", LmCommand.StoppedLine(r, "c", ["lm", "train", "--out", "m"], "/my tools/sae"));
    }

    [Fact]
    public void A_resume_without_checkpoints_or_with_force_is_refused()
    {
        LabelledCorpus.Write(P("c.jsonl"), 9, 12);
        var r = CliRunner.Run(Tiny(P("lm"), "--resume"));
        Assert.Equal(1, r.Exit);
        Assert.Contains($"--resume: no checkpoints in {P("lm", "checkpoints")}", r.Err);
        r = CliRunner.Run(Tiny(P("lm"), "--resume", "--force"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("give --resume (continue the run in --out) or --force (replace it), not both", r.Err);
        Assert.False(Directory.Exists(P("lm")));
    }

    /// <summary>
    /// <c>sae lm eval --docs 1</c> scores the corpus's last story alone: in its window [BOS, story, padding] every word is
    /// predicted from BOS and the words before it, so the loss is the mean over the words of −log softmax(logits)[next],
    /// computed here in float64 from the built-in model's logits on [BOS, story] by hand, and the floor is the mean of the
    /// story's own <c>choice_nats</c>, read from the .jsonl.
    /// </summary>
    [Fact]
    public void Lm_eval_of_the_last_story_is_its_mean_next_word_loss_and_mean_choice_nats()
    {
        LabelledCorpus.Write(P("c.jsonl"), 21, 3);
        var last = JsonNode.Parse(File.ReadAllLines(P("c.jsonl"))[^1])!;
        string text = last["text"]!.GetValue<string>();
        var nats = last["choice_nats"]!.AsArray().Select(n => n!.GetValue<double>()).ToArray();
        var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
        var ids = tok.Encode(text);
        Assert.Equal(last["words"]!.AsArray().Count, ids.Length);
        double sum = 0;
        using (var m = BuiltinModel.Load())
        using (no_grad())
        {
            long[] input = [tok.BosTokenId ?? 0, .. ids.Select(i => (long)i)];
            using var logits = m.Forward(tensor(input).view(1, -1));
            var flat = logits.data<float>().ToArray();
            int vocab = (int)logits.shape[^1];
            for (int i = 0; i < ids.Length; i++)
            {
                var row = flat.AsSpan(i * vocab, vocab).ToArray().Select(x => (double)x).ToArray();
                double max = row.Max(), lse = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
                sum += lse - row[ids[i]];
            }
        }
        double loss = sum / ids.Length, floor = nats.Average();
        var r = CliRunner.Run("lm", "eval", "--model", "builtin", "--corpus", P("c.jsonl"), "--docs", "1");
        Assert.True(r.Exit == 0, r.Err);
        var match = Regex.Match(r.Out, @"validation loss ([0-9.]+) nats/token \(entropy floor ([0-9.]+); gap (-?[0-9.]+)\)");
        Assert.True(match.Success, r.Out);
        Assert.Equal(loss, double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), 4);
        Assert.Equal(floor, double.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture), 4);
    }

    /// <summary>A window shorter than a story would cut it, and the floor of a story's first words is no bound on their
    /// loss (the generator's early choices, such as the tense and the names, count where they are made): refused, naming
    /// the smallest context that fits the longest story (its words + BOS, counted from the .jsonl). A context whose
    /// attention scores cannot fit in memory is refused instead of aborting in the native allocator.</summary>
    [Fact]
    public void Lm_eval_refuses_a_context_that_cuts_stories_or_cannot_fit()
    {
        LabelledCorpus.Write(P("c.jsonl"), 21, 5);
        int longest = File.ReadAllLines(P("c.jsonl")).Max(l => JsonNode.Parse(l)!["words"]!.AsArray().Count);
        var r = CliRunner.Run("lm", "eval", "--model", "builtin", "--corpus", P("c.jsonl"), "--context-size", "16");
        Assert.Equal(1, r.Exit);
        Assert.Contains($"--context-size 16: 5 of the 5 validation stories of {P("c.jsonl")} are longer than a window (15 tokens after BOS; " +
                        $"the longest has {longest})", r.Err.ReplaceLineEndings(" "));
        Assert.Contains($"give --context-size {longest + 1} or more", r.Err.ReplaceLineEndings(" "));
        Assert.Equal(0, CliRunner.Run("lm", "eval", "--model", "builtin", "--corpus", P("c.jsonl"), "--context-size", $"{longest + 1}").Exit);
        r = CliRunner.Run("lm", "eval", "--model", "builtin", "--corpus", P("c.jsonl"), "--context-size", "1000000");
        Assert.Equal(1, r.Exit);
        Assert.Matches(@"^error: --context-size 1000000: the validation pass needs about [0-9.]+ [TP]B .* give a smaller --context-size$",
            r.Err.ReplaceLineEndings(" ").Trim());
    }

    [Fact]
    public void Lm_eval_names_a_bad_corpus()
    {
        Directory.CreateDirectory(P("folder"));
        File.WriteAllText(P("empty.jsonl"), "");
        File.WriteAllText(P("nats.jsonl"), "{\"text\": \"Mia runs .\", \"choice_nats\": [1, \"x\", 2]}\n");
        (string File, string Message)[] cases =
        [
            (P("folder"), $"{P("folder")} is a folder: a labelled corpus is one .jsonl file"),
            (P("empty.jsonl"), $"{P("empty.jsonl")}: no stories (an empty corpus)"),
            (P("nats.jsonl"), $"{P("nats.jsonl")} line 1: choice_nats must be numbers, got \"x\""),
        ];
        foreach (var (file, message) in cases)
        {
            var r = CliRunner.Run("lm", "eval", "--model", "builtin", "--corpus", file);
            Assert.Equal(1, r.Exit);
            Assert.Contains(message, r.Err.ReplaceLineEndings(" "));
        }
    }

    /// <summary>A second run into a folder that holds a model (a finished run, or the checkpoint a killed run left) is
    /// refused, the folder's bytes untouched; with --force it replaces the model.</summary>
    [Fact]
    public void Lm_train_into_a_model_folder_needs_force()
    {
        LabelledCorpus.Write(P("c.jsonl"), 9, 12);
        Assert.Equal(0, CliRunner.Run(Tiny(P("lm"))).Exit);
        var before = Directory.GetFiles(P("lm")).Order(StringComparer.Ordinal).Select(f => (f, File.ReadAllBytes(f))).ToList();
        var r = CliRunner.Run(Tiny(P("lm"), "--lr", "0.01"));
        Assert.Equal(1, r.Exit);
        Assert.Contains($"{P("lm")} holds a language model (model.safetensors, config.json, training.json): replace it with --force, or choose another --out",
            r.Err.ReplaceLineEndings(" "));
        var after = Directory.GetFiles(P("lm")).Order(StringComparer.Ordinal).Select(f => (f, File.ReadAllBytes(f))).ToList();
        Assert.Equal(before.Select(x => x.f), after.Select(x => x.f));
        Assert.All(before.Zip(after), p => Assert.Equal(p.First.Item2, p.Second.Item2));
        File.Delete(P("lm", "training.json"));
        Assert.Equal(1, CliRunner.Run(Tiny(P("lm"), "--lr", "0.01")).Exit);
        Assert.Equal(0, CliRunner.Run(Tiny(P("lm"), "--lr", "0.01", "--force")).Exit);
        Assert.NotEqual(before.Single(x => x.f.EndsWith("model.safetensors", StringComparison.Ordinal)).Item2, File.ReadAllBytes(P("lm", "model.safetensors")));
    }
}
