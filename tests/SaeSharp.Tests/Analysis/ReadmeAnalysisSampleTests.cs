using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Analysis;

/// <summary>The README's analysis sample, at toy sizes: it must compile and do what the README says.</summary>
public class ReadmeAnalysisSampleTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    [Fact]
    public void AnalysisSampleWritesReportDashboardAndPromptView()
    {
        string features = Path.Combine(_fx.Dir, "features"), site = Path.Combine(_fx.Dir, "site");

        var data = new ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, Tokens = 300 };
        var report = AnalysisPipeline.Features(_fx.SaeDir, data, new FeatureAnalysisOptions
        {
            Features = FeatureSelection.Parse("0-9", dSae: AnalysisFixture.DSae),
            Statistics = new FeatureStatisticsOptions { TopExamples = 20, Context = 8 },
        });
        report.Save(features);
        string index = DashboardWriter.Write(report, site);
        var busiest = report.Features.MaxBy(f => f.Density)!;
        string top = report.TokenString(busiest.TopExamples[0].Token);

        var (sae, pm) = ModelForSae.LoadWithSae(_fx.SaeDir, _fx.ModelDir);
        using (sae)
        using (pm)
        {
            var inspector = new PromptInspector(pm.Model, sae, Tokenizer.FromFolder(_fx.ModelDir), pm.Hooks);
            var view = inspector.Inspect("the cat sat on the mat", top: 10, neurons: true);
            Assert.Equal(10, view.Features.Count);
            Assert.Equal(10, view.Neurons.Count);
            Assert.Equal(view.Tokens.Length, view.ToJson()["token_strs"]!.AsArray().Count);
        }
        Assert.Equal(10, report.Features.Count);
        Assert.True(File.Exists(Path.Combine(features, "features.jsonl")) && File.Exists(index));
        // The busiest feature's top token is its chosen word (feature i points at ChosenWords[i]).
        Assert.Equal(" " + AnalysisFixture.ChosenWords[busiest.Feature], top);
    }
}
