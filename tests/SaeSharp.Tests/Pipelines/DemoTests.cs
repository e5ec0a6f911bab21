using System.Text.Json;
using System.Text.Json.Nodes;
using PuppeteerSharp;
using SaeSharp.Tests.Analysis;
using SaeSharp.Tests.Cli;

namespace SaeSharp.Tests.Pipelines;

/// <summary>Runs <c>sae demo --quick</c> once (the whole flow on the built-in model, shortened) for the tests below.</summary>
public sealed class QuickDemoFixture : IDisposable
{
    public QuickDemoFixture()
    {
        Dir = Directory.CreateTempSubdirectory("sae-demo-").FullName;
        (Exit, Out, Err) = CliRunner.Run("demo", "--quick", "--out", Dir);
        Summary = File.Exists(Path.Combine(Dir, "demo.json")) ? JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, "demo.json")))!.AsObject() : new JsonObject();
    }

    public string Dir { get; }
    public int Exit { get; }
    public string Out { get; }
    public string Err { get; }
    public JsonObject Summary { get; }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// <c>sae demo</c> end to end in its CI mode: every stage ran and printed, the label table agrees with <c>sae score-labels</c>
/// run separately on the same SAE and with shares recomputed here from every unit's scores, the dashboard renders, the
/// steered continuation differs from the plain one.
/// </summary>
public class DemoTests(QuickDemoFixture fx) : IClassFixture<QuickDemoFixture>
{
    [Fact]
    public void Quick_demo_runs_every_stage_and_its_evaluation_is_consistent()
    {
        Assert.True(fx.Exit == 0, fx.Err + fx.Out);
        for (int stage = 1; stage <= 6; stage++) Assert.Contains($"[{stage}/6]", fx.Out);
        foreach (var text in new[] { "label scores at blocks.1.hook_resid_post", "SAE features", "top features", "top neurons", "unsteered", "steered", "dashboard:" })
            Assert.Contains(text, fx.Out);
        Assert.True(File.Exists(Path.Combine(fx.Dir, "sae", "cfg.json")));
        Assert.True(File.Exists(Path.Combine(fx.Dir, "sae", "sae_weights.safetensors")));
        // Every planned step ran (40,960 tokens in batches of 1,024): the stories cover the rows read before training too.
        var quick = SaeSharp.Pipelines.DemoOptions.Quick("q");
        Assert.Equal(quick.TrainTokens / quick.BatchSize, fx.Summary["steps"]!.GetValue<long>());

        var eval = fx.Summary["eval"]!;
        double fvu = eval["fvu"]!.GetValue<double>(), l0 = eval["l0"]!.GetValue<double>(), dead = eval["dead_fraction"]!.GetValue<double>();
        Assert.InRange(fvu, 0.0, 1.0);
        Assert.InRange(l0, 1.0, 8.0);                                   // TopK k = 8: at most k latents per token
        Assert.InRange(dead, 0.0, 1.0);
        // Splicing the SAE costs less than zero-ablating the layer: CE with the SAE lies between clean and ablated.
        double clean = eval["ce_loss_without_sae"]!.GetValue<double>(), with = eval["ce_loss_with_sae"]!.GetValue<double>(),
            ablated = eval["ce_loss_with_ablation"]!.GetValue<double>();
        Assert.True(clean < with && with < ablated, $"CE clean {clean}, with SAE {with}, ablated {ablated}");
        Assert.Equal((ablated - with) / (ablated - clean), eval["ce_loss_score"]!.GetValue<double>(), 9);

        // In a pipe (the test host's stdout): no box drawing, and the evaluation table is a header and a row of
        // tab-separated fields whose "%" columns are demo.json's fractions times 100, exactly.
        if (!Console.IsOutputRedirected) return;
        Assert.DoesNotContain(fx.Out, c => c is >= '\u2500' and <= '\u257F');
        var lines = fx.Out.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        int header = lines.IndexOf("FVU\tL0\tdead %\t% CE loss recovered\tKL (nats)\tCE clean\tCE with SAE\tCE zero-ablated");
        Assert.True(header >= 0, fx.Out);
        var row = lines[header + 1].Split('\t').Select(v => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(8, row.Length);
        Assert.Equal(dead * 100, row[2]);
        Assert.Equal(eval["ce_loss_score"]!.GetValue<double>() * 100, row[3]);
        double[] ce = [clean, with, ablated];
        for (int k = 0; k < 3; k++) Assert.True(Math.Abs(row[5 + k] - ce[k]) <= 5.0001e-4, $"CE column {5 + k}: {row[5 + k]} against {ce[k]}"); // printed F3
    }

    [Fact]
    public void Label_table_agrees_with_score_labels_run_separately_and_with_the_unit_scores()
    {
        Assert.True(fx.Exit == 0, fx.Err + fx.Out);
        var scores = fx.Summary["label_scores"]!;
        long tokens = scores["tokens"]!.GetValue<long>();
        string json = Path.Combine(fx.Dir, "separate.json");
        var (exit, output, err) = CliRunner.Run("score-labels", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin",
            "--dataset", Path.Combine(fx.Dir, "corpus", "heldout.jsonl"), "--tokens", "8192", "--json", json);
        Assert.True(exit == 0, err + output);
        var separate = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(tokens, separate["tokens"]!.GetValue<long>());
        // --neuron-hook: the neurons compared are that hook's dimensions, the features stay at the SAE's hook.
        string neuronJson = Path.Combine(fx.Dir, "neuron-hook.json");
        var neuronRun = CliRunner.Run("score-labels", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin",
            "--dataset", Path.Combine(fx.Dir, "corpus", "heldout.jsonl"), "--tokens", "1024", "--neuron-hook", "blocks.0.hook_resid_post", "--json", neuronJson);
        Assert.True(neuronRun.Exit == 0, neuronRun.Err + neuronRun.Out);
        var atOther = JsonNode.Parse(File.ReadAllText(neuronJson))!;
        Assert.Equal("blocks.0.hook_resid_post", atOther["neuron_hook"]!.GetValue<string>());
        Assert.Equal(separate["hook"]!.GetValue<string>(), atOther["hook"]!.GetValue<string>());
        Assert.NotEqual("blocks.0.hook_resid_post", atOther["hook"]!.GetValue<string>());
        foreach (var (kind, units) in new[] { ("features", "features"), ("neurons", "neurons") })
        {
            var demo = scores[kind]!;
            var other = separate[$"{kind}_summary"]!;
            foreach (var key in new[] { "share_f1_at_least_0_8", "share_f1_at_least_0_5", "mean_best_f1" })
            {
                double v = demo[key]!.GetValue<double>();
                Assert.InRange(v, 0.0, 1.0);
                Assert.Equal(other[key]!.GetValue<double>(), v, 12);
            }
            Assert.Equal(other["labels_covered_f1_0_8"]!.GetValue<int>(), demo["labels_covered_f1_0_8"]!.GetValue<int>());
            Assert.True(demo["share_f1_at_least_0_8"]!.GetValue<double>() <= demo["share_f1_at_least_0_5"]!.GetValue<double>());

            // Recomputed from every unit's best F1: the share of alive units at or above 0.8 and 0.5, and the labels covered.
            var all = separate[units]!.AsArray().Where(u => u!["alive"]!.GetValue<bool>()).ToList();
            double F1(JsonNode? u) => u!["f1"] is { } f ? f.GetValue<double>() : 0;
            Assert.Equal(demo["alive"]!.GetValue<int>(), all.Count);
            Assert.Equal((double)all.Count(u => F1(u) >= 0.8) / all.Count, demo["share_f1_at_least_0_8"]!.GetValue<double>(), 12);
            Assert.Equal((double)all.Count(u => F1(u) >= 0.5) / all.Count, demo["share_f1_at_least_0_5"]!.GetValue<double>(), 12);
            Assert.Equal(all.Where(u => F1(u) >= 0.8).Select(u => u!["best_label"]!.GetValue<string>()).Distinct().Count(),
                demo["labels_covered_f1_0_8"]!.GetValue<int>());
        }
        // The table printed by the demo shows the same shares: in a pipe (as the test host's stdout is) a tab-separated row
        // whose "% F1" columns are the shares times 100, read back exactly.
        var f = scores["features"]!;
        double share08 = f["share_f1_at_least_0_8"]!.GetValue<double>(), share05 = f["share_f1_at_least_0_5"]!.GetValue<double>();
        if (Console.IsOutputRedirected)
        {
            var row = fx.Out.Split('\n').Single(l => l.StartsWith("SAE features\t", StringComparison.Ordinal)).Split('\t');
            Assert.Equal([f["alive"]!.ToString(), f["units"]!.ToString()], row[1..3]);
            Assert.Equal(share08 * 100, double.Parse(row[3], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(share05 * 100, double.Parse(row[4], System.Globalization.CultureInfo.InvariantCulture));
        }
        else Assert.Contains(share08.ToString("P1"), fx.Out);

        // sae score-labels on its own prints the same table: in a pipe its title gives the token count in plain digits and
        // each row's fields are the separate run's JSON summary (alive, units, shares times 100, labels covered).
        if (!Console.IsOutputRedirected) return;
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        Assert.Contains(lines, l => l.StartsWith("label scores at blocks.1.hook_resid_post: 8192 labelled tokens, ", StringComparison.Ordinal));
        foreach (var (name, kind) in new[] { ("SAE features", "features"), ("dimensions (±)", "neurons") })
        {
            var s = separate[$"{kind}_summary"]!;
            var fields = lines.Single(l => l.StartsWith(name + "\t", StringComparison.Ordinal)).Split('\t');
            Assert.Equal(8, fields.Length);
            Assert.Equal(s["alive"]!.ToString(), fields[1]);
            Assert.Equal(s["units"]!.ToString(), fields[2]);
            Assert.Equal(s["share_f1_at_least_0_8"]!.GetValue<double>() * 100, double.Parse(fields[3], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(s["share_f1_at_least_0_5"]!.GetValue<double>() * 100, double.Parse(fields[4], System.Globalization.CultureInfo.InvariantCulture));
            double meanF1 = s["mean_best_f1"]!.GetValue<double>(), printed = double.Parse(fields[5], System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(Math.Abs(meanF1 - printed) <= 5.0001e-4, $"{name}: mean F1 {printed} against {meanF1}"); // printed F3
            Assert.Equal(s["labels_covered_f1_0_8"]!.ToString(), fields[6]);
        }
    }

    [Fact]
    public void Steering_changes_the_continuation()
    {
        Assert.True(fx.Exit == 0, fx.Err + fx.Out);
        var s = fx.Summary["steering"]!;
        Assert.NotEqual(s["before"]!.GetValue<string>(), s["after"]!.GetValue<string>());
        Assert.True(s["scale"]!.GetValue<double>() > 0);
        Assert.StartsWith("cat:", s["label"]!.GetValue<string>());
        Assert.Contains(s["after"]!.GetValue<string>().Split(' ')[0], fx.Out);
    }

    [Fact]
    public async Task Dashboard_files_exist_and_render_in_chromium()
    {
        Assert.True(fx.Exit == 0, fx.Err + fx.Out);
        var d = fx.Summary["dashboard"]!;
        var features = d["top_features"]!.AsArray().Concat(d["random_features"]!.AsArray()).Select(n => n!.GetValue<int>()).ToList();
        Assert.Equal(4 + 2, features.Count);
        Assert.Equal(features.Count, features.Distinct().Count());
        string site = Path.Combine(fx.Dir, "dashboard");
        Assert.Equal(Path.GetFullPath(Path.Combine(site, "index.html")), Path.GetFullPath(d["index"]!.GetValue<string>()));
        foreach (var i in features) Assert.True(File.Exists(Path.Combine(site, "features", $"{i}.html")), $"page of feature {i}");

        await using var browser = await DashboardBrowserTests.Launch(Path.Combine(fx.Dir, "profile"));
        await using var page = await browser.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e.Message);
        await page.GoToAsync(new Uri(Path.Combine(site, "index.html")).AbsoluteUri);
        await page.WaitForSelectorAsync("#features tbody tr");
        var rows = await page.EvaluateExpressionAsync<int[]>("[...document.querySelectorAll('#features tbody tr')].map(r => +r.dataset.feature)");
        Assert.Equal(features.Order(), rows.Order());
        string shots = DashboardBrowserTests.ScreenshotDir();
        await page.ScreenshotAsync(Path.Combine(shots, "demo-dashboard-index.png"), new ScreenshotOptions { FullPage = true });
        int top = features[0];
        await page.GoToAsync(new Uri(Path.Combine(site, "features", $"{top}.html")).AbsoluteUri);
        Assert.Equal($"Feature {top}", await page.EvaluateExpressionAsync<string>("document.querySelector('h1').textContent"));
        Assert.True(await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.top-examples .example').length") > 0);
        await page.ScreenshotAsync(Path.Combine(shots, "demo-dashboard-feature.png"), new ScreenshotOptions { FullPage = true });
        Assert.Empty(errors);
    }

    [Fact]
    public void Synthetic_demo_still_trains_and_compares_three_architectures()
    {
        string dir = Directory.CreateTempSubdirectory("sae-demo-synth-").FullName;
        try
        {
            var (exit, output, err) = CliRunner.Run("demo", "--synthetic", "--steps", "20", "--out", dir);
            Assert.True(exit == 0, err + output);
            Assert.Contains("SAEs on synthetic data (20 steps", output);
            foreach (var arch in new[] { "topk", "batchtopk", "relu" })
                Assert.True(File.Exists(Path.Combine(dir, "saes", arch, "cfg.json")), arch);
            // In a pipe: a header, then a row per SAE whose "%" columns are its metrics.json fractions times 100.
            if (!Console.IsOutputRedirected) return;
            Assert.DoesNotContain(output, c => c is >= '\u2500' and <= '\u257F');
            var lines = output.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
            int header = lines.IndexOf("architecture\tMSE\tFVU\tL0\tdead %\tMCC\t% recovered\tF1");
            Assert.True(header >= 0, output);
            foreach (var (arch, i) in new[] { "topk", "batchtopk", "relu" }.Select((a, i) => (a, i)))
            {
                var row = lines[header + 1 + i].Split('\t');
                Assert.Equal(8, row.Length);
                Assert.Equal(arch, row[0]);
                var metrics = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "saes", arch, "metrics.json")))!;
                Assert.Equal(metrics["dead_fraction"]!.GetValue<double>() * 100, double.Parse(row[4], System.Globalization.CultureInfo.InvariantCulture));
                Assert.Equal(metrics["recovered_fraction"]!.GetValue<double>() * 100, double.Parse(row[6], System.Globalization.CultureInfo.InvariantCulture));
                Assert.Equal(metrics["mcc"]!.GetValue<double>().ToString("F3", System.Globalization.CultureInfo.InvariantCulture), row[5]);
                Assert.Equal(metrics["classification/f1_score"]!.GetValue<double>().ToString("F3", System.Globalization.CultureInfo.InvariantCulture), row[7]);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Probe_on_the_demo_sae_writes_saebenchs_means_of_its_tasks()
    {
        Assert.True(fx.Exit == 0, fx.Err + fx.Out);
        string json = Path.Combine(fx.Dir, "probe.json");
        var (exit, output, err) = CliRunner.Run("probe", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin",
            "--dataset", Path.Combine(fx.Dir, "corpus", "heldout.jsonl"), "--tokens", "8192", "--absorption", "--json", json);
        Assert.True(exit == 0, err + output);
        Assert.Contains("sparse probing at blocks.1.hook_resid_post", output);
        Assert.Contains("feature absorption", output);
        string heldout = Path.Combine(fx.Dir, "corpus", "heldout.jsonl");
        string text = File.ReadAllText(json);
        // SAEBench's sparse probing output: its schema, the model and the SAE's config recorded.
        Assert.Empty(SaeSharp.Tests.Evaluation.SaeBenchSchemaTests.SchemaErrors("sparse_probing", text));
        var r = JsonNode.Parse(text)!;
        Assert.Equal("sparse_probing", r["eval_type_id"]!.GetValue<string>());
        Assert.Equal(Path.Combine(fx.Dir, "sae"), r["sae_lens_release_id"]!.GetValue<string>());
        Assert.True(r["sae_cfg_dict"]!["d_sae"]!.GetValue<int>() > 0);
        Assert.Equal(heldout + "_results", Assert.Single(r["eval_result_details"]!.AsArray())!["dataset_name"]!.GetValue<string>());
        // Per label: SAEBench's per-class results, {dataset}_results → label → its accuracies.
        var tasks = r["eval_result_unstructured"]![heldout + "_results"]!.AsObject().Select(kv => kv.Value).ToList();
        Assert.NotEmpty(tasks);
        // Each mean is the average of the tasks' values under the same key; accuracies on balanced sets lie in [0, 1]
        // and a probe on the whole activation beats chance on every label.
        foreach (var (group, key) in new[] { ("llm", "llm_test_accuracy"), ("llm", "llm_top_1_test_accuracy"), ("sae", "sae_top_1_test_accuracy"),
                                             ("sae", "sae_top_50_test_accuracy"), ("sae", "sae_test_accuracy") })
        {
            double mean = tasks.Average(t => t![key]!.GetValue<double>());
            Assert.Equal(mean, r["eval_result_metrics"]![group]![key]!.GetValue<double>(), 12);
            Assert.All(tasks, t => Assert.InRange(t![key]!.GetValue<double>(), 0.0, 1.0));
        }
        Assert.All(tasks, t => Assert.True(t!["llm_test_accuracy"]!.GetValue<double>() > 0.6, t!.ToJsonString()));
        var labels = r["eval_result_unstructured"]!["absorption"]!["eval_result_details"]!.AsArray();
        Assert.Contains(labels, l => l!["label"]!.GetValue<string>() == "cat:colour");
        Assert.All(labels, l => Assert.Equal(l!["num_full_absorption"]!.GetValue<int>() / (double)l["num_probe_true_positives"]!.GetValue<int>(),
                                             l["full_absorption_rate"]!.GetValue<double>(), 12));

        var bad = CliRunner.Run("probe", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin",
            "--dataset", Path.Combine(fx.Dir, "corpus", "heldout.jsonl"), "--absorption-labels", "cat:colour");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--absorption-labels needs --absorption", bad.Err + bad.Out);
    }

    /// <summary>A folder <paramref name="name"/> beside the demo's run with a labelled corpus of <paramref name="docs"/>
    /// stories (seed 17), and the <c>sae probe --pooling mean</c> arguments that read it with the demo's SAE.</summary>
    private (string Dir, string Corpus, string[] Common) TextProbeSetup(string name, int docs)
    {
        Assert.True(fx.Exit == 0, fx.Err + fx.Out);
        string dir = Path.Combine(fx.Dir, name);
        Directory.CreateDirectory(dir);
        string corpus = Path.Combine(dir, "stories.jsonl");
        SaeSharp.Corpus.LabelledCorpus.Write(corpus, 17, docs);
        return (dir, corpus, ["probe", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin", "--dataset", corpus, "--pooling", "mean"]);
    }

    [Fact]
    public void Probe_with_mean_pooling_probes_texts_of_a_corpus_and_of_a_class_column()
    {
        var (dir, corpus, common) = TextProbeSetup("textprobe", 600);
        string json = Path.Combine(dir, "probe.json");
        var (exit, output, err) = CliRunner.Run([.. common, "--labels", "ctx:in_question,ctx:in_quote", "--json", json]);
        Assert.True(exit == 0, err + output);
        Assert.Contains("600 texts (mean-pooled)", output);
        var r = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal("mean", r["eval_result_unstructured"]!["pooling"]!.GetValue<string>());
        Assert.Equal(600, r["eval_result_unstructured"]!["texts"]!.GetValue<int>());
        Assert.Equal(128, r["eval_config"]!["context_length"]!.GetValue<int>());
        var perLabel = r["eval_result_unstructured"]![corpus + "_results"]!.AsObject();
        Assert.Equal(["ctx:in_question", "ctx:in_quote"], perLabel.Select(kv => kv.Key));
        var tasks = perLabel.Select(kv => kv.Value).ToList();
        foreach (var key in new[] { "llm_test_accuracy", "sae_top_1_test_accuracy" })
            Assert.Equal(tasks.Average(t => t![key]!.GetValue<double>()), r["eval_result_metrics"]![key.StartsWith("llm") ? "llm" : "sae"]![key]!.GetValue<double>(), 12);
        // 480 training and 120 test documents: each task's balanced sets are at most those.
        Assert.All(tasks, t => Assert.InRange(t!["train_examples"]!.GetValue<int>(), 40, 480));
        Assert.All(tasks, t => Assert.InRange(t!["test_examples"]!.GetValue<int>(), 40, 120));

        // The same documents as a classification dataset: class 1 when the story has a question, else 0.
        string classes = Path.Combine(dir, "questions.jsonl");
        File.WriteAllLines(classes, SaeSharp.Corpus.LabelledCorpus.Read(corpus).Select(d =>
            new JsonObject { ["story"] = d.Text, ["has_question"] = d.Labels.Any(l => l.Contains("ctx:in_question")) ? 1 : 0 }.ToJsonString()));
        (exit, output, err) = CliRunner.Run("probe", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin", "--dataset", classes,
            "--pooling", "mean", "--text-field", "story", "--label-field", "has_question", "--json", json);
        Assert.True(exit == 0, err + output);
        r = JsonNode.Parse(File.ReadAllText(json))!;
        var classLabels = r["eval_result_unstructured"]![classes + "_results"]!.AsObject();
        Assert.Equal(["0", "1"], classLabels.Select(kv => kv.Key).Order().ToArray());
        Assert.All(classLabels, t => Assert.InRange(t.Value!["llm_test_accuracy"]!.GetValue<double>(), 0.0, 1.0));

        var bad = CliRunner.Run([.. common, "--tokens", "100"]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--tokens: token pooling only", bad.Err + bad.Out);
        bad = CliRunner.Run("probe", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin", "--dataset", corpus, "--classes", "a,b");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--classes: need --pooling mean", bad.Err + bad.Out);
        bad = CliRunner.Run("probe", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin", "--dataset", classes, "--pooling", "mean");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("no text field 'text'", bad.Err + bad.Out);
        // Every story has a verb: no text without the label, and the message counts texts, not tokens.
        bad = CliRunner.Run([.. common, "--labels", "pos:VERB"]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("label 'pos:VERB' has 480 texts in the training half and 120 in the test half (and 0 / 0 without it)", bad.Err + bad.Out);
        Assert.Contains("read more texts", bad.Err + bad.Out);
    }

    [Fact]
    public void Probe_with_tpp_writes_saebench_tpp_metrics_consistent_with_every_class()
    {
        var (dir, corpus, common) = TextProbeSetup("tpp", 600);
        string json = Path.Combine(dir, "tpp.json");
        var (exit, output, err) = CliRunner.Run([.. common, "--tpp", "--tpp-n", "2,10", "--labels", "ctx:in_question,ctx:in_quote,tense:past", "--json", json]);
        Assert.True(exit == 0, err + output);
        Assert.Contains("TPP at blocks.", output);
        var root = JsonNode.Parse(File.ReadAllText(json))!;
        // One dataset: SAEBench's one eval_result_details entry, {dataset}_tpp_results; the classes are in runs[0].
        Assert.EndsWith("_tpp_results", Assert.Single(root["eval_result_details"]!.AsArray())!["dataset_name"]!.GetValue<string>());
        Assert.Empty(SaeSharp.Tests.Evaluation.SaeBenchSchemaTests.SchemaErrors("tpp", File.ReadAllText(json)));
        var r = root["eval_result_unstructured"]!["runs"]![0]!;
        var details = r["eval_result_details"]!.AsArray();
        Assert.Equal(["ctx:in_question", "ctx:in_quote", "tense:past"], details.Select(t => t!["class"]!.GetValue<string>()));
        var clean = details.Select(t => t!["clean_test_accuracy"]!.GetValue<double>()).ToArray();
        foreach (int n in new[] { 2, 10 })
        {
            // Recompute SAEBench's metrics from the per-class accuracies in the file.
            var intended = new double[3];
            var unintended = new double[3];
            for (int i = 0; i < 3; i++)
            {
                var acc = details[i]!["ablated_test_accuracies"]![$"{n}"]!;
                double[] after = [.. details.Select(t => acc[t!["class"]!.GetValue<string>()]!.GetValue<double>())];
                intended[i] = clean[i] - after[i];
                unintended[i] = Enumerable.Range(0, 3).Where(j => j != i).Average(j => clean[j] - after[j]);
                Assert.Equal(intended[i] - unintended[i], details[i]!["tpp_threshold_" + n + "_total_metric"]!.GetValue<double>(), 12);
                Assert.InRange(details[i]!["ablated_latents"]![$"{n}"]!.AsArray().Count, 1, n);
            }
            var m = r["eval_result_metrics"]!["tpp_metrics"]!;
            Assert.Equal(intended.Average(), m[$"tpp_threshold_{n}_intended_diff_only"]!.GetValue<double>(), 12);
            Assert.Equal(unintended.Average(), m[$"tpp_threshold_{n}_unintended_diff_only"]!.GetValue<double>(), 12);
            Assert.Equal(intended.Average() - unintended.Average(), m[$"tpp_threshold_{n}_total_metric"]!.GetValue<double>(), 12);
        }
        var bad = CliRunner.Run("probe", "--sae", Path.Combine(fx.Dir, "sae"), "--model", "builtin", "--dataset", corpus, "--tpp");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--tpp: need --pooling mean", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--tpp-n", "2"]);
        Assert.Contains("--tpp-n: needs --tpp", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--tpp", "--tpp-n", "2,x"]);
        Assert.Contains("--tpp-n: 'x' is not a positive integer", bad.Err + bad.Out);
    }

    [Fact]
    public void Probe_with_tpp_over_two_datasets_averages_them_and_warns_or_refuses_small_sets()
    {
        var (dir, corpus, common) = TextProbeSetup("tpp2", 400);
        string corpus2 = Path.Combine(dir, "stories2.jsonl");
        SaeSharp.Corpus.LabelledCorpus.Write(corpus2, 23, 400);
        string json = Path.Combine(dir, "tpp2.json");
        string[] args = [.. common, "--dataset", corpus2, "--tpp", "--tpp-n", "2", "--labels", "ctx:in_question,tense:past"];
        var (exit, output, err) = CliRunner.Run([.. args, "--json", json]);
        Assert.True(exit == 0, err + output);
        Assert.Contains("2 datasets, total metric per n", output);
        // 400 stories give at most 320 training texts per label, far below SAEBench's 4000: a warning naming the counts.
        Assert.Contains("warning: TPP on " + corpus, err);
        Assert.Contains("smaller sets than SAEBench's", err);
        var r = JsonNode.Parse(File.ReadAllText(json))!;
        var runs = r["eval_result_unstructured"]!["runs"]!.AsArray();
        Assert.Equal([corpus + "_tpp", corpus2 + "_tpp"], runs.Select(x => x!["run_name"]!.GetValue<string>()));
        var key = "tpp_threshold_2_total_metric";
        Assert.Equal(runs.Average(x => x!["eval_result_metrics"]!["tpp_metrics"]![key]!.GetValue<double>()),
            r["eval_result_metrics"]!["tpp_metrics"]![key]!.GetValue<double>(), 12);
        var bad = CliRunner.Run([.. args, "--strict-sizes"]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains($"TPP on {corpus}: too few texts: class", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--tpp", "--classes", "elsewhere.jsonl=a,b"]);
        Assert.Contains("'elsewhere.jsonl' is not among --dataset", bad.Err + bad.Out);
        // Without --tpp or --scr, --saebench-defaults is sparse probing's eight datasets: no --dataset beside it; token pooling has none.
        bad = CliRunner.Run([.. common, "--saebench-defaults"]);
        Assert.Contains("--dataset: not with --saebench-defaults", bad.Err + bad.Out);
        bad = CliRunner.Run("probe", "--sae", "nowhere", "--model", "builtin", "--saebench-defaults");
        Assert.Contains("--saebench-defaults: need --pooling mean", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--strict-sizes"]);
        Assert.Contains("--strict-sizes: needs --scr or --tpp", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--tpp", "--saebench-defaults"]);
        Assert.Contains("--dataset: not with --saebench-defaults", bad.Err + bad.Out);
        // --saebench-source NAME or DATASET=NAME, per dataset as --classes: one dataset named that is not given, or two
        // untied sources for two datasets, are refused by name.
        bad = CliRunner.Run([.. common, "--saebench-source", "elsewhere=ag_news"]);
        Assert.Contains("--saebench-source elsewhere=ag_news: 'elsewhere' is not among --dataset", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--dataset", corpus2, "--saebench-source", "ag_news", "--saebench-source", "europarl"]);
        Assert.Contains("--saebench-source is given 2 times without a dataset", bad.Err + bad.Out);
    }

    [Fact]
    public void Probe_with_scr_writes_saebench_scr_metrics_consistent_with_its_accuracies()
    {
        var (dir, corpus, common) = TextProbeSetup("scr", 1500);
        string json = Path.Combine(dir, "scr.json");
        var (exit, output, err) = CliRunner.Run([.. common, "--scr", "--classes", "tense:past", "--spurious-classes", "ctx:in_question", "--scr-n", "2,10", "--json", json]);
        Assert.True(exit == 0, err + output);
        Assert.Contains("SCR at blocks.", output);
        var r = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal("scr", r["eval_type_id"]!.GetValue<string>());
        // One pair: the suite's mean is that run's metrics; the run's own report is runs[0].
        Assert.Empty(SaeSharp.Tests.Evaluation.SaeBenchSchemaTests.SchemaErrors("scr", File.ReadAllText(json)));
        var run = r["eval_result_unstructured"]!["runs"]!.AsArray().Single()!;
        Assert.Equal("tense:past / not tense:past", run["column1"]!.GetValue<string>());
        Assert.Equal("ctx:in_question_tense:past / not ctx:in_question_not tense:past", run["biased"]!.GetValue<string>());
        var clean = run["llm_clean_accs"]!;
        var m = r["eval_result_metrics"]!["scr_metrics"]!;
        var dirs = run["directions"]!.AsArray();
        // SAEBench's skyline and baseline: dir 1 tests the biased probe on attribute 1's data against attribute 1's own probe.
        Assert.Equal(clean["tense:past / not tense:past"]!.GetValue<double>(), dirs[0]!["clean_acc"]!.GetValue<double>());
        Assert.Equal(clean[run["biased"]!.GetValue<string>() + " probe on tense:past / not tense:past data"]!.GetValue<double>(), dirs[0]!["original_acc"]!.GetValue<double>());
        double a1 = dirs[0]!["original_acc"]!.GetValue<double>(), a2 = dirs[1]!["original_acc"]!.GetValue<double>();
        foreach (int n in new[] { 2, 10 })
            for (int d = 0; d < 2; d++)
            {
                var o = dirs[d]!;
                double cl = o["clean_acc"]!.GetValue<double>(), or = o["original_acc"]!.GetValue<double>(), ch = o["changed_acc"]![$"{n}"]!.GetValue<double>();
                double expected = cl - or < 0.001 ? 0 : (ch - or) / (cl - or);
                Assert.Equal(expected, m[$"scr_dir{d + 1}_threshold_{n}"]!.GetValue<double>(), 12);
                Assert.InRange(o["ablated_latents"]![$"{n}"]!.AsArray().Count, 1, n);
                if ((d == 0 && a1 < a2) || (d == 1 && a1 > a2))
                    Assert.Equal(expected, m[$"scr_metric_threshold_{n}"]!.GetValue<double>(), 12);
            }
        Assert.Equal(m.ToJsonString(), r["eval_result_details"]![0]!.AsObject().Where(kv => kv.Key != "dataset_name")
            .Aggregate(new JsonObject(), (acc, kv) => { acc[kv.Key] = kv.Value!.DeepClone(); return acc; }).ToJsonString());
        var bad = CliRunner.Run([.. common, "--scr", "--spurious-classes", "ctx:in_question"]);
        Assert.Contains("--scr needs --classes", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--scr", "--classes", "tense:past", "--spurious-classes", "ctx:nowhere"]);
        Assert.Contains("no document of the first 1500 has label 'ctx:nowhere' (--spurious-classes)", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--scr", "--classes", "tense:past", "--spurious-classes", "ctx:in_question", "--texts", "300"]);
        Assert.Contains("too few texts in the ", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--spurious-classes", "ctx:in_question"]);
        Assert.Contains("--spurious-classes: need --scr", bad.Err + bad.Out);
        bad = CliRunner.Run([.. common, "--scr", "--tpp", "--classes", "tense:past", "--spurious-classes", "ctx:in_question"]);
        Assert.Contains("--tpp: not with --scr", bad.Err + bad.Out);
    }
}

/// <summary><c>sae demo</c>'s sizes without running the whole flow: the defaults its help states, the flags reaching the
/// run (a size the run refuses is named back at once), and the training stage on a few batches.</summary>
public class DemoOptionsTests
{
    /// <summary>The help's defaults (600,000 tokens, d_sae 256, k 16; --quick 40,960 tokens and k 8) are the options'.</summary>
    [Fact]
    public void The_defaults_are_the_ones_the_help_states()
    {
        var help = System.Text.RegularExpressions.Regex.Replace(CliRunner.Run("demo", "--help").Out, @"\s+", " ");
        foreach (var stated in new[] { "(default 600,000; --quick 40,960)", "SAE latents (default 256)", "TopK active latents (default 16; --quick 8)" })
            Assert.Contains(stated, help);
        var full = new SaeSharp.Pipelines.DemoOptions();
        Assert.Equal((600_000L, 256, 16), (full.TrainTokens, full.DSae, full.K));
        var quick = SaeSharp.Pipelines.DemoOptions.Quick("q");
        Assert.Equal((40_960L, 256, 8), (quick.TrainTokens, quick.DSae, quick.K));
    }

    /// <summary>--k, --d-sae and --tokens reach the run: sizes it cannot use are refused naming the values given, before any
    /// stage starts.</summary>
    [Fact]
    public void Size_flags_reach_the_run()
    {
        string dir = Directory.CreateTempSubdirectory("sae-demo-flags-").FullName;
        try
        {
            var r = CliRunner.Run("demo", "--quick", "--k", "300", "--out", dir);
            Assert.Equal(1, r.Exit);
            Assert.Contains("d_sae 256 and k 300", r.Err);
            r = CliRunner.Run("demo", "--quick", "--d-sae", "4", "--out", dir);
            Assert.Equal(1, r.Exit);
            Assert.Contains("d_sae 4 and k 8", r.Err);
            r = CliRunner.Run("demo", "--quick", "--tokens", "100", "--out", dir);
            Assert.Equal(1, r.Exit);
            Assert.Contains("got 100", r.Err);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>The harvest and training stages on a few batches: --steps sets the steps (not one pass over the tokens),
    /// and the SAE is trained with BOS and the other special-token positions left out, as the demo says (its cfg.json
    /// records exclude_special_tokens).</summary>
    [Fact]
    public void Steps_set_the_training_steps_and_special_tokens_are_left_out()
    {
        string dir = Directory.CreateTempSubdirectory("sae-demo-steps-").FullName;
        try
        {
            using var demo = new SaeSharp.Pipelines.DemoRun(new SaeSharp.Pipelines.DemoOptions
            {
                OutDir = dir, TrainTokens = 30_000, BatchSize = 1024, Steps = 3, DSae = 64, K = 4, EvalTokens = 1024, ScoreTokens = 1024, DashboardTokens = 1024,
            });
            demo.GenerateCorpus();
            Assert.Equal(3, demo.Harvest().Steps);
            var result = demo.Train();
            Assert.Equal(3, result.Steps);
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(demo.SaePath, "cfg.json")))!;
            Assert.True(cfg["metadata"]!["exclude_special_tokens"]!.GetValue<bool>());
            Assert.True(cfg["metadata"]!["prepend_bos"]!.GetValue<bool>());
            Assert.Equal(4, cfg["k"]!.GetValue<int>());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
