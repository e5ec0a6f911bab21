using System.Diagnostics;
using System.Runtime.CompilerServices;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>tensor-lifetime</c>: a temporary tensor passed straight into a long native call with no dispose scope on the
/// thread, <c>a.matmul(b.mul(two))</c>, while another thread forces collections (and allocates tensors of the same size,
/// so freed memory is reused). <c>--mode temp</c> is that code; <c>using</c> holds the temporary in a <c>using</c> local,
/// <c>scope</c> runs the call in a <c>NewDisposeScope</c>; <c>kernel</c> passes the temporary to a raw-pointer kernel
/// instead (<c>NormKernels.SumOfSquares(y.mul(two))</c>, held by the kernel's own <c>GC.KeepAlive</c>). Each result is
/// checked against one computed in a scope.
/// The temporary's finalizer frees its storage while the product still reads it: the process dies (segfault, heap
/// corruption) or reports wrong products. Usage: <c>tensor-lifetime [--mode temp|using|scope|kernel] [--seconds 10] [--n 512]</c>.
/// </summary>
internal static class TensorLifetimeBench
{
    public static int Run(string[] argv)
    {
        var a = BenchArgs.For("tensor-lifetime", argv);
        string mode = a.Value("--mode", "temp");
        int seconds = a.Int("--seconds", 10), n = a.Int("--n", 512);
        Func<Tensor, Tensor, Tensor, Tensor> product = mode switch
        {
            "temp" => Temporary,
            "using" => Held,
            "scope" => Scoped,
            "kernel" => Kernel,
            _ => throw new BenchUsageException($"--mode {mode}: expected temp, using, scope or kernel"),
        };
        set_num_threads(1);
        manual_seed(1);
        using var x = randn(n, n);
        using var y = randn(n, n);
        using var two = full(1, TorchScalars.Of(2.0));
        Tensor expected;
        using (NewDisposeScope())
            expected = (mode == "kernel" ? y.mul(two).to(ScalarType.Float64).square().sum() : x.matmul(y.mul(two))).MoveToOuterDisposeScope();
        using var _ = expected;

        bool stop = false;
        long collections = 0;
        var collector = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                for (int i = 0; i < 4; i++) full(new long[] { n, n }, TorchScalars.Of(1e30)).Dispose();
                GC.Collect();
                GC.WaitForPendingFinalizers();
                collections++;
            }
        }) { IsBackground = true };
        collector.Start();
        int runs = 0, wrong = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            runs++;
            using var r = product(x, y, two);
            if (!r.allclose(expected, rtol: 1e-4, atol: 1e-3)) wrong++;
        }
        Volatile.Write(ref stop, true);
        collector.Join();
        Console.WriteLine($"{mode}, n {n}: {runs} products in {seconds} s, {wrong} wrong, {collections} forced collections");
        return wrong == 0 ? 0 : 1;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static Tensor Temporary(Tensor x, Tensor y, Tensor two) => x.matmul(y.mul(two));

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static Tensor Kernel(Tensor x, Tensor y, Tensor two) => tensor(Kernels.NormKernels.SumOfSquares(y.mul(two)));

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static Tensor Held(Tensor x, Tensor y, Tensor two)
    {
        using var t = y.mul(two);
        return x.matmul(t);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static Tensor Scoped(Tensor x, Tensor y, Tensor two)
    {
        using var scope = NewDisposeScope();
        return x.matmul(y.mul(two)).MoveToOuterDisposeScope();
    }
}
