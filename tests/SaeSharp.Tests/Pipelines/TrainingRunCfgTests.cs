using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary>The sparsity fields of a trained SAE's cfg.json: a coefficient only where the SAE trained with one.</summary>
public class TrainingRunCfgTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("run-cfg-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>BatchTopK and Matryoshka SAEs are saved as JumpReLU (SAELens's inference form) but train with no
    /// sparsity coefficient: no l0_coefficient. A JumpReLU SAE records the coefficient it was given.</summary>
    [Theory]
    [InlineData("batchtopk", null)]
    [InlineData("matryoshka", null)]
    [InlineData("jumprelu", 0.375)]
    public void OnlySaesTrainedWithACoefficientRecordOne(string arch, double? coefficient)
    {
        string data = Path.Combine(_dir, "t.safetensors").Replace("\\", "/"), outDir = Path.Combine(_dir, arch).Replace("\\", "/");
        SafeTensors.Save(data, new Dictionary<string, Tensor> { ["activations"] = randn(600, 8, generator: new Generator(3)) });
        // The k-sparse recipes take k; jumprelu its coefficient.
        string l1 = coefficient is double c ? $""", "l1_coefficient": {c}""" : """, "k": 2""";
        var s = TrainingSettings.FromJson($$"""
            {"activations": "{{data}}", "architecture": "{{arch}}", "d_sae": 32, "steps": 10, "batch_size": 32,
             "eval_rows": 64, "out": "{{outDir}}"{{l1}}}
            """);
        using (var plan = TrainingPlan.ForActivations(s)) plan.Run();
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "cfg.json")))!.AsObject();
        Assert.Equal("jumprelu", (string)cfg["architecture"]!);
        Assert.False(cfg.ContainsKey("l1_coefficient"));
        Assert.False(cfg.ContainsKey("target_l0"));
        if (coefficient is double expected) Assert.Equal(expected, cfg["l0_coefficient"]!.GetValue<double>());
        else Assert.False(cfg.ContainsKey("l0_coefficient"), cfg.ToJsonString());
    }
}
