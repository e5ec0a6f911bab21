using System.Runtime.InteropServices;

namespace SaeSharp;

/// <summary>Process set-up for libtorch's CPU threads.</summary>
public static partial class NativeThreads
{
    /// <summary>
    /// Sets OMP_WAIT_POLICY=PASSIVE in the native environment unless the variable is already set (Linux; a no-op elsewhere).
    /// Call it before the first TorchSharp call: libgomp reads it when loaded. Otherwise libgomp's idle threads spin for
    /// milliseconds after every parallel torch op and take the cores from the .NET-parallel sparse kernels that follow
    /// (a TopK training step at d_sae 8192 on 2 cores: about 20% slower). Returns whether it set the variable.
    /// </summary>
    public static bool UsePassiveOpenMpWaits()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null) return false;
        return SetEnv("OMP_WAIT_POLICY", "PASSIVE", 0) == 0;
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
