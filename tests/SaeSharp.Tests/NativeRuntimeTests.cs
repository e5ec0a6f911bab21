using SaeSharp.LanguageModels;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary>
/// <see cref="NativeRuntime.EnsureSignalStack"/>: on CPUs with AMX a thread that ran libtorch's bfloat16 products has
/// 12 KB signal frames, which overran .NET's 16 KB alternate stack, so a null dereference killed the process (SIGSEGV,
/// exit 139: the test host "crashed" when a test after <c>sae demo</c> failed on a null) instead of throwing.
/// </summary>
public class NativeRuntimeTests
{
    /// <summary>AT_MINSIGSTKSZ read from /proc/self/auxv (pairs of 64-bit type and value), not through the code under test.</summary>
    private static ulong KernelMinimumSignalFrame()
    {
        var auxv = File.ReadAllBytes("/proc/self/auxv");
        for (int i = 0; i + 16 <= auxv.Length; i += 16)
            if (BitConverter.ToUInt64(auxv, i) == 51) return BitConverter.ToUInt64(auxv, i + 8);
        return 0;
    }

    private static T OnNewThread<T>(Func<T> body)
    {
        T result = default!;
        Exception? error = null;
        var t = new Thread(() => { try { result = body(); } catch (Exception e) { error = e; } }, 16 << 20);
        t.Start();
        t.Join();
        if (error is not null) throw new Xunit.Sdk.XunitException("thread failed: " + error);
        return result;
    }

    [Fact]
    public void A_thread_gets_a_signal_stack_with_room_for_the_kernels_frame_plus_the_handler_once()
    {
        if (!OperatingSystem.IsLinux()) return;
        ulong minimum = KernelMinimumSignalFrame();
        var (before, installed, after, again) = OnNewThread(() =>
        {
            long b = NativeRuntime.SignalStackSize();
            bool i = NativeRuntime.EnsureSignalStack();
            long a = NativeRuntime.SignalStackSize();
            return (b, i, a, NativeRuntime.EnsureSignalStack());
        });
        Assert.True(before > 0, ".NET gives each thread an alternate signal stack");
        Assert.False(again);   // once per thread
        if (minimum == 0) { Assert.False(installed); return; }
        // Replaced exactly when .NET's stack leaves less than 8 KB beyond the kernel's minimum frame (AMX CPUs: ~12 KB of 16 KB).
        Assert.Equal((ulong)before < minimum + 8192, installed);
        Assert.True((ulong)after >= minimum + 8192, $"alternate stack {after} bytes, kernel minimum frame {minimum}");
        if (installed) Assert.Equal((long)((minimum + NativeRuntime.SignalHandlerHeadroom + 4095) & ~4095UL), after);
    }

    /// <summary>A model run in bfloat16 (oneDNN's AMX kernels where the CPU has them) and a bf16 product on the same thread,
    /// then a null dereference and an integer division by zero: both are exceptions, caught here, not a dead process.</summary>
    [Fact]
    public void After_bf16_work_through_a_model_run_a_null_dereference_is_an_exception()
    {
        var caught = OnNewThread(() =>
        {
            using (var model = ModelLoader.FromPretrained(BuiltinModel.Folder, ScalarType.BFloat16))
            using (var scope = NewDisposeScope())
            {
                var logits = model.Forward(tensor(new long[,] { { 1, 2, 3, 4 } }));
                var a = randn(256, 512, dtype: ScalarType.BFloat16);
                var product = a.matmul(a.t()).sum().to_type(ScalarType.Float32).item<float>();
                Assert.True(float.IsFinite(product) && logits.shape[^1] > 0);
            }
            var found = new List<string>();
            string? nothing = Environment.GetEnvironmentVariable("SAESHARP_TEST_UNSET_VARIABLE");
            try { found.Add(nothing!.Length.ToString()); } catch (NullReferenceException) { found.Add("null"); }
            int zero = found.Count - 1;
            try { found.Add((7 / zero).ToString()); } catch (DivideByZeroException) { found.Add("divide"); }
            return found;
        });
        Assert.Equal(["null", "divide"], caught);
    }
}
