using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary>
/// A TorchSharp <see cref="Scalar"/> made on the fly (an implicit conversion, or a Tensor operator with a number) can be
/// finalized by a garbage collection on another thread while libtorch still reads it (<see cref="TorchScalars"/>).
/// The source of the library and the CLI is compiled here with Roslyn and every such place is listed; and the hazard
/// itself is shown under forced collections, with the kept Scalar surviving the same stress.
/// </summary>
public class ScalarLifetimeTests
{
    static readonly string[] ImplicitUsings =
        ["System", "System.Collections.Generic", "System.IO", "System.Linq", "System.Net.Http", "System.Threading", "System.Threading.Tasks"];

    internal static CSharpCompilation Compile(string name, string folder, IEnumerable<MetadataReference> extra)
    {
        var options = new CSharpParseOptions(LanguageVersion.Preview);
        var trees = Directory.EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Split(Path.DirectorySeparatorChar).Any(p => p is "bin" or "obj"))
            .Select(f => CSharpSyntaxTree.ParseText(File.ReadAllText(f), options, f))
            .Append(CSharpSyntaxTree.ParseText(string.Concat(ImplicitUsings.Select(u => $"global using {u};\n")), options));
        var platform = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator);
        var packages = Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll").Where(f => !Path.GetFileName(f).StartsWith("SaeSharp", StringComparison.Ordinal));
        var refs = platform.Concat(packages).GroupBy(Path.GetFileName).Select(g => g.First())
            .Where(f => { try { System.Reflection.AssemblyName.GetAssemblyName(f); return true; } catch (BadImageFormatException) { return false; } })
            .Select(f => (MetadataReference)MetadataReference.CreateFromFile(f)).Concat(extra);
        return CSharpCompilation.Create(name, trees, refs,
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, allowUnsafe: true, nullableContextOptions: NullableContextOptions.Enable));
    }

    /// <summary>"file:line: code" for each Scalar made on the fly: an implicit conversion to Scalar, or a Tensor operator
    /// taking a number (TorchSharp converts it inside); and each number converted implicitly to a 0-dim Tensor (the same
    /// hazard wherever no dispose scope holds it).</summary>
    static IEnumerable<string> TemporaryScalars(CSharpCompilation compilation, string root)
    {
        var unresolved = compilation.GetDiagnostics().Where(d => d.Id is "CS0246" or "CS0103" or "CS0234").Take(3).ToList();
        Assert.True(unresolved.Count == 0, "the source did not compile here: " + string.Join("; ", unresolved));
        foreach (var tree in compilation.SyntaxTrees.Where(t => t.FilePath.Length > 0))
        {
            var model = compilation.GetSemanticModel(tree);
            string Where(SyntaxNode n) => $"{Path.GetRelativePath(root, tree.FilePath)}:{tree.GetLineSpan(n.Span).StartLinePosition.Line + 1}: {n}";
            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                if (node is ExpressionSyntax e && model.GetConversion(e) is { IsUserDefined: true, MethodSymbol.ContainingType.Name: "Scalar" or "Tensor" })
                    yield return Where(e);
                else if (node is BinaryExpressionSyntax or PrefixUnaryExpressionSyntax or AssignmentExpressionSyntax
                         && model.GetSymbolInfo(node).Symbol is IMethodSymbol { MethodKind: MethodKind.UserDefinedOperator } op
                         && op.ContainingType.Name == "Tensor" && (op.Parameters.Any(p => p.Type.IsValueType) || op.Name == "op_Addition"))
                    yield return Where(node);
                else if (node is InvocationExpressionSyntax call && model.GetSymbolInfo(call).Symbol is IMethodSymbol m
                         && m.ContainingNamespace?.ToDisplayString().StartsWith("TorchSharp", StringComparison.Ordinal) == true
                         && MakesItsOwnScalar(m))
                    yield return Where(call);
            }
        }
    }

    /// <summary>TorchSharp 0.107 methods that make a Scalar of their own and drop it before libtorch reads it:
    /// <c>add</c>/<c>add_</c> without alpha (alpha 1), <c>addcdiv</c>/<c>addcdiv_</c> without value, <c>square</c>, and the Tensor→number
    /// conversions (<c>ToSingle</c>, <c>ToDouble</c>, … go through a temporary Scalar). <c>+</c> on Tensors is <c>add</c>.</summary>
    static bool MakesItsOwnScalar(IMethodSymbol m) => m.Name switch
    {
        "add" or "add_" => m.Parameters.Length == (m.IsStatic ? 2 : 1),
        "addcdiv" or "addcdiv_" => m.Parameters.Length == 2,
        "square" => true,                                                   // pow(2)
        "ToSingle" or "ToDouble" or "ToInt64" or "ToInt32" or "ToInt16" or "ToByte" or "ToSByte" or "ToBoolean" or "ToHalf" or "ToBFloat16"
            => m.ContainingType.Name == "TensorExtensionMethods",
        _ => false,
    };

    [Fact]
    public void The_library_and_the_CLI_pass_no_Scalar_made_on_the_fly()
    {
        string root = LibraryLayeringTests.RepositoryRoot();
        var lib = Compile("SaeSharp", Path.Combine(root, "src", "SaeSharp"), []);
        var cli = Compile("sae", Path.Combine(root, "src", "SaeSharp.Cli"), [lib.ToMetadataReference()]);
        var found = TemporaryScalars(lib, root).Concat(TemporaryScalars(cli, root)).ToList();
        Assert.True(found.Count == 0, $"{found.Count} Scalars made on the fly (use TorchScalars.Of for a constant, " +
            "`using var s = value.ToScalar();` for a runtime value):\n" + string.Join("\n", found));
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static Tensor CountsWith(Tensor index, Tensor ones, Scalar alpha) =>
        zeros(64, dtype: ScalarType.Int64).index_add_(0, index, ones, alpha);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static Tensor CountsWithTemporary(Tensor index, Tensor ones) =>
        zeros(64, dtype: ScalarType.Int64).index_add_(0, index, ones, 1);

    /// <summary>index_add_ with alpha 1 under collections forced by another thread (which also makes and drops Scalars of
    /// 1e300, so a freed Scalar's memory is soon reused): with <see cref="TorchScalars.Of(long)"/> every count is right;
    /// the Scalar made on the fly is counted too, and reported, since whether a finalizer wins the race in a given time
    /// depends on the machine.</summary>
    [Fact]
    public void A_kept_Scalar_survives_collections_on_another_thread()
    {
        using var index = randint(0, 64, 16384, dtype: ScalarType.Int64);
        using var ones = torch.ones(16384, dtype: ScalarType.Int64);
        var stop = false;
        var collector = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                for (int i = 0; i < 100; i++) (1e300).ToScalar();
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
        }) { IsBackground = true };
        collector.Start();
        int Failures(Func<Tensor> count, TimeSpan span)
        {
            int failures = 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (clock.Elapsed < span)
            {
                using var scope = NewDisposeScope();
                try { if (count().sum().item<long>() != 16384) failures++; }
                catch (ExternalException) { failures++; }
            }
            return failures;
        }
        try
        {
            int kept = Failures(() => CountsWith(index, ones, TorchScalars.Of(1)), TimeSpan.FromSeconds(2));
            int temporary = Failures(() => CountsWithTemporary(index, ones), TimeSpan.FromSeconds(2));
            Assert.Equal(0, kept);
            Console.WriteLine($"index_add_ with a Scalar made on the fly: {temporary} failures in 2 s of forced collections");
        }
        finally { Volatile.Write(ref stop, true); collector.Join(); }
    }
}
