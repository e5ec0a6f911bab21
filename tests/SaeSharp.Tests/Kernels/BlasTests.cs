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

    /// <summary>Measure times both libraries once per shape class, logs the choice, and returns the kept library's product
    /// from the timed call on: the first call and the later ones of a class agree bit for bit.</summary>
    [SkippableFact]
    public void Measure_times_each_shape_class_once_logs_it_and_returns_the_kept_librarys_product()
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
            WithProvider(GemmProvider.Measure, () =>
            {
                // Large enough that the two libraries' products differ in the last bits (checked below).
                var a = randn(100, 300, generator: new Generator(3));
                var b = randn(300, 90, generator: new Generator(4));
                var first = Blas.Mm(a, b);
                AssertProduct(null, a, b, first, "first (measured) call");
                var second = Blas.Mm(a, b);
                Assert.True(first.eq(second).all().item<bool>(), "the timed call returns what the kept library computes afterwards");
                var a2 = randn(110, 300, generator: new Generator(5)); // same power-of-two class
                AssertProduct(null, a2, b, Blas.Mm(a2, b), "same class");
                AssertProduct(null, a.t(), a, Blas.Mm(a.t(), a), "another form");
                // The timed call returned the kept library's own product (the two libraries often round differently here).
                bool keptBlas = lines.Any(l => l.Contains("[100, 300]·[300, 90]") && l.EndsWith(": OpenBLAS", StringComparison.Ordinal));
                Blas.Provider = keptBlas ? GemmProvider.OpenBlas : GemmProvider.Torch;
                Assert.True(first.eq(Blas.Mm(a, b)).all().item<bool>(), "the first call's product is the kept library's");
            });
        }
        finally
        {
            CpuKernels.VerboseLog = log;
            Blas.ReloadFrom(null);
        }
        // Tests in other collections may log their own trials meanwhile: only these shapes count.
        var mine = lines.Where(l => l.Contains("[100, 300]·[300, 90]") || l.Contains("[110, 300]") || l.Contains("[300, 100]·[100, 300]")).ToList();
        Assert.Equal(2, mine.Count);
        Assert.Contains("GEMM [100, 300]·[300, 90]: OpenBLAS (", mine[0]);
        Assert.Matches(@"torch [0-9.]+ ms: (OpenBLAS|torch)$", mine[0]);
        Assert.Contains("GEMM [300, 100]·[100, 300]", mine[1]);
    }

    /// <summary>Auto's rule: OpenBLAS only on AMD CPUs, and only with kernels that use AVX2 or AVX-512.</summary>
    [Theory]
    [InlineData("AuthenticAMD", "Zen", true)]
    [InlineData("AuthenticAMD", "SKYLAKEX", true)]
    [InlineData("AuthenticAMD", "Cooperlake", true)]
    [InlineData("AuthenticAMD", "Haswell", true)]
    [InlineData("AuthenticAMD", "Prescott", false)]
    [InlineData("AuthenticAMD", null, false)]
    [InlineData("GenuineIntel", "SapphireRapids", false)]
    [InlineData("GenuineIntel", "Prescott", false)]
    [InlineData("Arm64", "NEOVERSEN1", false)]
    public void Auto_picks_openblas_on_amd_with_vector_kernels_only(string vendor, string? core, bool openBlas) =>
        Assert.Equal(openBlas, Blas.AutoPicksOpenBlas(vendor, core));

    /// <summary>Auto gives, bit for bit, the product of the library its rule names, call after call (no timing involved).</summary>
    [SkippableFact]
    public void Auto_runs_the_library_its_rule_names()
    {
        Skip.If(!Blas.Available, "OpenBLAS (libopenblas.so.0) is not installed");
        using var scope = NewDisposeScope();
        var a = randn(100, 300, generator: new Generator(3));
        var b = randn(300, 90, generator: new Generator(4));
        Tensor? expected = null;
        WithProvider(Blas.AutoChoice, () => expected = Blas.Mm(a, b));
        WithProvider(GemmProvider.Auto, () =>
        {
            long before = Blas.OpenBlasCalls;
            for (int i = 0; i < 3; i++) Assert.True(expected!.eq(Blas.Mm(a, b)).all().item<bool>(), $"call {i}");
            Assert.Equal(Blas.AutoChoice == GemmProvider.OpenBlas ? 3 : 0, Blas.OpenBlasCalls - before);
        });
        Assert.Contains($"({(Blas.AutoChoice == GemmProvider.OpenBlas ? "OpenBLAS" : "torch")} on {CpuKernels.Vendor})", Blas.Describe());
    }

    /// <summary>The vendor string comes from cpuid; on Linux it is the kernel's <c>vendor_id</c>.</summary>
    [SkippableFact]
    public void Vendor_is_the_kernels_vendor_id()
    {
        Skip.IfNot(OperatingSystem.IsLinux() && System.Runtime.Intrinsics.X86.X86Base.IsSupported, "x86 Linux only");
        var line = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("vendor_id", StringComparison.Ordinal));
        Assert.Equal(line[(line.IndexOf(':') + 1)..].Trim(), CpuKernels.Vendor);
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
