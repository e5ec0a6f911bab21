using static TorchSharp.torch;

namespace SaeSharp;

/// <summary>
/// The <c>--device</c> names: <c>cpu</c> (default) and <c>cuda</c> / <c>cuda:N</c>. CUDA needs the CUDA TorchSharp backend,
/// chosen at build time with <c>-p:TorchBackend=cuda</c> (TorchSharp-cuda-linux instead of TorchSharp-cpu), and a GPU.
/// </summary>
public static class ComputeDevice
{
    /// <summary>The device named <paramref name="name"/> (null: cpu), or a clear error when this build or machine cannot use it.</summary>
    public static Device Parse(string? name)
    {
        var n = (name ?? "cpu").Trim().ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(n[5..], out int i) && i >= 0)
        {
            if (!cuda.is_available())
                throw new SaeSharpException($"--device {name}: TorchSharp sees no CUDA device (this build uses the CPU backend unless " +
                    "built with -p:TorchBackend=cuda, and the machine needs an NVIDIA GPU and driver)");
            return new Device(n);
        }
        throw new SaeSharpException($"--device {name}: expected cpu, cuda or cuda:N");
    }
}
