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
[Collection(CompiledSourceCollection.Name)]
public class ScalarLifetimeTests(CompiledSource source)
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
    IEnumerable<string> TemporaryScalars(CSharpCompilation compilation, string root)
    {
        var unresolved = compilation.GetDiagnostics().Where(d => d.Id is "CS0246" or "CS0103" or "CS0234").Take(3).ToList();
        Assert.True(unresolved.Count == 0, "the source did not compile here: " + string.Join("; ", unresolved));
        foreach (var tree in compilation.SyntaxTrees.Where(t => t.FilePath.Length > 0))
        {
            var model = source.Model(compilation, tree);
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
                else if (node is InvocationExpressionSyntax or ObjectCreationExpressionSyntax or BinaryExpressionSyntax or PrefixUnaryExpressionSyntax
                             or AssignmentExpressionSyntax or MemberAccessExpressionSyntax
                         && model.GetSymbolInfo(node).Symbol is { } called && ScalarMakers.Value.Contains(NameOf(called))
                    && !IsNumberOperator(called))
                    yield return Where(node);
            }
        }
    }

    /// <summary>tests/data/torchsharp_scalar_makers.txt: TorchSharp's members that make and drop a Scalar inside them.</summary>
    static readonly Lazy<HashSet<string>> ScalarMakers = new(() =>
        File.ReadLines(Path.Combine(AppContext.BaseDirectory, "data", "torchsharp_scalar_makers.txt"))
            .Where(l => l.Length > 0 && !l.StartsWith('#')).ToHashSet(StringComparer.Ordinal));

    /// <summary>The list's name of a member: a method's (its unreduced, unconstructed definition's) display string, or
    /// "prop " and a property's.</summary>
    static string NameOf(ISymbol s) => s switch
    {
        IMethodSymbol m => (m.ReducedFrom ?? m.OriginalDefinition).ToDisplayString(),
        IPropertySymbol p => "prop " + p.OriginalDefinition.ToDisplayString(),
        _ => s.ToDisplayString(),
    };

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
        var (root, compilations) = source.Src;
        var found = compilations.SelectMany(c => TemporaryScalars(c, root)).ToList();
        Assert.True(found.Count == 0, $"{found.Count} Scalars made on the fly (use TorchScalars.Of for a constant, " +
            "`using var s = value.ToScalar();` for a runtime value):\n" + string.Join("\n", found));
    }

    /// <summary>"file:line: member: code" for each call of a member of tests/data/torchsharp_scalar_makers.txt but the Tensor
    /// operators without a Scalar operand (<c>a + b</c>, <c>t * 2.0</c>: like the implicit conversions, everywhere in the
    /// tests, and out of this check's scope).</summary>
    static IEnumerable<string> ListedMakerCalls(CSharpCompilation compilation, string root)
    {
        // Only the nodes that can be such a call are bound (binding the whole test project takes minutes): a call or member
        // access by one of the list's simple names, a `new` of one, and + or − (a Scalar operand).
        var names = ScalarMakers.Value.Where(n => !n.Contains("operator", StringComparison.Ordinal))
            .Select(n => n.Replace("prop ", "", StringComparison.Ordinal).Split('(')[0].Split('.')[^1]).ToHashSet(StringComparer.Ordinal);
        foreach (var tree in compilation.SyntaxTrees.Where(t => t.FilePath.Length > 0))
        {
            var model = compilation.GetSemanticModel(tree);
            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                bool candidate = node switch
                {
                    InvocationExpressionSyntax { Expression: MemberAccessExpressionSyntax m } => names.Contains(m.Name.Identifier.Text),
                    InvocationExpressionSyntax { Expression: SimpleNameSyntax n } => names.Contains(n.Identifier.Text),
                    ObjectCreationExpressionSyntax { Type: var t } => names.Contains(t.ToString().Split('.')[^1].Split('<')[0]),
                    MemberAccessExpressionSyntax { Parent: not InvocationExpressionSyntax } m => names.Contains(m.Name.Identifier.Text),
                    BinaryExpressionSyntax b => b.IsKind(SyntaxKind.AddExpression) || b.IsKind(SyntaxKind.SubtractExpression),
                    _ => false,
                };
                if (!candidate) continue;
                var info = model.GetSymbolInfo(node);
                string where = $"{Path.GetRelativePath(root, tree.FilePath)}:{tree.GetLineSpan(node.Span).StartLinePosition.Line + 1}";
                Assert.True(info.Symbol is not null || info.CandidateReason == CandidateReason.None || node is BinaryExpressionSyntax,
                    $"{where}: {node} did not bind here ({info.CandidateReason}); the test project's compilation here misses something");
                if (info.Symbol is { } called && ScalarMakers.Value.Contains(NameOf(called)) && !IsNumberOperator(called))
                    yield return $"{where}: {NameOf(called)}: {node}";
            }
        }
    }

    static bool IsNumberOperator(ISymbol s) =>
        s is IMethodSymbol { MethodKind: MethodKind.UserDefinedOperator } m && !m.Parameters.Any(p => p.Type.Name == "Scalar");

    /// <summary>The test files that call listed members on purpose, and why.</summary>
    static readonly Dictionary<string, string> CallersOnPurpose = new(StringComparer.Ordinal)
    {
        ["TorchScalarsTests.cs"] = "compares TorchScalars' replacements with the TorchSharp members they replace",
        [Path.Combine("Kernels", "AdamOptimizerTests.cs")] = "compares AdamOptimizer with TorchSharp's Adam and AdamW",
    };

    /// <summary>
    /// The tests themselves call none of TorchSharp's members that make and drop a Scalar (the list the library is held
    /// to): a collection on another thread of the full suite could free that Scalar while libtorch reads it, and the test
    /// would fail at random. TorchScalars has the replacements (<c>Arange</c>, <c>VectorNorm</c>, <c>Softplus</c>,
    /// <c>OneMinus</c>, <c>add(x, TorchScalars.One)</c>); an optimiser is SaeSharp's <c>AdamOptimizer</c>. The test project
    /// is compiled here against the assemblies next to it.
    /// </summary>
    [Fact]
    public void The_tests_call_no_listed_Scalar_maker()
    {
        string root = LibraryLayeringTests.RepositoryRoot();
        string tests = Path.Combine(root, "tests", "SaeSharp.Tests");
        var options = new CSharpParseOptions(LanguageVersion.Preview);
        var own = new[] { "SaeSharp.dll", "sae.dll", "SaeSharp.TestSupport.dll" }.Select(f => (MetadataReference)MetadataReference.CreateFromFile(Path.Combine(AppContext.BaseDirectory, f)));
        var compilation = Compile("SaeSharp.Tests", tests, own).AddSyntaxTrees(
            CSharpSyntaxTree.ParseText(File.ReadAllText(Path.Combine(root, "tests", "SaeSharp.ArmCheck", "KernelChecks.cs")), options, ""),
            CSharpSyntaxTree.ParseText("global using Xunit;\n", options));
        var found = ListedMakerCalls(compilation, tests).Where(f => !CallersOnPurpose.ContainsKey(f[..f.IndexOf(':')])).ToList();
        Assert.True(found.Count == 0, $"{found.Count} calls of TorchSharp members that make and drop a Scalar (use TorchScalars' " +
            "replacement, or allow the file in CallersOnPurpose with the reason):\n" + string.Join("\n", found));
    }

    /// <summary>Every name of tests/data/torchsharp_scalar_makers.txt is a member of the TorchSharp assembly referenced (a
    /// TorchSharp upgrade that renames or drops one shows here: redo the scan); with <c>TORCHSHARP_SRC</c> set to TorchSharp's
    /// <c>src/TorchSharp</c> folder, the scan is redone and must give the list: every public member with an implicit conversion
    /// to Scalar or a <c>.ToScalar().Handle</c> in its body, or calling a member that has, transitively
    /// (<c>TORCHSHARP_SCAN_WRITE=PATH</c> also writes the scan's list there).</summary>
    [Fact]
    public void The_list_of_TorchSharps_Scalar_makers_names_members_of_the_TorchSharp_referenced()
    {
        var platform = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(f => Path.GetFileName(f).StartsWith("System.", StringComparison.Ordinal) || Path.GetFileName(f) is "mscorlib.dll" or "netstandard.dll");
        var torchSharp = CSharpCompilation.Create("probe", references: [MetadataReference.CreateFromFile(typeof(torch).Assembly.Location),
            .. platform.Select(f => MetadataReference.CreateFromFile(f))]);
        var assembly = torchSharp.GetTypeByMetadataName("TorchSharp.torch")!.ContainingAssembly;
        var members = new HashSet<string>(StringComparer.Ordinal);
        void Walk(INamespaceOrTypeSymbol n)
        {
            foreach (var m in n.GetMembers())
            {
                if (m is INamespaceOrTypeSymbol inner) Walk(inner);
                if (m is IMethodSymbol or IPropertySymbol) members.Add(NameOf(m));
            }
        }
        Walk(assembly.GlobalNamespace);
        if (Environment.GetEnvironmentVariable("TORCHSHARP_SRC") is { Length: > 0 } src) Rescan(src);
        var missing = ScalarMakers.Value.Where(n => !members.Contains(n)).ToList();
        Assert.True(ScalarMakers.Value.Count > 100 && missing.Count == 0, $"{missing.Count} names not in {typeof(torch).Assembly.GetName()}:\n" + string.Join("\n", missing));
    }

    static void Rescan(string src)
    {
        var scanned = ScanTorchSharp(src);
        if (Environment.GetEnvironmentVariable("TORCHSHARP_SCAN_WRITE") is { Length: > 0 } write)
        {
            var header = File.ReadLines(Path.Combine(AppContext.BaseDirectory, "data", "torchsharp_scalar_makers.txt")).TakeWhile(l => l.StartsWith('#'));
            File.WriteAllLines(write, header.Concat(scanned.Order(StringComparer.Ordinal)));
        }
        Assert.Equal(ScalarMakers.Value.Order(StringComparer.Ordinal), scanned.Order(StringComparer.Ordinal));
    }

    /// <summary>The scan that wrote tests/data/torchsharp_scalar_makers.txt, over TorchSharp's source folder.</summary>
    static HashSet<string> ScanTorchSharp(string folder)
    {
        var comp = Compile("TorchSharpScan", folder, []);
        var bad = new HashSet<string>(StringComparer.Ordinal);
        var calls = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        var visible = new HashSet<string>(StringComparer.Ordinal);
        static bool Visible(ISymbol s) => s.DeclaredAccessibility is Accessibility.Public or Accessibility.Protected or Accessibility.ProtectedOrInternal
                                          && (s.ContainingType is null || Visible(s.ContainingType));
        foreach (var tree in comp.SyntaxTrees.Where(t => t.FilePath.Length > 0))
        {
            var model = comp.GetSemanticModel(tree);
            foreach (var decl in tree.GetRoot().DescendantNodes().Where(n => n is BaseMethodDeclarationSyntax or PropertyDeclarationSyntax))
            {
                if (model.GetDeclaredSymbol(decl) is not { } me || me.ContainingNamespace?.ToDisplayString().StartsWith("TorchSharp", StringComparison.Ordinal) != true) continue;
                string name = NameOf(me);
                if (Visible(me)) visible.Add(name);
                if (!calls.TryGetValue(name, out var set)) calls[name] = set = new(StringComparer.Ordinal);
                foreach (var n in decl.DescendantNodes())
                {
                    if (n is ExpressionSyntax e && model.GetConversion(e) is { IsUserDefined: true, MethodSymbol.ContainingType.Name: "Scalar" }
                        || n is InvocationExpressionSyntax { Expression: MemberAccessExpressionSyntax { Name.Identifier.Text: "ToScalar" }, Parent: MemberAccessExpressionSyntax { Name.Identifier.Text: "Handle" } })
                        bad.Add(name);
                    if (n is InvocationExpressionSyntax or ObjectCreationExpressionSyntax or BinaryExpressionSyntax && model.GetSymbolInfo(n).Symbol is IMethodSymbol cm)
                        set.Add(NameOf(cm));
                }
            }
        }
        for (bool grew = true; grew;)
        {
            grew = false;
            foreach (var (m, cs) in calls)
                if (!bad.Contains(m) && cs.Any(bad.Contains)) grew = bad.Add(m) | true;
        }
        bad.IntersectWith(visible);
        bad.RemoveWhere(n => n.StartsWith("TorchSharp.Scalar.", StringComparison.Ordinal) || n.StartsWith("TorchSharp.ScalarExtensionMethods.", StringComparison.Ordinal)
                             || n.Contains("tensorboard", StringComparison.Ordinal));
        return bad;
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
