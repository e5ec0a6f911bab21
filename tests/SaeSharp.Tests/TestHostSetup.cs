using System.Runtime.CompilerServices;

namespace SaeSharp.Tests;

/// <summary>Process set-up of the test host, as the <c>sae</c> CLI's start does it (src/SaeSharp.Cli/Program.cs).</summary>
internal static class TestHostSetup
{
    /// <summary>
    /// Passive OpenMP waits (<see cref="NativeRuntime.UsePassiveOpenMpWaits"/>), set before any test touches TorchSharp:
    /// libgomp reads OMP_WAIT_POLICY when libtorch loads. Without it libtorch's idle threads spin after every parallel op
    /// against the .NET-parallel kernels and the other tests: <c>demo --quick --tokens 20480</c> run in process cost 13-20 s
    /// of CPU instead of 3-4 s (as from <c>./sae</c>). An OMP_WAIT_POLICY set outside, or SAESHARP_NO_TUNE, is left alone.
    /// Serial torch steps are not set here: tests run torch on several threads at once (<see cref="Training.SerialTorchCollection"/>).
    /// </summary>
#pragma warning disable CA2255 // a module initializer in a test assembly: it must run before the first test loads libtorch
    [ModuleInitializer]
    internal static void UsePassiveOpenMpWaits() => NativeRuntime.UsePassiveOpenMpWaits();
#pragma warning restore CA2255
}
