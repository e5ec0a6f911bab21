using static TorchSharp.torch;

namespace SaeSharp;

/// <summary>
/// The <c>--device</c> names: <c>cpu</c> (default) and <c>cuda</c> / <c>cuda:N</c>. CUDA needs the CUDA TorchSharp backend,
/// chosen at build time with <c>-p:TorchBackend=cuda</c> (TorchSharp-cuda-linux instead of TorchSharp-cpu), and a GPU.
/// </summary>
public static class ComputeDevice
{
    /// <summary>The device named <paramref name="name"/> (null: cpu), or a clear error when this build or machine cannot use it;
    /// <paramref name="what"/> names the setting in the error (the CLI's <c>--device</c>, a config's <c>device</c>).</summary>
    public static Device Parse(string? name, string what = "--device")
    {
        var n = (name ?? "cpu").Trim().ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(n[5..], out int i) && i >= 0)
        {
            if (!cuda.is_available())
                throw new SaeSharpException($"{what} {name}: TorchSharp sees no CUDA device (this build uses the CPU backend unless " +
                    "built with -p:TorchBackend=cuda, and the machine needs an NVIDIA GPU and driver)");
            return new Device(n);
        }
        throw new SaeSharpException($"{what} {name}: expected cpu, cuda or cuda:N");
    }

    /// <summary>The name <see cref="Parse"/> reads back: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public static string Name(Device device) =>
        device.type == TorchSharp.DeviceType.CPU ? "cpu" : device.index < 0 ? device.type.ToString().ToLowerInvariant() : $"{device.type.ToString().ToLowerInvariant()}:{device.index}";

    /// <summary>Whether a tensor on <paramref name="actual"/> is on <paramref name="wanted"/> (a device without an index, e.g.
    /// <c>cuda</c>, holds tensors on any of its indices).</summary>
    public static bool Holds(Device wanted, Device actual) =>
        wanted.type == actual.type && (wanted.index < 0 || actual.index < 0 || wanted.index == actual.index || wanted.type == TorchSharp.DeviceType.CPU);

    /// <summary><paramref name="t"/> on <paramref name="device"/>: an alias when it is there already, else a copy (non-blocking,
    /// which overlaps a host-to-GPU copy with the work queued before it; from ordinary, unpinned host memory CUDA has read
    /// the source when the call returns, so the caller may dispose it at once).</summary>
    public static Tensor To(Tensor t, Device device) => Holds(device, t.device) ? t.alias() : t.to(device, non_blocking: true);
}
