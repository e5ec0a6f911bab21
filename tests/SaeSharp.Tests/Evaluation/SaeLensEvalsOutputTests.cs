using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Synthetic;
using SaeSharp.Tests.Analysis;
using SaeSharp.Tests.Cli;

namespace SaeSharp.Tests.Evaluation;

/// <summary><c>sae eval --output-dir</c> and <see cref="SaeLensEvalsOutput"/>: SAELens's evals output folder
/// (sae_lens/evals.py <c>multiple_evals</c> and <c>process_results</c>): the file names, the keys in the order its dict
/// construction makes them, and the CSV as <c>pandas.json_normalize(results).to_csv(index=False)</c> writes it.</summary>
public sealed class SaeLensEvalsOutputTests : TempDirTestBase
{
    private string P(string name) => Path.Combine(_dir, name);

    /// <summary>multiple_evals's keys: unique_id, sae_set, sae_id, then eval_cfg (context_size, dataset, library_version,
    /// git_hash set first, EvalConfig's fields after them by its update), metrics, feature_metrics, sae_cfg.</summary>
    private static readonly string[] TopKeys = ["unique_id", "sae_set", "sae_id", "eval_cfg", "metrics", "feature_metrics", "sae_cfg"];
    private static readonly string[] EvalCfgKeys =
    [
        "context_size", "dataset", "library_version", "git_hash", "batch_size_prompts", "n_eval_reconstruction_batches", "compute_kl",
        "compute_ce_loss", "n_eval_sparsity_variance_batches", "compute_l2_norms", "compute_sparsity_metrics", "compute_variance_metrics",
        "compute_featurewise_density_statistics", "compute_featurewise_weight_based_metrics",
    ];

    /// <summary>Two SAEs (the fixture's SAE and a copy in another folder): per SAE <c>{path}-custom_sae_16_{dataset}.json</c>
    /// with "/" as "_", all_eval_results.json equal to the two files in order, the metric groups those of --json, and a CSV of
    /// one header and two rows whose columns are the results' leaves under dotted names, in json_normalize's order, each
    /// cell the JSON's value.</summary>
    [Fact]
    public void Two_saes_write_saelens_evals_folder()
    {
        using var a = new AnalysisFixture();
        string second = P("second_sae");
        Directory.CreateDirectory(second);
        foreach (var f in Directory.GetFiles(a.SaeDir)) File.Copy(f, Path.Combine(second, Path.GetFileName(f)));
        string outDir = P("out");
        var (exit, output, err) = CliRunner.Run("eval", "--sae", a.SaeDir, "--sae", second, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--tokens", "64", "--context-size", "16", "--output-dir", outDir, "--json", P("eval.json"));
        Assert.True(exit == 0, err);
        Assert.Contains("SAELens evals output: " + outDir, output);
        Assert.Contains("individual JSONs: 2", output);

        string[] saes = [a.SaeDir, second];
        var names = saes.Select(s => (s + "-custom_sae_16_" + a.DataPath + ".json").Replace("/", "_", StringComparison.Ordinal)).ToArray();
        Assert.Equal([.. names.Order(StringComparer.Ordinal), "all_eval_results.csv", "all_eval_results.json"],
            Directory.GetFiles(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var texts = names.Select(n => File.ReadAllText(Path.Combine(outDir, n))).ToArray();
        // json.dump(indent=2): two-space indentation, no newline at the end.
        Assert.StartsWith("{\n  \"unique_id\": ", texts[0], StringComparison.Ordinal);
        Assert.EndsWith("\n}", texts[0], StringComparison.Ordinal);
        var files = texts.Select(t => JsonNode.Parse(t)!.AsObject()).ToArray();
        var combined = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "all_eval_results.json")))!.AsArray();
        Assert.Equal(2, combined.Count);
        var plain = JsonNode.Parse(File.ReadAllText(P("eval.json")))!.AsArray();
        for (int s = 0; s < 2; s++)
        {
            var r = files[s];
            Assert.True(JsonNode.DeepEquals(r, combined[s]), $"all_eval_results.json[{s}] differs from {names[s]}");
            Assert.Equal(TopKeys, r.Select(kv => kv.Key));
            Assert.Equal(saes[s] + "-custom_sae", r["unique_id"]!.GetValue<string>());
            Assert.Equal(saes[s], r["sae_set"]!.GetValue<string>());
            Assert.Equal("custom_sae", r["sae_id"]!.GetValue<string>());
            var cfg = r["eval_cfg"]!.AsObject();
            Assert.Equal(EvalCfgKeys, cfg.Select(kv => kv.Key));
            Assert.Equal(16, cfg["context_size"]!.GetValue<int>());
            Assert.Equal(a.DataPath, cfg["dataset"]!.GetValue<string>());
            Assert.True(cfg["compute_kl"]!.GetValue<bool>());
            // 64 tokens in windows of 16: 4 windows, in batches of batch_size_prompts.
            int batch = cfg["batch_size_prompts"]!.GetValue<int>();
            Assert.Equal((4 + batch - 1) / batch, cfg["n_eval_reconstruction_batches"]!.GetValue<int>());
            // The metric groups are --json's (nothing non-finite here: no -1 for null).
            var metrics = r["metrics"]!.AsObject();
            Assert.Equal(["model_behavior_preservation", "model_performance_preservation", "reconstruction_quality", "shrinkage", "sparsity", "token_stats"],
                metrics.Select(kv => kv.Key));
            foreach (var (group, values) in metrics)
                Assert.True(JsonNode.DeepEquals(values, plain[s]![group]), $"metrics.{group} differs from --json");
            Assert.True(JsonNode.DeepEquals(r["feature_metrics"], plain[s]!["feature_metrics"]));
            Assert.Equal(AnalysisFixture.DSae, r["feature_metrics"]!["feature_density"]!.AsArray().Count);
            Assert.Equal(AnalysisFixture.DSae, r["sae_cfg"]!["d_sae"]!.GetValue<int>());
        }

        var csv = ParseCsv(File.ReadAllText(Path.Combine(outDir, "all_eval_results.csv")));
        Assert.Equal(3, csv.Count);
        var expectedColumns = Leaves(files[0]).Select(l => l.Name).ToList();
        Assert.Equal(expectedColumns, csv[0]);
        Assert.Contains("metrics.sparsity.l0", csv[0]);
        Assert.Contains("feature_metrics.feature_density", csv[0]);
        for (int s = 0; s < 2; s++)
        {
            var leaves = Leaves(files[s]).ToDictionary(l => l.Name, l => l.Value);
            for (int c = 0; c < csv[0].Count; c++)
                AssertCell(leaves[csv[0][c]], csv[s + 1][c], csv[0][c]);
        }
        CheckWithPython(outDir, csv);
    }

    /// <summary>Where /usr/bin/python3 exists (without pandas here; nothing is checked without it): Python's
    /// <c>json.dumps(json.load(f), indent=2)</c> gives every JSON file back byte for byte (written as SAELens's json.dump
    /// writes them), and Python's csv module reads the CSV as <see cref="ParseCsv"/> does.</summary>
    private static void CheckWithPython(string outDir, List<List<string>> csv)
    {
        const string python = "/usr/bin/python3";
        if (!File.Exists(python)) return;
        const string script = """
            import csv, glob, json, os, sys
            d = sys.argv[1]
            for f in sorted(glob.glob(os.path.join(d, '*.json'))):
                text = open(f, encoding='utf-8').read()
                if json.dumps(json.load(open(f)), indent=2) != text: print('differs: ' + f)
            print(json.dumps(list(csv.reader(open(os.path.join(d, 'all_eval_results.csv'), newline='')))))
            """;
        var start = new System.Diagnostics.ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "-c", script, outDir }) start.ArgumentList.Add(arg);
        using var process = System.Diagnostics.Process.Start(start)!;
        string stdout = process.StandardOutput.ReadToEnd(), stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, stderr);
        Assert.DoesNotContain("differs", stdout, StringComparison.Ordinal);
        var rows = JsonNode.Parse(stdout)!.AsArray().Select(r => r!.AsArray().Select(c => c!.GetValue<string>()).ToList()).ToList();
        Assert.Equal(csv, rows);
    }

    /// <summary>pandas's rules on hand-made results: top-level plain values first (a key after a dict moves ahead of it), nested
    /// keys dotted, an empty dict no column, columns in order of first appearance; an int column missing in one row, and a
    /// column of ints and floats, become float (<c>128.0</c>, <c>-1.0</c>); floats as Python's repr (<c>1e-05</c>, <c>16.0</c>);
    /// lists as Python's str, quoted for their commas; booleans True/False; a missing value empty; a quote doubled.</summary>
    [Fact]
    public void Csv_follows_pandas_json_normalize_and_to_csv()
    {
        var first = new PythonJson.Object
        {
            { "id", "a,b" },
            { "cfg", new PythonJson.Object { { "n", 128L }, { "flag", true }, { "kw", new PythonJson.Object() }, { "deep", new PythonJson.Object { { "x", 16.0 } } } } },
            { "late", 3L },
            { "m", new PythonJson.Object { { "v", 1e-05 }, { "mixed", -1L }, { "list", new List<object> { 0.5, -1L, 1e-05, 2.0 } } } },
        };
        var second = new PythonJson.Object
        {
            { "id", "say \"hi\"" },
            { "cfg", new PythonJson.Object { { "flag", false }, { "deep", new PythonJson.Object { { "x", 1e16 } } } } },
            { "late", 4L },
            { "m", new PythonJson.Object { { "v", 0.0001 }, { "mixed", 0.25 }, { "list", new List<object>() }, { "extra", "e" } } },
        };
        string expected =
            "id,late,cfg.n,cfg.flag,cfg.deep.x,m.v,m.mixed,m.list,m.extra\n" +
            "\"a,b\",3,128.0,True,16.0,1e-05,-1.0,\"[0.5, -1, 1e-05, 2.0]\",\n" +
            "\"say \"\"hi\"\"\",4,,False,1e+16,0.0001,0.25,[],e\n";
        Assert.Equal(expected, SaeLensEvalsOutput.Csv([first, second]));
    }

    /// <summary>SAELens's tutorial's file name for a release's SAE: <c>{release}-{sae_id}_{context_size}_{dataset}.json</c>,
    /// the dataset's "/" as "_".</summary>
    [Fact]
    public void File_name_of_a_release_sae_is_saelens_s()
    {
        var m = new DownstreamMetrics { Name = "s", HookName = "blocks.8.hook_resid_pre", Reconstruction = new SaeEvalResult(), ContextSize = 128 };
        var run = new SaeLensEvalRun { SaeSet = "gpt2-small-res-jb", SaeId = "blocks.8.hook_resid_pre", Dataset = "Skylion007/openwebtext" };
        Assert.Equal("gpt2-small-res-jb-blocks.8.hook_resid_pre_128_Skylion007_openwebtext.json", SaeLensEvalsOutput.FileName(m, run));
    }

    /// <summary>A NaN metric (CE loss score 0/0: ablation leaves the loss unchanged) and a NaN density are written as the
    /// int -1 (SAELens's replace_nans_with_negative_one), in the JSON and in the one-row CSV (an int column there); the
    /// batch counts are ⌈contexts / batch_size_prompts⌉ = ⌈3/2⌉ = 2; a result without a cfg has an empty sae_cfg, which
    /// gives no CSV column. Two results for one file are refused before the folder is made.</summary>
    [Fact]
    public void Nan_is_minus_one_and_a_clash_is_refused()
    {
        var m = new DownstreamMetrics
        {
            Name = "s", HookName = "h",
            Reconstruction = new SaeEvalResult { FeatureMetrics = new FeatureMetrics { FeatureDensity = [0.5, double.NaN] } },
            CeLossWithoutSae = 2, CeLossWithSae = 2, CeLossWithAblation = 2, ContextSize = 16, BatchSizePrompts = 2, Contexts = 3,
        };
        var run = new SaeLensEvalRun { SaeSet = "set", SaeId = "id", Dataset = "org/data" };
        string dir = P("out");
        var written = SaeLensEvalsOutput.Write(dir, [(m, run)]);
        Assert.Equal([P("out/set-id_16_org_data.json"), P("out/all_eval_results.json"), P("out/all_eval_results.csv")], written);
        string text = File.ReadAllText(written[0]);
        Assert.Contains("\"ce_loss_score\": -1,", text, StringComparison.Ordinal);
        Assert.Contains("\"feature_density\": [\n      0.5,\n      -1\n    ]", text, StringComparison.Ordinal);
        Assert.EndsWith("\"sae_cfg\": {}\n}", text, StringComparison.Ordinal);
        var json = JsonNode.Parse(text)!;
        Assert.Equal(2, json["eval_cfg"]!["n_eval_reconstruction_batches"]!.GetValue<int>());
        Assert.Equal(2, json["eval_cfg"]!["n_eval_sparsity_variance_batches"]!.GetValue<int>());
        var csv = ParseCsv(File.ReadAllText(written[2]));
        int score = csv[0].IndexOf("metrics.model_performance_preservation.ce_loss_score");
        Assert.Equal("-1", csv[1][score]);
        Assert.DoesNotContain(csv[0], c => c.StartsWith("sae_cfg", StringComparison.Ordinal));

        var e = Assert.Throws<SaeSharpException>(() => SaeLensEvalsOutput.Write(P("clash"), [(m, run), (m, run)]));
        Assert.Contains("2 SAEs would write set-id_16_org_data.json", e.Message);
        Assert.False(Directory.Exists(P("clash")));
    }

    /// <summary>The same SAE twice would write one file twice: refused before the evaluation, naming the SAE; nothing written.</summary>
    [Fact]
    public void The_same_sae_twice_is_refused()
    {
        var (exit, _, err) = CliRunner.Run("eval", "--sae", P("sae"), "--sae", P("sae"), "--model", "builtin", "--dataset", P("data.txt"),
            "--output-dir", P("out"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"--output-dir: --sae {P("sae")} is given 2 times", err);
        Assert.False(Directory.Exists(P("out")));
    }

    /// <summary>Two different SAEs whose SAELens file names are one once "/" is "_" (X/sae and X_sae, both custom_sae): refused
    /// before the evaluation (the context size from each cfg.json), naming both; nothing written. It was refused only after
    /// the whole evaluation.</summary>
    [Fact]
    public void Two_saes_whose_file_names_collide_are_refused_before_the_evaluation()
    {
        using var a = new AnalysisFixture();
        string nested = P("x/sae"), flat = P("x_sae");
        foreach (var dst in new[] { nested, flat })
        {
            Directory.CreateDirectory(dst);
            foreach (var f in Directory.GetFiles(a.SaeDir)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        }
        var (exit, output, err) = CliRunner.Run("eval", "--sae", nested, "--sae", flat, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--output-dir", P("out"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"--sae {nested} and --sae {flat} would write", err.Replace("\n", " "));
        Assert.DoesNotContain("CE loss", output);   // no evaluation was printed
        Assert.False(Directory.Exists(P("out")));
    }

    /// <summary>One SAE folder written two ways ("X/." and "X/") is one SAE: SAELens's file names would differ (the path as
    /// given), so it would be evaluated twice under two names; refused before the evaluation, naming both, nothing written.</summary>
    [Fact]
    public void The_same_sae_folder_spelled_two_ways_is_refused()
    {
        using var a = new AnalysisFixture();
        string dot = Path.Combine(a.SaeDir, "."), slash = a.SaeDir + Path.DirectorySeparatorChar;
        var (exit, _, err) = CliRunner.Run("eval", "--sae", dot, "--sae", slash, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--output-dir", P("out"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"--output-dir: --sae {dot} and --sae {slash} are the same SAE", err.Replace("\n", " "));
        Assert.False(Directory.Exists(P("out")));
    }

    /// <summary>Every leaf of a result under its json_normalize name: top-level plain values, then the nested objects depth first.</summary>
    private static List<(string Name, JsonNode? Value)> Leaves(JsonObject result)
    {
        var leaves = result.Where(kv => kv.Value is not JsonObject).Select(kv => (kv.Key, kv.Value)).ToList();
        void Walk(JsonObject o, string prefix)
        {
            foreach (var (k, v) in o)
                if (v is JsonObject nested) Walk(nested, prefix + "." + k);
                else leaves.Add((prefix + "." + k, v));
        }
        foreach (var (k, v) in result)
            if (v is JsonObject nested) Walk(nested, k);
        return leaves;
    }

    /// <summary>A CSV cell read back as pandas's reader would read it equals the JSON value: numbers by value, booleans as
    /// True/False, null empty, lists "[a, b]" element by element.</summary>
    private static void AssertCell(JsonNode? value, string cell, string column)
    {
        switch (value)
        {
            case null: Assert.Equal("", cell); break;
            case JsonArray list:
                Assert.StartsWith("[", cell, StringComparison.Ordinal);
                var items = cell.Trim('[', ']').Split(", ", StringSplitOptions.RemoveEmptyEntries);
                Assert.Equal(list.Count, items.Length);
                for (int i = 0; i < items.Length; i++)
                    Assert.Equal(list[i]!.GetValue<double>(), double.Parse(items[i], CultureInfo.InvariantCulture));
                break;
            case JsonValue v when v.GetValueKind() == System.Text.Json.JsonValueKind.String: Assert.Equal(v.GetValue<string>(), cell); break;
            case JsonValue v when v.GetValueKind() is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False:
                Assert.Equal(v.GetValue<bool>() ? "True" : "False", cell); break;
            case JsonValue v:
                Assert.True(v.GetValue<double>() == double.Parse(cell, CultureInfo.InvariantCulture), $"{column}: {cell} is not {v.ToJsonString()}"); break;
            default: Assert.Fail($"{column}: unexpected {value}"); break;
        }
    }

    /// <summary>A small RFC 4180 reader: fields split at commas outside quotes, "" inside quotes a quote.</summary>
    private static List<List<string>> ParseCsv(string text)
    {
        var rows = new List<List<string>>();
        var row = new List<string>();
        var field = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else field.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { row.Add(field.ToString()); field.Clear(); }
            else if (c == '\n') { row.Add(field.ToString()); field.Clear(); rows.Add(row); row = []; }
            else field.Append(c);
        }
        Assert.Empty(row);   // the last line ends with "\n"
        return rows;
    }
}
