using SaeSharp.Activations;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary>The CLI entry points end to end: a tiny GPT-2 with the real GPT-2 tokenizer on a small text file.</summary>
public class ModelPipelineTests : ModelTestBase
{
    [Fact]
    public void Source_cache_and_eval_entry_points_run_end_to_end()
    {
        var (model, data) = TinyGpt2WithText();
        var tok = Tokenizer.FromFolder(model);
        Assert.Equal(50256, tok.BosTokenId);
        Assert.Contains(50256L, ExcludedTokens.SpecialTokenIds(tok));
        var opts = new ModelDataOptions
        {
            ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 100, ExcludeSpecialTokens = true, BatchSizePrompts = 2,
            Processing = new WeightProcessingOptions { CenterWritingWeights = true },
        };

        // Source: ⌈100/16⌉ = 7 windows, BOS positions (at least one per window) dropped, centred residual stream.
        var windows = ModelPipeline.Windows(tok, data, 16, true).Take(7).ToList();
        long expectedRows = windows.Sum(w => w.Count(t => t != 50256));
        using (var src = ModelPipeline.OpenSource(opts, "blocks.0.hook_resid_post", bufferContexts: 4, seed: 1))
        {
            long rows = 0;
            while (src.Next(10) is { } b)
            {
                rows += b.Rows;
                Assert.True(b.Input.mean([-1]).abs().max().item<float>() < 1e-5, "center_writing_weights should centre resid_post");
                b.Dispose();
            }
            Assert.Equal(expectedRows, rows);
            Assert.Equal(7, src.ContextsConsumed);
        }

        // Cache: same rows, manifest records the processing.
        string dir = Path.Combine(Dir, "cache");
        var m = ModelPipeline.WriteCache(opts, "blocks.0.hook_resid_post", dir, contextsPerShard: 3, dtype: ScalarType.Float16);
        Assert.Equal(expectedRows, m.TotalRows);
        Assert.Equal(3, m.Shards.Count);
        Assert.True(m.ModelFromPretrainedKwargs["center_writing_weights"]);
        Assert.Equal("float16", m.Dtype);
        using (var cached = new ActivationCacheFolder(dir, new ActivationFileSourceOptions { Seed = 2 }))
        {
            long rows = 0;
            while (cached.Next(32) is { } b) { rows += b.Rows; b.Dispose(); }
            Assert.Equal(expectedRows, rows);
            Assert.Equal(16, cached.DIn);
        }

        // Eval: an identity SAE that asks for centred weights recovers all of the loss.
        var cfg = new SaeConfig { DIn = 16, ApplyBDecToInput = false };
        cfg.Metadata.HookName = "blocks.1.hook_resid_pre";
        cfg.Metadata.ContextSize = 16;
        cfg.Metadata.ModelFromPretrainedKwargs = new() { ["center_writing_weights"] = System.Text.Json.JsonDocument.Parse("true").RootElement };
        using (var sae = SaeSharp.Tests.Saes.SaeTestUtil.Identity(cfg)) SaeLensFormat.Save(sae, Path.Combine(Dir, "sae"));
        var r = ModelPipeline.Evaluate([Path.Combine(Dir, "sae")], opts with { Processing = new() })[0];
        Assert.Equal(1, r.CeLossScore, 4);
        Assert.Equal(1, r.ExplainedVariance, 4);
        Assert.Equal(expectedRows, r.Tokens);
    }

    /// <summary>A model run in bfloat16 is recorded: in the cache manifest, and as TransformerLens's <c>dtype</c> keyword in
    /// the SAEs' <c>model_from_pretrained_kwargs</c> (from the cache or from the model directly); float32 records nothing.</summary>
    [Fact]
    public void The_model_dtype_is_recorded_with_the_cache_and_the_saes()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 32, ModelDtype = ScalarType.BFloat16 };
        var m = ModelPipeline.WriteCache(opts, "blocks.0.hook_resid_post", Path.Combine(Dir, "bf16-cache"), contextsPerShard: 2);
        Assert.Equal("bfloat16", m.ModelDtype);
        Assert.Equal("bfloat16", ActivationCacheManifest.Read(Path.Combine(Dir, "bf16-cache")).ModelDtype);
        Assert.Equal("bfloat16", TrainingPlan.MetadataOf(m).ModelFromPretrainedKwargs!["dtype"].GetString());
        var direct = TrainingPlan.MetadataOf(opts with { Processing = new WeightProcessingOptions { FoldLn = true } }, "blocks.0.hook_resid_post");
        Assert.Equal("bfloat16", direct.ModelFromPretrainedKwargs!["dtype"].GetString());
        Assert.True(direct.ModelFromPretrainedKwargs["fold_ln"].GetBoolean());
        // The processing flags read back unchanged with the dtype beside them.
        Assert.True(WeightProcessingOptions.FromKwargs(direct.ModelFromPretrainedKwargs, out var ignored).FoldLn);
        Assert.Equal(["dtype"], ignored);
        Assert.Null(TrainingPlan.MetadataOf(opts with { ModelDtype = ScalarType.Float32 }, "blocks.0.hook_resid_post").ModelFromPretrainedKwargs);
        var f32 = ModelPipeline.WriteCache(opts with { ModelDtype = ScalarType.Float32 }, "blocks.0.hook_resid_post", Path.Combine(Dir, "f32-cache"), contextsPerShard: 2);
        Assert.Null(f32.ModelDtype);

        // Evaluation without a dtype runs the model in the one the SAE recorded.
        var cfg = new SaeConfig { DIn = 16, DSae = 32 };
        cfg.Metadata.HookName = "blocks.1.hook_resid_pre";
        cfg.Metadata.ContextSize = 16;
        cfg.Metadata.ModelFromPretrainedKwargs = direct.ModelFromPretrainedKwargs.Where(kv => kv.Key == "dtype").ToDictionary();
        string saeDir = Path.Combine(Dir, "bf16-sae");
        using (var sae = SaeFactory.Create(cfg))
        {
            sae.InitializeWeights(new Generator(4));
            SaeLensFormat.Save(sae, saeDir);
        }
        double Clean(ScalarType? dtype) => ModelPipeline.Evaluate([saeDir], opts with { ModelDtype = dtype }, meanAblation: false)[0].CeLossWithoutSae;
        double implicitDtype = Clean(null), bf16 = Clean(ScalarType.BFloat16), f32Clean = Clean(ScalarType.Float32);
        Assert.Equal(bf16, implicitDtype);
        Assert.NotEqual(f32Clean, implicitDtype);
    }

    /// <summary>SAEs with different context sizes evaluated together get the figures each gets alone (its own windows).</summary>
    [Fact]
    public void Saes_evaluated_together_each_use_their_own_context_size()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, Tokens = 64, BatchSizePrompts = 2 };
        var paths = new List<string>();
        foreach (var (ctx, seed) in new[] { (16, 1), (8, 2) })
        {
            var cfg = new SaeConfig { DIn = 16, DSae = 32 };
            cfg.Metadata.HookName = "blocks.1.hook_resid_pre";
            cfg.Metadata.ContextSize = ctx;
            using var sae = SaeFactory.Create(cfg);
            sae.InitializeWeights(new TorchSharp.torch.Generator((ulong)seed));
            string dir = Path.Combine(Dir, $"sae-ctx{ctx}");
            SaeLensFormat.Save(sae, dir);
            paths.Add(dir);
        }
        var together = ModelPipeline.Evaluate(paths, opts, meanAblation: false);
        for (int i = 0; i < paths.Count; i++)
        {
            var alone = ModelPipeline.Evaluate([paths[i]], opts, meanAblation: false)[0];
            Assert.Equal(alone.Tokens, together[i].Tokens);
            Assert.Equal(alone.CeLossWithSae, together[i].CeLossWithSae, 6);
            Assert.Equal(alone.CeLossWithoutSae, together[i].CeLossWithoutSae, 6);
        }
        Assert.NotEqual(together[0].CeLossWithoutSae, together[1].CeLossWithoutSae);   // windows of 16 and of 8 tokens
    }

    /// <summary>The Llama-layout families (no weight processing asked for) go through the same entry points: a cache, and
    /// an identity SAE spliced in at a residual hook recovers all of the loss; fold_ln leaves their residual stream as it was.</summary>
    [Theory]
    [InlineData("llama")]
    [InlineData("qwen3")]
    [InlineData("gemma2")]
    public void Llama_layout_models_cache_and_evaluate_unprocessed(string family)
    {
        string model = TinyDecoders.Write(Sub(family), new DecoderSpec { ModelType = family, Vocab = 50257, Tied = family == "gemma2" });
        AddGpt2Tokenizer(model);
        string data = Path.Combine(Dir, "data.txt");
        File.WriteAllLines(data, Enumerable.Range(0, 20).Select(i => $"Line {i}: the quick brown fox jumps over the lazy dog number {i * 7}."));
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 64, BatchSizePrompts = 2 };

        var m = ModelPipeline.WriteCache(opts, "blocks.1.hook_resid_pre", Path.Combine(Dir, family + "-cache"), contextsPerShard: 2);
        Assert.Equal(4 * 16, m.TotalRows);
        Assert.Equal("tiny-" + family, m.Model);

        var cfg = new SaeConfig { DIn = 16, DSae = 32, ApplyBDecToInput = false };
        cfg.Metadata.HookName = "blocks.1.hook_resid_pre";
        cfg.Metadata.ContextSize = 16;
        string saeDir = Path.Combine(Dir, family + "-sae");
        using (var sae = SaeSharp.Tests.Saes.SaeTestUtil.Identity(cfg)) SaeLensFormat.Save(sae, saeDir);
        var r = ModelPipeline.Evaluate([saeDir], opts)[0];
        Assert.Equal(1, r.CeLossScore, 4);
        Assert.Equal(1, r.ExplainedVariance, 4);

        // fold_ln (TransformerLens's, RMSNorm weights into their readers) leaves the residual stream as it was.
        string folded = Path.Combine(Dir, family + "-folded");
        ModelPipeline.WriteCache(opts with { Processing = new WeightProcessingOptions { FoldLn = true } }, "blocks.1.hook_resid_pre", folded, contextsPerShard: 2);
        using var plain = new ActivationCacheFolder(Path.Combine(Dir, family + "-cache"), new ActivationFileSourceOptions { Shuffle = false });
        using var processed = new ActivationCacheFolder(folded, new ActivationFileSourceOptions { Shuffle = false });
        using var a = plain.Next(1000)!;
        using var b = processed.Next(1000)!;
        Assert.True(a.Input.allclose(b.Input, rtol: 1e-4, atol: 1e-5), $"{family}: fold_ln changed blocks.1.hook_resid_pre");
    }

    /// <summary>A cache of the built-in model records the name <c>--model</c> takes, which SAEs trained on it carry as
    /// cfg.json <c>model_name</c>, and which loads that model again.</summary>
    [Fact]
    public void A_cache_of_the_builtin_model_records_builtin()
    {
        string data = Path.Combine(Dir, "stories.jsonl"), dir = Path.Combine(Dir, "builtin-cache");
        SaeSharp.Corpus.LabelledCorpus.Write(data, 2, 4);
        var opts = new ModelDataOptions { ModelPath = SaeSharp.LanguageModels.BuiltinModel.Folder, DatasetPath = data, ContextSize = 32, Tokens = 32 };
        var m = ModelPipeline.WriteCache(opts, "blocks.0.hook_resid_post", dir);
        Assert.Equal("builtin", m.Model);
        Assert.Equal("builtin", TrainingPlan.MetadataOf(m).ModelName);
        Assert.Equal("builtin", TrainingPlan.MetadataOf(opts, "blocks.0.hook_resid_post").ModelName); // as training on the model directly
        Assert.Equal(SaeSharp.LanguageModels.BuiltinModel.Folder, SaeSharp.LanguageModels.BuiltinModel.Resolve(m.Model));
    }

    /// <summary>The unread row ids (window · context size + position) of a source's buffer, in buffer order.</summary>
    private static long[] BufferRowIds(ModelActivationSource src)
    {
        var bytes = Convert.FromBase64String((string)src.SaveState()["buffer_row_ids"]!);
        var ids = new long[bytes.Length / sizeof(long)];
        Buffer.BlockCopy(bytes, 0, ids, 0, bytes.Length);
        return ids;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void N_batches_in_buffer_sizes_the_shuffle_buffer_in_model_runs(int nBatches)
    {
        var (model, data) = TinyGpt2WithText();
        var s = SaeSharp.Training.TrainingSettings.FromJson($$"""
            {"architecture": "topk", "k": 4, "d_sae": 32, "n_batches_in_buffer": {{nBatches}}, "total_training_steps": 2,
             "train_batch_size_tokens": 16, "eval_rows": 16, "out": "{{Sub("run").Replace("\\", "/")}}"}
            """, "runner.json");
        Assert.Equal(nBatches, s.NBatchesInBuffer);
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2 };
        using var plan = TrainingPlan.ForModel(s, opts, "blocks.0.hook_resid_post");
        var src = Assert.IsType<ModelActivationSource>(plan.Options.TrainSource);
        // SAELens's buffer: n_batches_in_buffer model runs of store_batch_size_prompts windows (sae_lens/config.py logs
        // n_tokens_per_buffer = store_batch_size_prompts · context_size · n_batches_in_buffer).
        Assert.Equal(2 * nBatches, src.BufferContexts);
        Assert.Equal(0, src.ContextsConsumed);
        src.Next(1)!.Dispose();
        Assert.Equal(2 * nBatches, src.ContextsConsumed); // the first batch came after filling the buffer: nBatches runs of 2
        // Still shuffled: the unread rows come from every window in the buffer, out of harvest order.
        var ids = BufferRowIds(src);
        Assert.Equal(2 * nBatches * 16 - 1, ids.Length);
        Assert.Equal(2 * nBatches, ids.Select(id => id / 16).Distinct().Count());
        Assert.NotEqual(ids.Order(), ids);
        Assert.True(ids.Take(16).Select(id => id / 16).Distinct().Count() > 1, "the first rows should mix windows");
    }

    [Fact]
    public void Buffer_batches_given_for_the_data_win_over_the_configs_n_batches_in_buffer()
    {
        var (model, data) = TinyGpt2WithText();
        var s = SaeSharp.Training.TrainingSettings.FromJson($$"""
            {"architecture": "topk", "k": 4, "d_sae": 32, "n_batches_in_buffer": 3, "total_training_steps": 2,
             "train_batch_size_tokens": 16, "eval_rows": 16, "out": "{{Sub("run").Replace("\\", "/")}}"}
            """, "runner.json");
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2, BufferBatches = 5 };
        using (var plan = TrainingPlan.ForModel(s, opts, "blocks.0.hook_resid_post"))
            Assert.Equal(10, Assert.IsType<ModelActivationSource>(plan.Options.TrainSource).BufferContexts);
        // Without either: SaeSharp's 64 windows.
        s.NBatchesInBuffer = null;
        using (var plan = TrainingPlan.ForModel(s, opts with { BufferBatches = null }, "blocks.0.hook_resid_post"))
            Assert.Equal(ModelDataOptions.DefaultBufferContexts, Assert.IsType<ModelActivationSource>(plan.Options.TrainSource).BufferContexts);
        var e = Assert.Throws<SaeSharpException>(() => SaeSharp.Training.TrainingSettings.FromJson("""{"n_batches_in_buffer": 0}""", "runner.json"));
        Assert.Contains("runner.json: n_batches_in_buffer 0", e.Message);
    }
}
