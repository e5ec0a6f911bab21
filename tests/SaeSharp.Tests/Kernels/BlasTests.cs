using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="Blas"/>: every GEMM form on both providers against a float64 product, the choice and its logging,
/// and the fallback to torch when OpenBLAS is missing.</summary>
[Collection(KernelPathCollection.Name)]
public class BlasTests
{
    /// <summary>|c − a·b| within float32 summation error of the float64 product: 2·k·ε·(|a|·|b|) elementwise.</summary>
    private static void AssertProduct(Tensor? bias, Tensor a, Tensor b, Tensor c, string what)
    {
        var a64 = a.to(ScalarType.Float64);
        var b64 = b.to(ScalarType.Float64);
        var expected = a64.matmul(b64);
        if (bias is not null) expected = expected + bias.to(ScalarType.Float64);
        var bound = a64.abs().matmul(b64.abs()) * (2 * a.shape[1] * 6e-8) + 1e-7;
        Assert.Equal(expected.shape, c.shape);
        Assert.Equal(ScalarType.Float32, c.dtype);
        var excess = ((c.to(ScalarType.Float64) - expected).abs() - bound).max().item<double>();
        Assert.True(excess <= 0, $"{what}: error exceeds the float32 bound by {excess}");
    }

    private static void WithProvider(GemmProvider p, Action body)
    {
        try
        {
            Blas.Provider = p;
            body();
        }
        finally { Blas.ResetProvider(); }
    }

    /// <summary>Plain, transposed (either or both operands, read in place), copied (a strided slice) and biased (row vector
    /// or full matrix) products, at odd sizes, below and above the size at which the output is split over threads (rows
    /// when m ≥ n, else columns).</summary>
    [SkippableTheory]
    [InlineData("openblas", 1, 1, 1)]
    [InlineData("openblas", 7, 13, 5)]
    [InlineData("openblas", 37, 29, 53)]
    [InlineData("openblas", 301, 97, 131)]
    [InlineData("openblas", 67, 301, 129)]
    [InlineData("torch", 37, 29, 53)]
    [InlineData("torch", 67, 301, 129)]
    public void Every_gemm_form_matches_the_float64_product(string provider, int m, int n, int k)
    {
        var p = Blas.Parse(provider);
        Skip.If(p == GemmProvider.OpenBlas && !Blas.Available, "OpenBLAS (libopenblas.so.0) is not installed");
        using var scope = NewDisposeScope();
        var g = new Generator(7);
        var a = randn(m, k, generator: g);
        var b = randn(k, n, generator: g);
        var aT = randn(k, m, generator: g).t();
        var bT = randn(n, k, generator: g).t();
        var aWide = randn(m, 2 * k, generator: g);
        var aStrided = aWide[.., TensorIndex.Slice(0, 2 * k, 2)];
        var rowBias = randn(n, generator: g);
        var fullBias = randn(m, n, generator: g);
        WithProvider(p, () =>
        {
            long before = Blas.OpenBlasCalls;
            AssertProduct(null, a, b, Blas.Mm(a, b), "a·b");
            AssertProduct(null, aT, b, Blas.Mm(aT, b), "aᵀ·b");
            AssertProduct(null, a, bT, Blas.Mm(a, bT), "a·bᵀ");
            AssertProduct(null, aT, bT, Blas.Mm(aT, bT), "aᵀ·bᵀ");
            AssertProduct(null, aStrided, b, Blas.Mm(aStrided, b), "strided a·b");
            AssertProduct(rowBias, a, b, Blas.AddMm(rowBias, a, b), "row bias + a·b");
            var fullBiasCopy = fullBias.clone();
            AssertProduct(fullBias, aT, bT, Blas.AddMm(fullBias, aT, bT), "full bias + aᵀ·bᵀ");
            Assert.True(fullBias.eq(fullBiasCopy).all().item<bool>(), "the bias is not written");
            Assert.Equal(p == GemmProvider.OpenBlas ? 7 : 0, Blas.OpenBlasCalls - before);
        });
    }

    [Fact]
    public void A_missing_library_falls_back_to_torch()
    {
        using var scope = NewDisposeScope();
        var a = randn(40, 30, generator: new Generator(1));
        var b = randn(30, 20, generator: new Generator(2));
        bool sharedAvailable = Blas.Available;
        var ambient = Blas.Provider;
        try
        {
            Blas.ReloadFrom(["libsaesharp-no-such-blas.so.0"]);
            Assert.False(Blas.Available);
            Assert.Contains("OpenBLAS not found", Blas.Describe());
            foreach (var p in Enum.GetValues<GemmProvider>())
                WithProvider(p, () =>
                {
                    long before = Blas.OpenBlasCalls;
                    AssertProduct(null, a, b, Blas.Mm(a, b), $"{p} without OpenBLAS");
                    AssertProduct(b[0], a, b, Blas.AddMm(b[0], a, b), $"{p} addmm without OpenBLAS");
                    Assert.Equal(before, Blas.OpenBlasCalls);
                    // Code running elsewhere (a work item that does not inherit this flow) still sees the process's choice.
                    var (otherAvailable, otherProvider) = OnAnotherFlow(() => (Blas.Available, Blas.Provider));
                    Assert.Equal(sharedAvailable, otherAvailable);
                    Assert.Equal(ambient, otherProvider);
                });
        }
        finally { Blas.ReloadFrom(null); }
        Assert.Equal(sharedAvailable, Blas.Available);
    }

    private static T OnAnotherFlow<T>(Func<T> f)
    {
        T result = default!;
        using var done = new ManualResetEventSlim();
        ThreadPool.UnsafeQueueUserWorkItem(_ =>
        {
            result = f();
            done.Set();
        }, null);
        done.Wait();
        return result;
    }

    [Fact]
    public void Torch_kernel_path_and_other_dtypes_keep_torch()
    {
        using var scope = NewDisposeScope();
        var a = randn(40, 30, generator: new Generator(1));
        var b = randn(30, 20, generator: new Generator(2));
        WithProvider(GemmProvider.OpenBlas, () =>
        {
            long before = Blas.OpenBlasCalls;
            try
            {
                CpuKernels.Path = KernelPath.Torch;
                AssertProduct(null, a, b, Blas.Mm(a, b), "kernel path torch");
            }
            finally { CpuKernels.ResetPath(); }
            var c64 = Blas.Mm(a.to(ScalarType.Float64), b.to(ScalarType.Float64));
            Assert.Equal(ScalarType.Float64, c64.dtype);
            Assert.True(c64.allclose(a.to(ScalarType.Float64).matmul(b.to(ScalarType.Float64))));
            Assert.Equal(before, Blas.OpenBlasCalls);
        });
    }

    /// <summary>Auto times both libraries once per shape class, logs the choice, and returns a correct product either way;
    /// forcing a provider or hiding the library holds for the calling thread only.</summary>
    [SkippableFact]
    public void Auto_measures_each_shape_class_once_and_logs_it()
    {
        Skip.If(!Blas.Available, "OpenBLAS (libopenblas.so.0) is not installed");
        using var scope = NewDisposeScope();
        var lines = new List<string>();
        var log = CpuKernels.VerboseLog;
        try
        {
            Blas.Remeasure(); // no earlier choices
            CpuKernels.VerboseLog = line =>
            {
                lock (lines) lines.Add(line);
            };
            WithProvider(GemmProvider.Auto, () =>
            {
                var a = randn(100, 60, generator: new Generator(3));
                var b = randn(60, 90, generator: new Generator(4));
                AssertProduct(null, a, b, Blas.Mm(a, b), "first (measured) call");
                AssertProduct(null, a, b, Blas.Mm(a, b), "second call");
                var a2 = randn(110, 60, generator: new Generator(5)); // same power-of-two class
                AssertProduct(null, a2, b, Blas.Mm(a2, b), "same class");
                AssertProduct(null, a.t(), a, Blas.Mm(a.t(), a), "another form");
            });
        }
        finally
        {
            CpuKernels.VerboseLog = log;
            Blas.ReloadFrom(null);
        }
        // Tests in other collections may log their own trials meanwhile: only these shapes count.
        var mine = lines.Where(l => l.Contains("[100, 60]·[60, 90]") || l.Contains("[110, 60]") || l.Contains("[60, 100]·[100, 60]")).ToList();
        Assert.Equal(2, mine.Count);
        Assert.Contains("GEMM [100, 60]·[60, 90]: OpenBLAS (", mine[0]);
        Assert.Matches(@"torch [0-9.]+ ms: (OpenBLAS|torch)$", mine[0]);
        Assert.Contains("GEMM [60, 100]·[100, 60]", mine[1]);
    }

    [Fact]
    public void Provider_names_parse_back_and_bad_ones_are_refused()
    {
        foreach (var p in Enum.GetValues<GemmProvider>()) Assert.Equal(p, Blas.Parse(Blas.Name(p)));
        Assert.Equal(GemmProvider.OpenBlas, Blas.Parse(" OpenBLAS "));
        var e = Assert.Throws<SaeSharpException>(() => Blas.Parse("mkl"));
        Assert.Contains("SAESHARP_GEMM=mkl", e.Message);
    }
}
