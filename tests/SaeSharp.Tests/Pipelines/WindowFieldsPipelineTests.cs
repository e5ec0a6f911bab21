using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Data;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary>SAELens's seqpos_slice, disable_concat_sequences and sequence_separator_token in the runs on a model: a tiny
/// GPT-2 with the real GPT-2 tokenizer (BOS = EOS = 50256, no SEP) on a small text file.</summary>
public class WindowFieldsPipelineTests : ModelTestBase
{
    private const string Hook = "blocks.0.hook_resid_post";

    [Theory]
    [InlineData("1:", new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 })]
    [InlineData("::3", new[] { 0, 3, 6, 9, 12, 15 })]
    [InlineData("2:-5", new[] { 2, 3, 4, 5, 6, 7, 8, 9, 10 })]
    public void A_sliced_source_hands_out_exactly_the_sliced_positions_and_its_budget_counts_them(string slice, int[] positions)
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2 };
        // 5 windows of every position, harvested as a full run sliced by hand.
        var (full, fullContexts) = Drain(opts with { Tokens = 5 * 16 }, Hook);
        Assert.Equal(5, fullContexts);
        using var byHand = full.view(5, 16, -1).index_select(1, tensor(positions.Select(p => (long)p).ToArray())).reshape(-1, full.shape[1]);
        // The budget counts the rows trained on: 5 windows' worth of sliced positions, then one more row takes a sixth window.
        var (sliced, contexts) = Drain(opts with { Tokens = 5 * positions.Length, SeqposSlice = SeqposSlice.Parse(slice) }, Hook);
        Assert.Equal(5, contexts);
        Assert.Equal(5 * positions.Length, sliced.shape[0]);
        Assert.True(sliced.equal(byHand).all().item<bool>(), "the sliced rows should be the full run's rows at the sliced positions");
        var (_, more) = Drain(opts with { Tokens = 5 * positions.Length + 1, SeqposSlice = SeqposSlice.Parse(slice) }, Hook);
        Assert.Equal(6, more);
        Assert.Equal(6, ModelPipeline.ContextsFor(5 * positions.Length + 1, ModelPipeline.TrainingContextSize(16, SeqposSlice.Parse(slice))));
        full.Dispose();
        sliced.Dispose();
    }

    [Fact]
    public void The_separator_and_disable_concat_change_the_windows_harvested()
    {
        var (model, data) = TinyGpt2WithText();
        var tok = Tokenizer.FromFolder(model);
        var bos = ModelPipeline.Windows(tok, data, 32, true).Take(4).ToList();
        Assert.Contains(bos, w => w.Skip(1).Contains(50256L)); // BOS separates the documents packed into a window
        var none = ModelPipeline.Windows(tok, data, 32, true, sequenceSeparatorToken: PretokenizeToken.None).Take(4).ToList();
        Assert.All(none, w => Assert.DoesNotContain(50256L, w.Skip(1)));
        // One window per line, each the BOS and the line's first 15 tokens.
        var lines = File.ReadAllLines(data);
        var perDocument = ModelPipeline.Windows(tok, data, 16, true, disableConcatSequences: true).ToList();
        Assert.Equal(lines.Length, perDocument.Count);
        Assert.Equal([50256L, .. tok.Encode(lines[3]).Take(15).Select(t => (long)t)], perDocument[3]);
        // GPT-2 has no SEP: asking for it is an error naming it, before any model run.
        var e = Assert.Throws<SaeSharpException>(() => ModelPipeline.OpenSource(
            new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, SequenceSeparatorToken = PretokenizeToken.Sep }, Hook));
        Assert.Contains("sequence_separator_token sep", e.Message);
    }

    [Fact]
    public void A_sliced_cache_stores_the_sliced_positions_and_records_the_window_fields()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions
        {
            ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2, Tokens = 45, SeqposSlice = SeqposSlice.Parse("1:"),
            SequenceSeparatorToken = PretokenizeToken.Eos,
        };
        string dir = Sub("cache");
        var m = ModelPipeline.WriteCache(opts, Hook, dir, contextsPerShard: 2);
        // SAELens's CacheActivationsRunner: n_seq = training_tokens / sliced context size (45 / 15 = 3), sliced rows each.
        Assert.Equal(3, m.TotalContexts);
        Assert.Equal(45, m.TotalRows);
        var (rows, _) = Drain(opts, Hook);
        using (var cached = new ActivationCacheFolder(dir, new ActivationFileSourceOptions { Shuffle = false }))
        {
            using var b = cached.Next(1000)!;
            Assert.True(b.Input.equal(rows).all().item<bool>(), "the cache should hold the sliced source's rows");
        }
        rows.Dispose();
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, ActivationCacheFolder.ManifestName)))!;
        Assert.Equal("[1,null]", manifest["seqpos_slice"]!.ToJsonString());
        Assert.Equal("eos", (string)manifest["sequence_separator_token"]!);
        var meta = TrainingPlan.MetadataOf(ActivationCacheManifest.Read(dir));
        Assert.Equal(SeqposSlice.Parse("1:"), meta.SeqposSlice());
        Assert.Equal(PretokenizeToken.Eos, meta.SequenceSeparatorToken());
        Assert.False(meta.DisableConcatSequences());
        // Resuming with another slice is refused, naming the field.
        var e = Assert.Throws<SaeSharpException>(() => ModelPipeline.WriteCache(opts with { SeqposSlice = SeqposSlice.Parse("2:"), Tokens = 90 }, Hook, dir, contextsPerShard: 2));
        Assert.Contains("seqpos_slice", e.Message);
    }

    [Fact]
    public void Training_from_a_config_with_the_three_fields_records_them_and_trains_on_the_sliced_rows()
    {
        var (model, data) = TinyGpt2WithText();
        string outDir = Sub("run").Replace("\\", "/");
        var s = TrainingSettings.FromJson($$"""
            {"architecture": "topk", "k": 4, "d_sae": 32, "training_tokens": 96, "train_batch_size_tokens": 16, "eval_rows": 16,
             "seqpos_slice": [1, null], "disable_concat_sequences": true, "sequence_separator_token": null, "context_size": 16,
             "store_batch_size_prompts": 2, "normalize_activations": "none", "out": "{{outDir}}"}
            """, "runner.json");
        Assert.Equal(SeqposSlice.Parse("1:"), s.SeqposSlice);
        Assert.True(s.DisableConcatSequences);
        Assert.Equal(PretokenizeToken.None, s.SequenceSeparatorToken);
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, BatchSizePrompts = 2, ContextSize = 16 };
        TrainingRunResult result;
        using (var plan = TrainingPlan.ForModel(s, opts, Hook))
        {
            var src = Assert.IsType<ModelActivationSource>(plan.Options.TrainSource);
            result = plan.Run();
            // training_tokens counts trained rows: 96 / 16 = 6 steps of 16 rows, whatever the slice.
            Assert.Equal(6, result.Steps);
            Assert.Equal(96, result.Tokens);
            // Positions 1..15 of one window per document: 15 rows a window, none at position 0.
            Assert.Equal("1:", (string)src.SaveState()["seqpos_slice"]!);
            Assert.True(src.ContextsConsumed * 15 >= result.RowsDelivered);
        }
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "cfg.json")))!["metadata"]!.AsObject();
        Assert.Equal("[1,null]", cfg["seqpos_slice"]!.ToJsonString());
        Assert.True((bool)cfg["disable_concat_sequences"]!);
        Assert.True(cfg.ContainsKey("sequence_separator_token"));
        Assert.Null(cfg["sequence_separator_token"]);
        using var sae = SaeLoader.Load(outDir);
        Assert.Equal(SeqposSlice.Parse("1:"), sae.Cfg.Metadata.SeqposSlice());
        Assert.True(sae.Cfg.Metadata.DisableConcatSequences());
        Assert.Equal(PretokenizeToken.None, sae.Cfg.Metadata.SequenceSeparatorToken());
    }

    [Fact]
    public void A_flag_wins_over_the_config_field_and_a_run_without_them_records_saelens_defaults()
    {
        var (model, data) = TinyGpt2WithText();
        var s = TrainingSettings.FromJson("""{"architecture": "topk", "k": 4, "d_sae": 32, "steps": 1, "batch_size": 16, "eval_rows": 16, "seqpos_slice": [1, null], "out": "x"}""");
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2, SeqposSlice = SeqposSlice.Parse("::2") };
        using (var plan = TrainingPlan.ForModel(s, opts, Hook))
            Assert.Equal(SeqposSlice.Parse("::2"), plan.ModelData!.SeqposSlice);
        var meta = TrainingPlan.MetadataOf(opts with { SeqposSlice = null }, Hook);
        var json = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(meta))!;
        Assert.Equal("[null]", json["seqpos_slice"]!.ToJsonString());
        Assert.False((bool)json["disable_concat_sequences"]!);
        Assert.Equal("bos", (string)json["sequence_separator_token"]!);
        // A malformed field is an error naming the file and the field.
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"seqpos_slice": [1, "x"]}""", "runner.json"));
        Assert.Contains("runner.json", e.Message);
        Assert.Contains("seqpos_slice", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("""{"sequence_separator_token": "cls"}""", "runner.json"));
        Assert.Contains("runner.json: sequence_separator_token cls", e.Message);
    }

    /// <summary>An SAE is evaluated on the positions its cfg.json seqpos_slice keeps: spliced in only there, and only they
    /// count. (SAELens's run_evals reads windows from ActivationsStore.from_sae, which takes the slice, but computes its
    /// metrics over every position of get_batch_tokens; --seqpos-slice : gives that.)</summary>
    [Fact]
    public void Eval_splices_and_counts_only_the_positions_of_the_saes_seqpos_slice()
    {
        var (model, data) = TinyGpt2WithText();
        // An SAE whose output is 0: spliced in, it zero-ablates the hook, at the positions it is spliced at.
        var cfg = new SaeConfig { DIn = 16, DSae = 32 };
        cfg.Metadata.HookName = Hook;
        cfg.Metadata.ContextSize = 16;
        cfg.Metadata.SetWindowFields(SeqposSlice.Parse("1:"), false, null);
        using (var sae = SaeFactory.Create(cfg))
        {
            using (no_grad()) sae.WDec.zero_();
            SaeLensFormat.Save(sae, Sub("sae"));
        }
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, Tokens = 4 * 15, BatchSizePrompts = 2 };
        var sliced = ModelPipeline.Evaluate([Sub("sae")], opts)[0];
        Assert.Equal(4 * 15, sliced.Tokens);
        // Position 0 keeps its clean activation, so later positions read it: less damage than the zero ablation of every position.
        Assert.True(sliced.CeLossWithSae < sliced.CeLossWithAblation - 1e-4, $"{sliced.CeLossWithSae} vs {sliced.CeLossWithAblation}");
        var all = ModelPipeline.Evaluate([Sub("sae")], opts with { SeqposSlice = SeqposSlice.Parse(":"), Tokens = 4 * 16 })[0];
        Assert.Equal(4 * 16, all.Tokens);
        Assert.Equal(all.CeLossWithAblation, all.CeLossWithSae, 5);
    }
}
