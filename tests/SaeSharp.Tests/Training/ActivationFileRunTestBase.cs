using SaeSharp.IO;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>A temporary folder with 640 activation rows of width 8, not centred (so that b_dec matters), and runner
/// configs that train on them for 8 steps of 32 rows: the set-up of the tests of single SAELens training fields.</summary>
public abstract class ActivationFileRunTestBase : IDisposable
{
    private readonly string _dir;

    protected ActivationFileRunTestBase(string prefix) => _dir = Directory.CreateTempSubdirectory(prefix).FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, true);
        GC.SuppressFinalize(this);
    }

    protected string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    /// <summary>The activation file's path, with forward slashes (for JSON).</summary>
    protected string Activations()
    {
        string path = P("a.safetensors");
        if (!File.Exists(path))
        {
            using var rows = randn(640, 8, generator: new Generator(3)).mul_(1.5).add_(TorchScalars.Of(0.7), TorchScalars.One);
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = rows });
        }
        return path.Replace("\\", "/");
    }

    /// <summary>A runner config of <paramref name="fields"/> on the activation file, written to OUT/<paramref name="outName"/>.</summary>
    protected TrainingSettings Settings(string fields, string outName) => TrainingSettings.FromJson($$"""
        {"activations": "{{Activations()}}", "batch_size": 32, "eval_rows": 64, "steps": 8, "expansion_factor": 2,
         "out": "{{P(outName).Replace("\\", "/")}}", {{fields}} }
        """, "runner.json");
}
