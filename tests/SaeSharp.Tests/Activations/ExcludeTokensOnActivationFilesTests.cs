using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.LanguageModels;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>
/// SAELens's <c>exclude_special_tokens</c> on cached activations (<c>_filter_buffer_acts</c>: rows whose token_ids entry is
/// excluded are dropped): row r of every cache here holds the value r in each column and the token id r % 5, so the rows a
/// reader hands out say by their values which rows they are, and the kept ones are exactly those with r % 5 not excluded.
/// </summary>
public class ExcludeTokensOnActivationFilesTests : IDisposable
{
    private const int D = 3, Rows = 200, Ctx = 10;
    private readonly string _dir = Directory.CreateTempSubdirectory("excl-").FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, true);
        GC.SuppressFinalize(this);
    }

    private string P(string name) => Path.Combine(_dir, name);

    private static long TokenOf(long row) => row % 5;

    /// <summary>Rows r (value r, token r % 5) of <paramref name="rows"/>, in shards of <paramref name="perShard"/> source rows,
    /// written as a SaeSharp cache whose manifest records <paramref name="model"/> and the exclusion <paramref name="harvested"/>
    /// (the shards then hold only the rows whose token it does not name, as sae cache writes them).</summary>
    private string SaeSharpCache(string name, long[]? harvested = null, string model = "builtin", bool listed = true, int perShard = 60)
    {
        string dir = P(name);
        Directory.CreateDirectory(dir);
        var m = new ActivationCacheManifest
        {
            Model = model, Hook = "blocks.0.hook_resid_post", DIn = D, DOut = D, ContextSize = Ctx, ContextsPerShard = perShard / Ctx, RowsPerShard = perShard,
            ExcludeTokenIds = harvested ?? [], ExcludeTokenIdsListed = listed, Complete = true,
        };
        for (int s = 0; s * perShard < Rows; s++)
        {
            var rows = Enumerable.Range(s * perShard, Math.Min(perShard, Rows - s * perShard)).Select(r => (long)r)
                .Where(r => harvested is null || !harvested.Contains(TokenOf(r))).ToArray();
            using var acts = tensor(rows.Select(r => (float)r).ToArray()).unsqueeze(1).expand(-1, D).contiguous();
            using var ids = tensor(rows.Select(TokenOf).ToArray());
            string file = ActivationCacheFolder.ShardName(s);
            SafeTensors.Save(Path.Combine(dir, file), new Dictionary<string, Tensor> { ["activations"] = acts, ["token_ids"] = ids });
            m.Shards.Add(new ActivationCacheShard { File = file, Rows = rows.Length, Contexts = perShard / Ctx });
            m.TotalRows += rows.Length;
            m.TotalContexts += perShard / Ctx;
        }
        m.Save(dir);
        return dir;
    }

    /// <summary>The same rows as a SAELens activation cache: windows of <see cref="Ctx"/> rows, 7 windows a shard.</summary>
    private string SaeLensCache(string name)
    {
        string dir = P(name);
        var column = new SaeLensCacheColumn("blocks.0.hook_resid_post", Ctx, D, "float32");
        IEnumerable<(Tensor, long[])> Windows()
        {
            for (int w = 0; w < Rows / Ctx; w++)
            {
                var rows = Enumerable.Range(w * Ctx, Ctx).Select(r => (long)r).ToArray();
                yield return (tensor(rows.Select(r => (float)r).ToArray()).unsqueeze(1).expand(-1, D).contiguous(), rows.Select(TokenOf).ToArray());
            }
        }
        SaeLensActivationCache.WriteFolder(dir, column, 7, Windows(), null);
        return dir;
    }

    /// <summary>Every row a source hands out, as the row numbers its values encode (checking each row is constant).</summary>
    private static List<long> Drain(IActivationSource source, int batch = 16)
    {
        var seen = new List<long>();
        while (source.Next(batch) is { } b)
            using (b)
            {
                var v = b.Input.data<float>().ToArray();
                for (int i = 0; i < v.Length; i += D)
                {
                    Assert.True(v[i] == v[i + 1] && v[i] == v[i + 2], $"row {v[i]} is not constant");
                    seen.Add((long)v[i]);
                }
            }
        return seen;
    }

    private static List<long> Kept(params long[] excluded) =>
        Enumerable.Range(0, Rows).Select(r => (long)r).Where(r => !excluded.Contains(TokenOf(r))).ToList();

    [Fact]
    public void A_SaeSharp_cache_read_in_order_hands_out_exactly_the_rows_of_tokens_not_excluded()
    {
        string dir = SaeSharpCache("cache");
        using var source = new ActivationCacheFolder(dir, new ActivationFileSourceOptions { Shuffle = false, ChunkRows = 7, ExcludeTokenIds = [0, 3] });
        Assert.Equal(Kept(0, 3).Count, source.Rows);
        Assert.Equal(Kept(0, 3), Drain(source));
    }

    [Fact]
    public void A_SAELens_cache_shuffled_hands_out_each_kept_row_once()
    {
        string dir = SaeLensCache("saelens");
        var options = new ActivationFileSourceOptions { Seed = 5, ChunkRows = 8, BufferRows = 24, ExcludeTokenIds = [1], HookName = "blocks.0.hook_resid_post" };
        using var source = new ActivationFileSource(dir, options);
        Assert.Equal(Kept(1).Count, source.Rows);
        var seen = Drain(source, 5);
        Assert.Equal(Kept(1), seen.Order().ToList());
        Assert.NotEqual(Kept(1), seen); // shuffled
        // And in order: the same rows in file order.
        using var ordered = new ActivationFileSource(dir, options with { Shuffle = false });
        Assert.Equal(Kept(1), Drain(ordered));
    }

    [Fact]
    public void Held_out_rows_are_the_last_kept_rows()
    {
        string dir = SaeSharpCache("cache");
        var (train, eval) = ActivationSplit.HoldOut([dir], 10, new ActivationFileSourceOptions { Shuffle = false, ExcludeTokenIds = [2], InputName = "activations" });
        using (train)
        using (eval)
        {
            var kept = Kept(2);
            Assert.Equal(kept[..^10], Drain(train));
            Assert.Equal(kept[^10..], Drain(eval));
        }
    }

    [Fact]
    public void Filtering_at_read_time_gives_the_batches_of_a_cache_harvested_with_the_exclusion()
    {
        string raw = SaeSharpCache("raw"), harvested = SaeSharpCache("harvested", harvested: [0, 3]);
        var options = new ActivationFileSourceOptions { Seed = 9, ChunkRows = 16, BufferRows = 32, Loop = true };
        using var a = new ActivationCacheFolder(raw, options with { ExcludeTokenIds = [0, 3] });
        using var b = new ActivationCacheFolder(harvested, options);
        Assert.Equal(b.Rows, a.Rows);
        for (int i = 0; i < 30; i++)
        {
            using var x = a.Next(13)!;
            using var y = b.Next(13)!;
            Assert.True(x.Input.equal(y.Input).all().item<bool>(), $"batch {i} differs: {string.Join(",", x.Input[.., 0].data<float>().ToArray())} vs {string.Join(",", y.Input[.., 0].data<float>().ToArray())}");
        }
    }

    [Fact]
    public void Resume_restores_the_position_and_refuses_another_exclusion()
    {
        string dir = SaeSharpCache("cache");
        var options = new ActivationFileSourceOptions { Seed = 2, ChunkRows = 8, BufferRows = 16, ExcludeTokenIds = [4] };
        JsonNode state;
        List<long> rest;
        using (var s = new ActivationCacheFolder(dir, options))
        {
            s.Next(21)!.Dispose();
            state = s.SaveState();
            rest = Drain(s, 7);
        }
        using (var s = new ActivationCacheFolder(dir, options))
        {
            s.LoadState(state);
            Assert.Equal(rest, Drain(s, 7));
        }
        using var other = new ActivationCacheFolder(dir, options with { ExcludeTokenIds = [4, 0] });
        var e = Assert.Throws<SaeSharpException>(() => other.LoadState(state));
        Assert.Contains("dropped the rows of token ids 4 (exclude_special_tokens), but this source drops those of token ids 0, 4", e.Message);
    }

    [Fact]
    public void Files_without_token_ids_are_refused_naming_the_file()
    {
        string file = P("plain.safetensors");
        using (var rows = ones(20, D)) SafeTensors.Save(file, new Dictionary<string, Tensor> { ["activations"] = rows });
        var e = Assert.Throws<SaeSharpException>(() => new ActivationFileSource(file, new ActivationFileSourceOptions { ExcludeTokenIds = [0] }));
        Assert.StartsWith($"{file}: stores no token id per row, so the rows of token ids 0 (exclude_special_tokens) cannot be dropped", e.Message);
        var all = Assert.Throws<SaeSharpException>(() => new ActivationCacheFolder(SaeSharpCache("cache"), new ActivationFileSourceOptions { ExcludeTokenIds = [0, 1, 2, 3, 4] }));
        Assert.Contains("every row's token is excluded (token ids 0, 1, 2, 3, 4)", all.Message);
    }

    [Fact]
    public void True_takes_the_special_tokens_of_the_recorded_model_and_a_list_needs_no_tokenizer()
    {
        var special = ExcludedTokens.SpecialTokenIds(Tokenizer.FromFolder(BuiltinModel.Folder));
        Assert.NotEmpty(special);
        Assert.Equal(special.Order(), ActivationFileExclusion.Resolve(SaeSharpCache("builtin"), true, null, "run")!);
        // A list: as given, whatever model (none) the cache records.
        Assert.Equal([0L, 3], ActivationFileExclusion.Resolve(SaeSharpCache("nomodel", model: ""), null, [3, 0, 3], "run")!);
        // Rows harvested with the exclusion pass through.
        Assert.Null(ActivationFileExclusion.Resolve(SaeSharpCache("done", harvested: [0, 3]), null, [3], "run"));
        Assert.Null(ActivationFileExclusion.Resolve(SaeSharpCache("doneTrue", harvested: [.. special], listed: false), true, null, "run"));
        Assert.Null(ActivationFileExclusion.Resolve(SaeSharpCache("off"), false, null, "run"));
        var e = Assert.Throws<SaeSharpException>(() => ActivationFileExclusion.Resolve(P("nomodel"), true, null, "run.json"));
        Assert.StartsWith($"run.json: exclude_special_tokens true: the special tokens are those of the tokenizer of the model the rows came from, and {P("nomodel")} records no model", e.Message);
        var missing = SaeSharpCache("missing", model: Path.Combine(_dir, "no-such-model"));
        var e2 = Assert.Throws<SaeSharpException>(() => ActivationFileExclusion.Resolve(missing, true, null, "run.json"));
        Assert.StartsWith($"run.json: exclude_special_tokens true: the tokenizer of '{Path.Combine(_dir, "no-such-model")}' (the model of {Path.Combine(missing, "manifest.json")}), which defines the special tokens, cannot be found", e2.Message);
    }

    private TrainingSettings Settings(string activations, string exclude, string outName) => TrainingSettings.FromJson($$"""
        {"activations": "{{activations.Replace("\\", "/")}}", "batch_size": 16, "eval_rows": 20, "steps": 6, "expansion_factor": 2, "architecture": "standard",
         "deterministic": true, "seed": 4, "out": "{{P(outName).Replace("\\", "/")}}", "exclude_special_tokens": {{exclude}} }
        """, "runner.json");

    [Fact]
    public void Deterministic_training_on_a_filtered_cache_equals_training_on_a_cache_harvested_with_the_exclusion()
    {
        string raw = SaeSharpCache("raw"), harvested = SaeSharpCache("harvested", harvested: [0, 3]);
        using (var plan = TrainingPlan.ForActivations(Settings(raw, "[0, 3]", "a"))) plan.Run();
        using (var plan = TrainingPlan.ForActivations(Settings(harvested, "[0, 3]", "b"))) plan.Run();
        using var wa = SafeTensorsFile.Open(Path.Combine(P("a"), "sae_weights.safetensors"));
        using var wb = SafeTensorsFile.Open(Path.Combine(P("b"), "sae_weights.safetensors"));
        foreach (var name in wa.Names)
        {
            using var x = wa.Read(name);
            using var y = wb.Read(name);
            Assert.True(x.equal(y).all().item<bool>(), $"{name} differs");
        }
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(P("a"), "cfg.json")))!;
        Assert.Equal("[0,3]", cfg["metadata"]!["exclude_special_tokens"]!.ToJsonString());
        // Unfiltered, the same run trains on other rows.
        using (var plan = TrainingPlan.ForActivations(Settings(raw, "false", "c"))) plan.Run();
        using var wc = SafeTensorsFile.Open(Path.Combine(P("c"), "sae_weights.safetensors"));
        using var ca = wa.Read("W_enc");
        using var cc = wc.Read("W_enc");
        Assert.False(ca.equal(cc).all().item<bool>());
    }

    [Fact]
    public void A_training_run_on_plain_files_refuses_the_exclusion_and_true_records_true()
    {
        string file = P("plain.safetensors");
        using (var rows = randn(100, D)) SafeTensors.Save(file, new Dictionary<string, Tensor> { ["activations"] = rows });
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings(file, "[0]", "p")));
        Assert.Contains("stores no token id per row", e.Message);
        using (var plan = TrainingPlan.ForActivations(Settings(SaeSharpCache("builtin"), "true", "t"))) plan.Run();
        Assert.True(JsonNode.Parse(File.ReadAllText(Path.Combine(P("t"), "cfg.json")))!["metadata"]!["exclude_special_tokens"]!.GetValue<bool>());
    }

    /// <summary>SAELens takes exclude_special_tokens true from the run's model: a runner config with use_cached_activations
    /// true over a plain .safetensors file (activations and token_ids, no model recorded) drops exactly the rows whose token
    /// is one of the built-in tokenizer's special ids, named by the config's model_name; the run stays a run on the files
    /// (ModelName null), and cfg.json records that model_name. Row r holds the value r and the r-th token of a cycle of the
    /// special ids and three ordinary ids.</summary>
    [Fact]
    public void A_cached_runner_config_takes_the_special_tokens_of_its_model_name_for_files_that_record_no_model()
    {
        var special = ExcludedTokens.SpecialTokenIds(Tokenizer.FromFolder(BuiltinModel.Folder)).ToHashSet();
        Assert.NotEmpty(special);
        long[] cycle = [.. special.Order(), .. Enumerable.Range(0, 100).Select(i => (long)i).Where(i => !special.Contains(i)).Take(3)];
        long TokenAt(long r) => cycle[r % cycle.Length];
        string file = P("plain.safetensors");
        using (var acts = TorchScalars.Arange(Rows, dtype: float32).unsqueeze(1).expand(-1, D).contiguous())
        using (var ids = tensor(Enumerable.Range(0, Rows).Select(r => TokenAt(r)).ToArray()))
            SafeTensors.Save(file, new Dictionary<string, Tensor> { ["activations"] = acts, ["token_ids"] = ids });
        TrainingSettings Cached(string model, string outName, int epochs = 1) => TrainingSettings.FromJson($$"""
            {"use_cached_activations": true, "cached_activations_path": "{{file.Replace("\\", "/")}}", {{model}} "dataset_path": "some/text",
             "exclude_special_tokens": true, "train_batch_size_tokens": 16, "eval_rows": 20, "total_training_steps": 3, "expansion_factor": 2,
             "architecture": "standard", "epochs": {{epochs}}, "activations_mixing_fraction": 0, "out": "{{P(outName).Replace("\\", "/")}}"}
            """, "runner.json");

        var s = Cached("\"model_name\": \"builtin\",", "run");
        Assert.Null(s.ModelName);
        Assert.Equal("builtin", s.ActivationsModelName);
        var kept = Enumerable.Range(0, Rows).Select(r => (long)r).Where(r => !special.Contains(TokenAt(r))).ToList();
        Assert.True(kept.Count < Rows - special.Count, "the file holds several rows of each special token");
        using (var plan = TrainingPlan.ForActivations(s))
        {
            // In file order: the training rows, then the held-out rows, together exactly the kept rows.
            Assert.Equal(kept, [.. Drain(plan.Options.TrainSource), .. Drain(plan.Options.EvalSource!)]);
        }
        // Trained (the data repeated: epochs 0), cfg.json records the model and the setting.
        using (var plan = TrainingPlan.ForActivations(Cached("\"model_name\": \"builtin\",", "run", epochs: 0))) plan.Run();
        var metadata = JsonNode.Parse(File.ReadAllText(Path.Combine(P("run"), "cfg.json")))!["metadata"]!;
        Assert.Equal("builtin", metadata["model_name"]!.GetValue<string>());
        Assert.True(metadata["exclude_special_tokens"]!.GetValue<bool>());

        // Without model_name nothing names the special tokens.
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Cached("", "none")));
        Assert.Contains($"{file} records no model", e.Message);

        // sae train: a config naming model_name with --activations trains on the files (no model run: dataset_path is not
        // read), and true takes that model's special tokens; the same config without model_name is refused.
        foreach (var (model, name) in new[] { ("\"model_name\": \"builtin\",", "cli"), ("", "cli-none") })
        {
            File.WriteAllText(P(name + ".json"), $$"""
                {{{model}} "dataset_path": "no/such/text", "exclude_special_tokens": true, "batch_size": 16, "eval_rows": 20, "steps": 3,
                 "expansion_factor": 2, "architecture": "standard"}
                """);
            var (exit, _, err) = SaeSharp.Tests.Cli.CliRunner.Run("train", "--config", P(name + ".json"), "--activations", file, "--out", P(name));
            if (model.Length == 0)
            {
                Assert.NotEqual(0, exit);
                Assert.Contains("records no model", err);
                continue;
            }
            Assert.True(exit == 0, err);
            Assert.Equal("builtin", JsonNode.Parse(File.ReadAllText(Path.Combine(P(name), "cfg.json")))!["metadata"]!["model_name"]!.GetValue<string>());
        }
    }

    /// <summary><c>sae eval --activations</c> with an SAE whose cfg.json metadata has exclude_special_tokens [0, 3]: the
    /// identity SAE with its decoder halved (W_enc = [I, −I], W_dec = ½[I; −I], zero biases) reconstructs x as x/2 and fires
    /// one latent per non-zero entry, so over the rows it reads MSE = Σ (x/2)² / (n·d_in) and L0 = the mean count of
    /// non-zero entries, computed here by hand over the rows whose token (r % 5) is not 0 or 3. The same rows in a file
    /// without token ids are evaluated whole.</summary>
    [Fact]
    public void Eval_on_activation_files_reads_exactly_the_rows_the_sae_cfg_does_not_exclude()
    {
        var cfg = new SaeSharp.Saes.SaeConfig { DIn = D, ApplyBDecToInput = false };
        cfg.Metadata.ExcludeTokenIds = [0, 3];
        using (var sae = Saes.SaeTestUtil.Identity(cfg))
        {
            using (no_grad()) sae.WDec.mul_(0.5);
            SaeSharp.Interop.SaeLensFormat.Save(sae, P("sae"));
        }
        static float X(long r, int j) => ((r * 7 + j * 3) % 11) - 5;
        using (var acts = tensor(Enumerable.Range(0, Rows).SelectMany(r => Enumerable.Range(0, D).Select(j => X(r, j))).ToArray(), [Rows, D]))
        {
            using var ids = tensor(Enumerable.Range(0, Rows).Select(r => TokenOf(r)).ToArray());
            SafeTensors.Save(P("with-ids.safetensors"), new Dictionary<string, Tensor> { ["activations"] = acts, ["token_ids"] = ids });
            SafeTensors.Save(P("plain.safetensors"), new Dictionary<string, Tensor> { ["activations"] = acts });
        }
        (long N, double Mse, double L0) ByHand(IEnumerable<long> rows)
        {
            var list = rows.ToList();
            double sse = list.Sum(r => Enumerable.Range(0, D).Sum(j => Math.Pow(X(r, j) / 2.0, 2)));
            double nonZero = list.Sum(r => Enumerable.Range(0, D).Count(j => X(r, j) != 0));
            return (list.Count, sse / (list.Count * D), nonZero / list.Count);
        }
        foreach (var (file, expected) in new[] { ("with-ids", ByHand(Kept(0, 3))), ("plain", ByHand(Enumerable.Range(0, Rows).Select(r => (long)r))) })
        {
            var (exit, _, err) = SaeSharp.Tests.Cli.CliRunner.Run("eval", "--sae", P("sae"), "--activations", P(file + ".safetensors"), "--json", P(file + ".json"));
            Assert.True(exit == 0, err);
            var json = JsonNode.Parse(File.ReadAllText(P(file + ".json")))!;
            Assert.Equal(expected.N, json["n_rows"]!.GetValue<long>());
            Assert.Equal(expected.Mse, json["mse"]!.GetValue<double>(), 5);
            Assert.Equal(expected.L0, json["l0"]!.GetValue<double>(), 5);
        }
        Assert.Equal(Rows * 3 / 5, ByHand(Kept(0, 3)).N);
        Assert.NotEqual(ByHand(Kept(0, 3)).Mse, ByHand(Enumerable.Range(0, Rows).Select(r => (long)r)).Mse, 3);
    }
}
