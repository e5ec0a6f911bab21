using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.LanguageModels;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;
using TorchSharp;
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
    public void The_CLI_flows_leave_no_tensor_to_the_finalizer() => WithLeakCheck(r =>
    {
        r.Run("synth", "--out", r.P("data"), "--d-in", "32", "--features", "64", "--rows", "20000", "--eval-rows", "3000", "--seed", "3");
        r.Run("train", "--activations", r.P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "64",
            "--steps", "20", "--checkpoint-every", "10", "--eval-rows", "1000", "--out", r.P("run"));
        r.Run("eval", "--sae", r.P("run"), "--activations", r.P("data", "eval.safetensors"), "--json", r.P("eval.json"));
        r.Run("encode", "--sae", r.P("run"), "--activations", r.P("data", "eval.safetensors"), "--out", r.P("enc.safetensors"), "--batch-size", "700");
        r.Run("corpus", "--out", r.P("c.jsonl"), "--docs", "300", "--seed", "4");
        r.Run("train", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", r.P("c.jsonl"), "--tokens", "1024",
            "--context-size", "64", "--arch", "relu", "--dict-size", "64", "--batch-size", "256", "--steps", "2", "--eval-rows", "128", "--out", r.P("m"));
        r.Run("steer", "--model", "builtin", "--sae", r.P("m"), "--feature", "1", "--scale", "8", "--prompt", "the cat sat", "--max-new-tokens", "4", "--runs", "1");
        r.Run("ablate", "--model", "builtin", "--sae", r.P("m"), "--features", "2", "--dataset", r.P("c.jsonl"), "--tokens", "256", "--context-size", "32", "--mode", "mean");
        r.Run("attribute", "--model", "builtin", "--sae", r.P("m"), "--prompt", "the cat sat", "--metric", "loss");
        r.Run("model", "generate", "--model", "builtin", "--prompt", "the cat", "--max-new-tokens", "4");
        r.Run("inspect", "--sae", r.P("m"), "--model", "builtin", "--prompt", " cat sat on the mat");
    });

    /// <summary>The other commands that run tensors: the demo (shortened), analysis, label scoring, the LM trainer, conversion,
    /// the activation cache, training and evaluation on a model's activations, and an SAE loaded from a (loopback) hub.</summary>
    [Fact]
    public void The_other_CLI_commands_leave_no_tensor_to_the_finalizer() => WithLeakCheck(r =>
    {
        r.Run("demo", "--quick", "--tokens", "20480", "--steps", "4", "--d-sae", "64", "--out", r.P("demo"));
        r.Run("demo", "--synthetic", "--steps", "5", "--out", r.P("demo-synth"));
        r.Run("corpus", "--out", r.P("c.jsonl"), "--docs", "300", "--seed", "4");
        r.Run("eval", "--sae", r.P("demo", "sae"), "--model", "builtin", "--dataset", r.P("c.jsonl"), "--tokens", "256", "--context-size", "32", "--json", r.P("e.json"));
        r.Run("features", "--sae", r.P("demo", "sae"), "--model", "builtin", "--dataset", r.P("c.jsonl"), "--tokens", "200", "--out", r.P("feat"),
            "--features", "0-4", "--top", "3", "--context", "4", "--batch-size", "2", "--png");
        r.Run("dashboard", "--features", r.P("feat"), "--out", r.P("site"));
        r.Run("inspect", "--sae", r.P("demo", "sae"), "--model", "builtin", "--prompt", " cat sat on the mat", "--top", "3", "--neurons", "--json", r.P("view.json"));
        r.Run("score-labels", "--sae", r.P("demo", "sae"), "--model", "builtin", "--dataset", r.P("c.jsonl"), "--tokens", "512", "--json", r.P("s.json"));
        r.Run("lm", "train", "--corpus", r.P("c.jsonl"), "--out", r.P("lm"), "--steps", "2", "--batch-size", "2", "--context-size", "32",
            "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "32", "--val-docs", "10", "--warm-up-steps", "1", "--checkpoint-every", "1");
        r.Run("lm", "eval", "--model", r.P("lm"), "--corpus", r.P("c.jsonl"), "--docs", "10");
        r.Run("convert", r.P("demo", "sae"), r.P("conv"));
        r.Run("convert", TestPaths.Data("dictionary_learning", "BatchTopKSAE"), r.P("conv-bt"));
        r.Run("convert", TestPaths.Data("dictionary_learning", "GatedAutoEncoder"), r.P("conv-gated"));
        r.Run("cache", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", r.P("c.jsonl"), "--tokens", "512",
            "--context-size", "32", "--contexts-per-shard", "8", "--out", r.P("cache"));
        r.Run("train", "--activations", r.P("cache"), "--arch", "relu-april,batchtopk,gated,jumprelu,matryoshka_batchtopk", "--k", "4",
            "--dict-size", "32", "--steps", "4", "--batch-size", "64", "--eval-rows", "64", "--out", r.P("mc"));
        foreach (var arch in new[] { "relu-april", "batchtopk", "gated", "jumprelu", "matryoshka_batchtopk" })
            r.Run("encode", "--sae", r.P("mc", arch), "--activations", r.P("cache"), "--out", r.P($"enc-{arch}.safetensors"));

        // An SAE from a release on the hub (a loopback server), as HubCommandTests serves it.
        using var server = new FakeHubServer();
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 8, DSae = 16, Metadata = new SaeMetadata { HookName = "blocks.4.hook_mlp_out" } };
        using (var sae = SaeFactory.Create(cfg)) SaeLensFormat.Save(sae, r.P("hubsrc"));
        server.Repos["ctigges/pythia-70m-deduped__mlp-sm_processed"] = new()
        {
            ["4-mlp-sm/cfg.json"] = new(File.ReadAllBytes(r.P("hubsrc", "cfg.json"))),
            ["4-mlp-sm/sae_weights.safetensors"] = new(File.ReadAllBytes(r.P("hubsrc", "sae_weights.safetensors")), Lfs: true),
        };
        var hub = new Dictionary<string, string> { ["HF_ENDPOINT"] = server.Endpoint, ["HF_HUB_CACHE"] = r.P("hubcache") };
        r.Run("synth", "--out", r.P("d8"), "--d-in", "8", "--features", "16", "--rows", "2000", "--eval-rows", "500", "--seed", "5");
        r.With(hub, "info", "pythia-70m-deduped-mlp-sm/blocks.4.hook_mlp_out");
        r.With(hub, "eval", "--sae", "pythia-70m-deduped-mlp-sm/blocks.4.hook_mlp_out", "--activations", r.P("d8", "eval.safetensors"));
        r.With(hub, "encode", "--sae", "pythia-70m-deduped-mlp-sm/blocks.4.hook_mlp_out", "--activations", r.P("d8", "eval.safetensors"), "--out", r.P("enc8.safetensors"));
        // The built-in model's files served as a hub model, loaded by id.
        server.Repos["saesharp/tiny"] = Directory.GetFiles(BuiltinModel.Folder).ToDictionary(f => Path.GetFileName(f), f => new FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: f.EndsWith(".safetensors", StringComparison.Ordinal)));
        r.With(hub, "model", "generate", "--model", "saesharp/tiny", "--prompt", "the cat", "--max-new-tokens", "3");
        r.With(hub, "model", "info", "--model", "saesharp/tiny");

        using (var ids = torch.tensor(new long[] { 0, 5, 9, 17, 3, 8, 11, 2 }, [1, 8]))
            SafeTensors.Save(r.P("ids.safetensors"), [new("tokens", ids)]);
        r.Run("model", "run", "--model", "builtin", "--input", r.P("ids.safetensors"), "--out", r.P("run.safetensors"), "--hooks", "all",
            "--sae", r.P("demo", "sae"), "--steer", "1:4", "--ablate", "2,3");
        r.Run("info", r.P("demo", "sae"));
    });

    /// <summary>The commands that run no model or SAE (release listing, the corpus, tokenizing, synthetic data), each on its own.</summary>
    [Fact]
    public void The_data_and_listing_CLI_commands_leave_no_tensor_to_the_finalizer() => WithLeakCheck(r =>
    {
        r.Run("releases");
        r.Run("releases", "--model", "gpt2", "--search", "res");
        r.Run("releases", "gpt2-small-res-jb");
        r.Run("corpus", "--out", r.P("c.jsonl"), "--docs", "20", "--seed", "1");
        r.Run("model", "tokenize", "--model", "builtin", "--text", "the cat sat");
        r.Run("model", "tokenize", "--model", "builtin", "--text", "[5, 9]", "--decode");
        r.Run("synth", "--out", r.P("s"), "--d-in", "8", "--features", "16", "--rows", "500", "--eval-rows", "100", "--noise", "0.01");
    });

    /// <summary>Runs CLI commands (through <see cref="CliRunner"/>) and counts, per command, the tensors the finalizer
    /// freed meanwhile; fails listing each command that left any.</summary>
    private static void WithLeakCheck(Action<Runner> flows)
    {
        var dir = Directory.CreateTempSubdirectory("sae-lifetime-").FullName;
        try
        {
            var runner = new Runner(dir);
            flows(runner);
            Assert.True(runner.Leaks.Count == 0, "tensors nobody disposed (a temporary outside a dispose scope, or a tensor kept and dropped):\n" + string.Join("\n", runner.Leaks));
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private sealed class Runner(string dir)
    {
        public readonly List<string> Leaks = [];

        public string P(params string[] parts) => Path.Combine([dir, .. parts]);

        public void Run(params string[] args) => With([], args);

        public void With(Dictionary<string, string> environment, params string[] args)
        {
            long before = FinalizedTensors.Count();
            var (exit, output, err) = CliRunner.RunWithEnvironment(environment, args);
            Assert.True(exit == 0, $"sae {string.Join(' ', args)}: exit {exit}\n{err}\n{output}");
            long finalized = FinalizedTensors.Count() - before;
            if (finalized != 0) Leaks.Add($"sae {string.Join(' ', args.TakeWhile(a => !a.StartsWith('-')))}: {finalized} tensors finalized");
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

    /// <summary>A kernel reads a tensor's storage through a raw pointer (<c>TensorPointers</c>) for a long time, and the JIT
    /// ends a parameter's or local's life at its last read: a tensor passed in as a temporary (<c>Kernel(x.contiguous())</c>,
    /// no scope on the thread) could be finalized, and its storage freed, while the kernel runs. So each tensor whose pointer
    /// a method takes is read again after the work: a <c>using</c> local, a local the method returns, or named in a
    /// <c>GC.KeepAlive</c> after the pointer is taken. Only <c>TensorPointers</c> makes a pointer of a tensor's <c>bytes</c>.</summary>
    [Fact]
    public void A_tensor_whose_raw_pointer_a_method_takes_stays_reachable_until_the_method_is_done()
    {
        var (root, compilations) = Source.Value;
        var found = new List<string>();
        foreach (var c in compilations)
            foreach (var tree in c.SyntaxTrees.Where(t => t.FilePath.Length > 0))
            {
                var model = c.GetSemanticModel(tree);
                // A pointer into a tensor's bytes is taken only by TensorPointers, which the rest of this test follows.
                if (Path.GetFileName(tree.FilePath) != "TensorPointers.cs")
                    foreach (var bytes in tree.GetRoot().DescendantNodes().OfType<MemberAccessExpressionSyntax>())
                        if (bytes.Name.Identifier.Text == "bytes" && model.GetSymbolInfo(bytes).Symbol is IPropertySymbol { ContainingType.Name: "Tensor" }
                            && bytes.Ancestors().Any(a => a is FixedStatementSyntax
                                || a is InvocationExpressionSyntax i && model.GetSymbolInfo(i).Symbol is IMethodSymbol { Name: "AsPointer" }))
                            found.Add($"{Path.GetRelativePath(root, tree.FilePath)}:{tree.GetLineSpan(bytes.Span).StartLinePosition.Line + 1}: pointer into {bytes} outside TensorPointers");
                foreach (var call in tree.GetRoot().DescendantNodes().OfType<InvocationExpressionSyntax>())
                {
                    if (model.GetSymbolInfo(call).Symbol is not IMethodSymbol { ContainingType.Name: "TensorPointers" } m
                        || call.ArgumentList.Arguments.Count != 1 || !m.Name.EndsWith("Ptr", StringComparison.Ordinal)) continue;
                    var arg = call.ArgumentList.Arguments[0].Expression;
                    var body = call.Ancestors().First(a => a is BaseMethodDeclarationSyntax or LocalFunctionStatementSyntax or AnonymousFunctionExpressionSyntax
                                                                or AccessorDeclarationSyntax or PropertyDeclarationSyntax);
                    var symbol = model.GetSymbolInfo(arg).Symbol;
                    bool Same(ExpressionSyntax e) => arg is IdentifierNameSyntax ? SymbolEqualityComparer.Default.Equals(model.GetSymbolInfo(e).Symbol, symbol)
                                                                                 : e.IsEquivalentTo(arg, topLevel: false);
                    bool usingLocal = symbol is ILocalSymbol { IsUsing: true };
                    bool returned = symbol is ILocalSymbol && body.DescendantNodes().OfType<ReturnStatementSyntax>()
                        .Any(r => r.SpanStart > call.SpanStart && r.DescendantNodes().OfType<IdentifierNameSyntax>().Any(Same));
                    bool keptAlive = body.DescendantNodes().OfType<InvocationExpressionSyntax>()
                        .Any(k => k.SpanStart > call.SpanStart && model.GetSymbolInfo(k).Symbol is IMethodSymbol { Name: "KeepAlive", ContainingType.Name: "GC" }
                                  && Same(k.ArgumentList.Arguments[0].Expression));
                    if (!usingLocal && !returned && !keptAlive)
                        found.Add($"{Path.GetRelativePath(root, tree.FilePath)}:{tree.GetLineSpan(call.Span).StartLinePosition.Line + 1}: {call}");
                }
            }
        Assert.True(found.Count == 0, "raw pointers of tensors nothing holds until the kernel is done (use a using local, or GC.KeepAlive after the work):\n" + string.Join("\n", found));
    }
}
