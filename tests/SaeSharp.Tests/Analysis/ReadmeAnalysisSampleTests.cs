using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Cli;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Analysis;

/// <summary>The README's analysis sample, verbatim (<see cref="ReadmeSamples"/>) at toy sizes: it must compile and do what the README says.</summary>
public class ReadmeAnalysisSampleTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    private static readonly (string Readme, string Test)[] ToyScale =
    [
        ("\"models/pythia-70m\"", "_fx.ModelDir"), ("\"corpus.txt\"", "_fx.DataPath"), ("100_000", "300"), ("\"runs/topk\"", "_fx.SaeDir"),
        ("\"0-99\", dSae: 16384", "\"0-9\", dSae: AnalysisFixture.DSae"), ("\"features\"", "features"), ("\"site\"", "site"),
    ];

    [Fact]
    public void AnalysisSampleWritesReportDashboardAndPromptView()
    {
        string features = Path.Combine(_fx.Dir, "features"), site = Path.Combine(_fx.Dir, "site");
        var output = new StringWriter();
        // Console.Out is process-wide: hold the CLI runner's gate so that no CLI test writes into this capture.
        Monitor.Enter(CliRunner.Gate);
        var console = Console.Out;
        Console.SetOut(output);
        try
        {
            // readme-sample analysis begin
            // One pass over a corpus: statistics of features 0-99, saved as features.jsonl/summary.json, and the HTML dashboard.
            var data = new ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, Tokens = 300 };
            var report = AnalysisPipeline.Features(_fx.SaeDir, data, new FeatureAnalysisOptions
            {
                Features = FeatureSelection.Parse("0-9", dSae: AnalysisFixture.DSae),
                Statistics = new FeatureStatisticsOptions { TopExamples = 20, Context = 8 },
            });
            report.Save(features);
            string index = DashboardWriter.Write(report, site);
            var busiest = report.Features.MaxBy(f => f.Density)!;
            Console.WriteLine($"feature {busiest.Feature}: top token {report.TokenString(busiest.TopExamples[0].Token)}");

            // The prompt view: top features of a prompt, each with its activation on every token.
            var (sae, pm) = ModelForSae.LoadWithSae(_fx.SaeDir, _fx.ModelDir);
            var inspector = new PromptInspector(pm.Model, sae, Tokenizer.FromFolder(_fx.ModelDir), pm.Hooks);
            var view = inspector.Inspect("the cat sat on the mat", top: 10, neurons: true);
            Console.WriteLine(view.ToJson());
            // readme-sample analysis end

            using (sae)
            using (pm)
            {
                Assert.Equal(10, view.Features.Count);
                Assert.Equal(10, view.Neurons.Count);
                Assert.Equal(view.Tokens.Length, view.ToJson()["token_strs"]!.AsArray().Count);
            }
            Assert.Equal(10, report.Features.Count);
            Assert.True(File.Exists(Path.Combine(features, "features.jsonl")) && File.Exists(index));
            // The busiest feature's top token is its chosen word (feature i points at ChosenWords[i]).
            Assert.Contains($"feature {busiest.Feature}: top token  {AnalysisFixture.ChosenWords[busiest.Feature]}", output.ToString());
            Assert.Contains("\"token_strs\"", output.ToString());
        }
        finally
        {
            Console.SetOut(console);
            Monitor.Exit(CliRunner.Gate);
        }
    }

    [Fact]
    public void The_readme_block_is_this_sample() => ReadmeSamples.AssertBlockIsRegion("analysis", ToyScale);
}
