using System.Collections.Concurrent;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace SaeSharp.Tests;

/// <summary>
/// The library and the CLI (<c>src/</c>) compiled with Roslyn once for the tests that scan the source
/// (<see cref="ScalarLifetimeTests"/>, <see cref="TensorLifetimeSourceTests"/>), with one semantic model per syntax tree
/// shared by them all: a method body bound by one scan is not bound again by the next (binding is most of a scan's time).
/// Made on first use; dropped when the collection's tests are done, so the bound trees do not slow the later tests' full
/// collections (<see cref="FinalizedTensors"/>).
/// </summary>
public sealed class CompiledSource : IDisposable
{
    private Lazy<(string Root, CSharpCompilation[] Compilations)>? _source = new(() =>
    {
        string root = LibraryLayeringTests.RepositoryRoot();
        var lib = ScalarLifetimeTests.Compile("SaeSharp", Path.Combine(root, "src", "SaeSharp"), []);
        var cli = ScalarLifetimeTests.Compile("sae", Path.Combine(root, "src", "SaeSharp.Cli"), [lib.ToMetadataReference()]);
        return (root, [lib, cli]);
    });

    private readonly ConcurrentDictionary<SyntaxTree, Lazy<SemanticModel>> _models = new();

    /// <summary>The repository root and the compilations of src/SaeSharp and src/SaeSharp.Cli (the CLI referencing the library's).</summary>
    public (string Root, CSharpCompilation[] Compilations) Src => (_source ?? throw new ObjectDisposedException(nameof(CompiledSource))).Value;

    /// <summary>The shared semantic model of one of <paramref name="compilation"/>'s trees (made on first use).</summary>
    public SemanticModel Model(CSharpCompilation compilation, SyntaxTree tree) =>
        _models.GetOrAdd(tree, t => new Lazy<SemanticModel>(() => compilation.GetSemanticModel(t))).Value;

    public void Dispose()
    {
        _source = null;
        _models.Clear();
    }
}

/// <summary>The tests that scan src/ with Roslyn: they share one <see cref="CompiledSource"/>.</summary>
[CollectionDefinition(Name)]
public sealed class CompiledSourceCollection : ICollectionFixture<CompiledSource>
{
    public const string Name = "compiled source";
}
