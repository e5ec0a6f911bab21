using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Training;

namespace SaeSharp.Tests;

/// <summary>
/// A temporary Tensor passed straight into a call outside any dispose scope (<c>x.narrow(0, a, n).copy_(y)</c>,
/// <c>t.detach().to(dtype)</c>) is unreachable once TorchSharp has read its handle: a collection started by another thread
/// finalizes it and <c>THSTensor_dispose</c> frees the at::Tensor (and its storage, when it held the last reference) while
/// libtorch still uses it (<c>bench tensor-lifetime</c>: a segfault within seconds, never with a <c>using</c> local or
/// inside a scope; BENCHMARKS.md). That would kill the test host, so it is not run here: such a temporary is never
/// disposed, only finalized, and the check is that the CLI's flows leave no tensor to the finalizer at all.
/// </summary>
[Collection(SerialTorchCollection.Name)]   // alone: another test's leaked tensors would be counted too
public class TensorLifetimeTests
{
    [Fact]
    public void The_CLI_flows_leave_no_tensor_to_the_finalizer()
    {
        var dir = Directory.CreateTempSubdirectory("sae-lifetime-").FullName;
        try
        {
            string P(params string[] p) => Path.Combine([dir, .. p]);
            var leaks = new List<string>();
            void Run(params string[] args)
            {
                long before = FinalizedTensors.Count();
                var (exit, output, err) = CliRunner.Run(args);
                Assert.True(exit == 0, $"sae {string.Join(' ', args)}: exit {exit}\n{err}\n{output}");
                long finalized = FinalizedTensors.Count() - before;
                if (finalized != 0) leaks.Add($"sae {string.Join(' ', args.TakeWhile(a => !a.StartsWith('-')))}: {finalized} tensors finalized");
            }
            Run("synth", "--out", P("data"), "--d-in", "32", "--features", "64", "--rows", "20000", "--eval-rows", "3000", "--seed", "3");
            Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "64",
                "--steps", "20", "--checkpoint-every", "10", "--eval-rows", "1000", "--out", P("run"));
            Run("eval", "--sae", P("run"), "--activations", P("data", "eval.safetensors"), "--json", P("eval.json"));
            Run("encode", "--sae", P("run"), "--activations", P("data", "eval.safetensors"), "--out", P("enc.safetensors"), "--batch-size", "700");
            Run("corpus", "--out", P("c.jsonl"), "--docs", "300", "--seed", "4");
            Run("train", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", P("c.jsonl"), "--tokens", "1024",
                "--context-size", "64", "--arch", "relu", "--dict-size", "64", "--batch-size", "256", "--steps", "2", "--eval-rows", "128", "--out", P("m"));
            Run("steer", "--model", "builtin", "--sae", P("m"), "--feature", "1", "--scale", "8", "--prompt", "the cat sat", "--max-new-tokens", "4", "--runs", "1");
            Run("ablate", "--model", "builtin", "--sae", P("m"), "--features", "2", "--dataset", P("c.jsonl"), "--tokens", "256", "--context-size", "32", "--mode", "mean");
            Run("attribute", "--model", "builtin", "--sae", P("m"), "--prompt", "the cat sat", "--metric", "loss");
            Run("model", "generate", "--model", "builtin", "--prompt", "the cat", "--max-new-tokens", "4");
            Run("inspect", "--sae", P("m"), "--model", "builtin", "--prompt", " cat sat on the mat");
            Assert.True(leaks.Count == 0, "tensors nobody disposed (a temporary outside a dispose scope, or a tensor kept and dropped):\n" + string.Join("\n", leaks));
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }
}

/// <summary>The source side of <see cref="TensorLifetimeTests"/>: <c>src/</c> compiled with Roslyn (as in
/// <see cref="ScalarLifetimeTests"/>).</summary>
public class TensorLifetimeSourceTests
{
    private static readonly Lazy<(string Root, CSharpCompilation[] Compilations)> Source = new(() =>
    {
        string root = LibraryLayeringTests.RepositoryRoot();
        var lib = ScalarLifetimeTests.Compile("SaeSharp", Path.Combine(root, "src", "SaeSharp"), []);
        var cli = ScalarLifetimeTests.Compile("sae", Path.Combine(root, "src", "SaeSharp.Cli"), [lib.ToMetadataReference()]);
        return (root, [lib, cli]);
    });

    /// <summary>The library's worker threads have no dispose scope of their caller's (scopes are per thread), so the bodies
    /// it runs there (<c>KernelThreads.Run</c>, <c>RowRanges.For</c>, <c>Parallel.For</c>/<c>ForEach</c>, <c>Task.Run</c>, a
    /// new <c>Thread</c>) use no TorchSharp member at all: they work on raw pointers of tensors the caller holds.</summary>
    [Fact]
    public void Worker_thread_bodies_touch_no_TorchSharp_member()
    {
        var (root, compilations) = Source.Value;
        var workers = new[] { "KernelThreads.Run", "RowRanges.For", "Parallel.For", "Parallel.ForEach", "Task.Run" };
        var found = new List<string>();
        foreach (var c in compilations)
            foreach (var tree in c.SyntaxTrees.Where(t => t.FilePath.Length > 0))
            {
                var model = c.GetSemanticModel(tree);
                foreach (var node in tree.GetRoot().DescendantNodes())
                {
                    var body = node switch
                    {
                        InvocationExpressionSyntax call when model.GetSymbolInfo(call).Symbol is IMethodSymbol m
                            && workers.Contains($"{m.ContainingType.Name}.{m.Name}") => call.ArgumentList.Arguments.Select(a => a.Expression).OfType<AnonymousFunctionExpressionSyntax>(),
                        ObjectCreationExpressionSyntax { ArgumentList: not null } create when model.GetTypeInfo(create).Type?.ToDisplayString() == "System.Threading.Thread"
                            => create.ArgumentList.Arguments.Select(a => a.Expression).OfType<AnonymousFunctionExpressionSyntax>(),
                        _ => [],
                    };
                    foreach (var lambda in body)
                        foreach (var use in lambda.DescendantNodes().OfType<SimpleNameSyntax>())
                            if (model.GetSymbolInfo(use).Symbol is IMethodSymbol or IPropertySymbol or IFieldSymbol { IsConst: false } && model.GetSymbolInfo(use).Symbol is { } sym
                                && sym.ContainingNamespace?.ToDisplayString().StartsWith("TorchSharp", StringComparison.Ordinal) == true)
                                found.Add($"{Path.GetRelativePath(root, tree.FilePath)}:{tree.GetLineSpan(use.Span).StartLinePosition.Line + 1}: {use}");
                }
            }
        Assert.True(found.Count == 0, "TorchSharp used on a worker thread (no dispose scope there):\n" + string.Join("\n", found.Distinct()));
    }

    /// <summary>TorchSharp 0.107 methods named as in-place that return a new Tensor (not <c>this</c>), left to the
    /// finalizer when the result is dropped: <c>zero_</c> (<c>zeros(shape)</c> into itself), <c>tril_</c>, <c>triu_</c>,
    /// <c>gelu_</c>. The library writes <c>fill_(TorchScalars.Of(0))</c>.</summary>
    [Fact]
    public void The_library_and_the_CLI_call_no_in_place_method_that_returns_a_new_tensor()
    {
        var (root, compilations) = Source.Value;
        var found = compilations.SelectMany(c => c.SyntaxTrees.Where(t => t.FilePath.Length > 0).SelectMany(tree =>
        {
            var model = c.GetSemanticModel(tree);
            return tree.GetRoot().DescendantNodes().OfType<InvocationExpressionSyntax>()
                .Where(call => model.GetSymbolInfo(call).Symbol is IMethodSymbol { Name: "zero_" or "tril_" or "triu_" or "gelu_" } m
                               && m.ContainingNamespace?.ToDisplayString().StartsWith("TorchSharp", StringComparison.Ordinal) == true)
                .Select(call => $"{Path.GetRelativePath(root, tree.FilePath)}:{tree.GetLineSpan(call.Span).StartLinePosition.Line + 1}: {call}");
        })).ToList();
        Assert.True(found.Count == 0, "in-place calls that return a new tensor (write fill_(TorchScalars.Of(0)) for zero_):\n" + string.Join("\n", found));
    }
}
