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
        r.Run("probe", "--sae", r.P("demo", "sae"), "--model", "builtin", "--dataset", r.P("c.jsonl"), "--tokens", "4096", "--labels", "cat:colour",
            "--absorption", "--absorption-labels", "cat:colour", "--json", r.P("p.json"));
        r.Run("lm", "train", "--corpus", r.P("c.jsonl"), "--out", r.P("lm"), "--steps", "2", "--batch-size", "2", "--context-size", "128",
            "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "32", "--val-docs", "10", "--warm-up-steps", "1", "--checkpoint-every", "1");
        r.Run("lm", "eval", "--model", r.P("lm"), "--corpus", r.P("c.jsonl"), "--docs", "10");
        r.Run("convert", r.P("demo", "sae"), r.P("conv"));
        r.Run("convert", TestPaths.Data("dictionary_learning", "BatchTopKSAE"), r.P("conv-bt"));
        r.Run("convert", TestPaths.Data("dictionary_learning", "GatedAutoEncoder"), r.P("conv-gated"));
        r.Run("cache", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", r.P("c.jsonl"), "--tokens", "512",
            "--context-size", "32", "--contexts-per-shard", "8", "--out", r.P("cache"));
        r.Run("train", "--activations", r.P("cache"), "--arch", "relu-april,batchtopk,gated,jumprelu,matryoshka_batchtopk,matching_pursuit", "--k", "4",
            "--dict-size", "32", "--steps", "4", "--batch-size", "64", "--eval-rows", "64", "--out", r.P("mc"));
        foreach (var arch in new[] { "relu-april", "batchtopk", "gated", "jumprelu", "matryoshka_batchtopk", "matching_pursuit" })
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
        // Releases in other libraries' formats (SAELens's conversions), from the fixtures in their repos' layouts.
        string Conv(params string[] parts) => TestPaths.Data(["saelens_conversions", .. parts]);
        FakeHubServer.FakeFile Blob(string f) => new(File.ReadAllBytes(f), Lfs: true);
        server.Repos["qresearch/DeepSeek-R1-Distill-Llama-8B-SAE-l19"] = new()
        {
            ["DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt"] = Blob(Conv("deepseek_r1", "DeepSeek-R1-Distill-Llama-8B-SAE-l19.pt")),
        };
        server.Repos["fnlp/Llama-Scope-R1-Distill"] = new()
        {
            ["800M-Slimpajama-0-OpenR1-Math-220k/L0R/config.json"] = Blob(Conv("llama_scope_r1_distill", "800M-Slimpajama-0-OpenR1-Math-220k", "L0R", "config.json")),
            ["800M-Slimpajama-0-OpenR1-Math-220k/L0R/sae_weights.safetensors"] = Blob(Conv("llama_scope_r1_distill", "800M-Slimpajama-0-OpenR1-Math-220k", "L0R", "sae_weights.safetensors")),
        };
        server.Repos["mwhanna/qwen3-0.6b-transcoders-lowl0"] = new()
        {
            ["layer_1.safetensors"] = Blob(Conv("mwhanna", "layer_1.safetensors")),
            ["wandb-config.yaml"] = Blob(Conv("mwhanna", "wandb-config.yaml")),
            ["config.yaml"] = Blob(Conv("mwhanna", "config.yaml")),
        };
        server.Repos["mntss/clt-gemma-2-2b-2.5M"] = new()
        {
            ["config.yaml"] = Blob(Conv("mntss", "config.yaml")),
            ["W_enc_2.safetensors"] = Blob(Conv("mntss", "W_enc_2.safetensors")),
            ["W_dec_2.safetensors"] = Blob(Conv("mntss", "W_dec_2.safetensors")),
        };
        r.With(hub, "info", "deepseek-r1-distill-llama-8b-qresearch/blocks.19.hook_resid_post");
        r.With(hub, "info", "llama_scope_r1_distill/l0r_800m_slimpajama");
        r.With(hub, "convert", "mwhanna-qwen3-0.6b-transcoders-lowl0/layer_1", r.P("conv-mwhanna"));
        r.With(hub, "info", "mntss-gemma-2-2b-2.5m-clt-as-per-layer/layer_2");
        r.Run("convert", Conv("saelens_skip_transcoder"), r.P("conv-skip"));
        r.Run("info", Conv("saelens_jumprelu_transcoder"));
        // The built-in model's files served as a hub model, loaded by id.
        server.Repos["saesharp/tiny"] = Directory.GetFiles(BuiltinModel.Folder).ToDictionary(f => Path.GetFileName(f), f => new FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: f.EndsWith(".safetensors", StringComparison.Ordinal)));
        r.With(hub, "model", "generate", "--model", "saesharp/tiny", "--prompt", "the cat", "--max-new-tokens", "3");
        r.With(hub, "model", "info", "--model", "saesharp/tiny");

        using (var ids = torch.tensor(new long[] { 0, 5, 9, 17, 3, 8, 11, 2 }, [1, 8]))
            SafeTensors.Save(r.P("ids.safetensors"), [new("tokens", ids)]);
        r.Run("model", "run", "--model", "builtin", "--input", r.P("ids.safetensors"), "--out", r.P("run.safetensors"), "--hooks", "all",
            "--sae", r.P("demo", "sae"), "--steer", "1:4", "--ablate", "2,3");
        r.Run("info", r.P("demo", "sae"));

        // A transcoder across blocks (its encoding held from blocks.0 to blocks.1; the mean ablation's runs stop before its
        // output hook), spliced, steered unspliced, ablated and attributed.
        var tcCfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 128, DOut = 128, DSae = 64, ApplyBDecToInput = false };
        tcCfg.Metadata.HookName = "blocks.0.ln2.hook_normalized";
        tcCfg.Metadata.HookNameOut = "blocks.1.hook_mlp_out";
        using (torch.NewDisposeScope())
        using (var tc = SaeFactory.Create(tcCfg))
        using (var g = new torch.Generator(1))
        {
            tc.InitializeWeights(g);
            SaeLensFormat.Save(tc, r.P("tc"));
        }
        r.Run("model", "run", "--model", "builtin", "--input", r.P("ids.safetensors"), "--out", r.P("run-tc.safetensors"), "--hooks", "all",
            "--sae", r.P("tc"), "--error-term", "--steer", "1:4", "--ablate", "2,3");
        r.Run("steer", "--model", "builtin", "--sae", r.P("tc"), "--feature", "1", "--scale", "8", "--prompt", "the cat sat", "--max-new-tokens", "3", "--runs", "1");
        r.Run("ablate", "--model", "builtin", "--sae", r.P("tc"), "--features", "2", "--prompt", "the cat sat on the mat", "--mode", "mean");
        r.Run("attribute", "--model", "builtin", "--sae", r.P("tc"), "--prompt", "the cat sat", "--metric", "loss");
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
        r.Run("synth", "--from", TestPaths.Data("synthetic_model", "hierarchy_rescale"), "--out", r.P("s2"), "--rows", "500", "--eval-rows", "100");
    });

    /// <summary>The check itself: a tensor dropped undisposed between two commands fails the flow.</summary>
    [Fact]
    public void A_dropped_tensor_fails_the_check()
    {
        var e = Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => WithLeakCheck(r =>
        {
            r.Run("model", "tokenize", "--model", "builtin", "--text", "the cat");
            DropTensor();
        }));
        Assert.Contains("tensors nobody disposed", e.Message);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void DropTensor() => _ = torch.zeros(3);

    /// <summary>Runs CLI commands (through <see cref="CliRunner"/>) and counts the tensors the finalizer freed meanwhile;
    /// when any were, runs them again counting per command, and fails listing each command that left any. (A count is
    /// three full collections, slow on the heap the rest of the suite leaves: once per flow keeps this collection, which
    /// runs alone, short.)</summary>
    private static void WithLeakCheck(Action<Runner> flows)
    {
        long before = FinalizedTensors.Count();
        RunIn(flows, perCommand: false);
        long finalized = FinalizedTensors.Count() - before;
        if (finalized == 0) return;
        var leaks = RunIn(flows, perCommand: true);
        Assert.Fail($"{finalized} tensors nobody disposed (a temporary outside a dispose scope, or a tensor kept and dropped); " +
                    "run again per command:\n" + (leaks.Count > 0 ? string.Join("\n", leaks) : "none left any the second time"));
    }

    private static List<string> RunIn(Action<Runner> flows, bool perCommand)
    {
        var dir = Directory.CreateTempSubdirectory("sae-lifetime-").FullName;
        try
        {
            var runner = new Runner(dir, perCommand);
            flows(runner);
            return runner.Leaks;
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private sealed class Runner(string dir, bool perCommand)
    {
        public readonly List<string> Leaks = [];

        public string P(params string[] parts) => Path.Combine([dir, .. parts]);

        public void Run(params string[] args) => With([], args);

        public void With(Dictionary<string, string> environment, params string[] args)
        {
            long before = perCommand ? FinalizedTensors.Count() : 0;
            var (exit, output, err) = CliRunner.RunWithEnvironment(environment, args);
            Assert.True(exit == 0, $"sae {string.Join(' ', args)}: exit {exit}\n{err}\n{output}");
            if (!perCommand) return;
            long finalized = FinalizedTensors.Count() - before;
            if (finalized != 0) Leaks.Add($"sae {string.Join(' ', args.TakeWhile(a => !a.StartsWith('-')))}: {finalized} tensors finalized");
        }
    }
}

/// <summary>The source side of <see cref="TensorLifetimeTests"/>: <c>src/</c> compiled with Roslyn (as in
/// <see cref="ScalarLifetimeTests"/>, compiled once for both: <see cref="CompiledSource"/>).</summary>
[Collection(CompiledSourceCollection.Name)]
public class TensorLifetimeSourceTests(CompiledSource source)
{
    /// <summary>The library's worker threads have no dispose scope of their caller's (scopes are per thread), so the bodies
    /// it runs there (<c>KernelThreads.Run</c>, <c>RowRanges.For</c>, <c>Parallel.For</c>/<c>ForEach</c>, <c>Task.Run</c>, a
    /// new <c>Thread</c>) use no TorchSharp member at all: they work on raw pointers of tensors the caller holds.</summary>
    [Fact]
    public void Worker_thread_bodies_touch_no_TorchSharp_member()
    {
        var (root, compilations) = source.Src;
        var workers = new[] { "KernelThreads.Run", "RowRanges.For", "Parallel.For", "Parallel.ForEach", "Task.Run" };
        var found = new List<string>();
        foreach (var c in compilations)
            foreach (var tree in c.SyntaxTrees.Where(t => t.FilePath.Length > 0))
            {
                var model = source.Model(c, tree);
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
        var (root, compilations) = source.Src;
        var found = compilations.SelectMany(c => c.SyntaxTrees.Where(t => t.FilePath.Length > 0).SelectMany(tree =>
        {
            var model = source.Model(c, tree);
            return tree.GetRoot().DescendantNodes().OfType<InvocationExpressionSyntax>()
                .Where(call => model.GetSymbolInfo(call).Symbol is IMethodSymbol { Name: "zero_" or "tril_" or "triu_" or "gelu_" } m
                               && m.ContainingNamespace?.ToDisplayString().StartsWith("TorchSharp", StringComparison.Ordinal) == true)
                .Select(call => $"{Path.GetRelativePath(root, tree.FilePath)}:{tree.GetLineSpan(call.Span).StartLinePosition.Line + 1}: {call}");
        })).ToList();
        Assert.True(found.Count == 0, "in-place calls that return a new tensor (write fill_(TorchScalars.Of(0)) for zero_):\n" + string.Join("\n", found));
    }

    /// <summary>A kernel reads a tensor's storage through a raw pointer (<c>TensorPointers</c>), and a few methods through a
    /// span of its bytes (<c>Tensor.bytes</c>), for a long time; the JIT ends a parameter's or local's life at its last read
    /// on the path taken, so a tensor passed in as a temporary (<c>Kernel(x.contiguous())</c>, no scope on the thread) could
    /// be finalized, and its storage freed, while the kernel runs. So on every path out of the method after the pointer (or
    /// span) is taken, the tensor is read again after the pointer's last use (<see cref="UnheldTensorMemory"/>): it is a
    /// <c>using</c> local; or a <c>GC.KeepAlive</c> of it is in the <c>finally</c> of a <c>try</c> holding the pointer's
    /// uses; or a <c>GC.KeepAlive</c> of it (or a <c>return</c> of the local) is a statement of a block enclosing the
    /// pointer, after its last use, with no <c>return</c>, <c>throw</c>, <c>yield break</c>, <c>goto</c>, or <c>break</c> /
    /// <c>continue</c> leaving that stretch in between. Only <c>TensorPointers</c> makes a pointer of a tensor's <c>bytes</c>.</summary>
    [Fact]
    public void A_tensor_whose_raw_pointer_a_method_takes_stays_reachable_until_the_method_is_done()
    {
        var (root, compilations) = source.Src;
        var found = compilations.SelectMany(c => c.SyntaxTrees.Where(t => t.FilePath.Length > 0).SelectMany(tree => UnheldTensorMemory(source.Model(c, tree), root))).ToList();
        Assert.True(found.Count == 0, "raw pointers (or byte spans) of tensors nothing holds on every path until their last use " +
            "(use a using local, or GC.KeepAlive after the work with no exit in between, or in a finally):\n" + string.Join("\n", found));
    }

    /// <summary>Methods that take a pointer or span of a tensor: the Bad ones do not hold it on every path.</summary>
    private const string Planted = """
        using SaeSharp.Kernels;
        using static TorchSharp.torch;
        namespace Planted;
        internal static unsafe class P
        {
            static void Work(float* p) { }
            static void Read(System.ReadOnlySpan<byte> b) { }
            static void BadReturnInABranch(Tensor x, bool small)
            {
                float* p = TensorPointers.FloatPtr(x);
                if (small) { Work(p); return; }
                Work(p);
                System.GC.KeepAlive(x);
            }
            static void BadKeepAliveInABranch(Tensor x, bool c)
            {
                float* p = TensorPointers.FloatPtr(x);
                Work(p);
                if (c) System.GC.KeepAlive(x);
            }
            static void BadKeepAliveBeforeTheLastUse(Tensor x)
            {
                float* p = TensorPointers.FloatPtr(x);
                System.GC.KeepAlive(x);
                Work(p);
            }
            static void BadBreakPastTheKeepAlive(Tensor x, int n)
            {
                for (int i = 0; i < n; i++)
                {
                    float* p = TensorPointers.FloatPtr(x);
                    if (i == 3) { Work(p); break; }
                    System.GC.KeepAlive(x);
                }
            }
            static void BadSpanOfAParameter(Tensor x) => Read(x.bytes);
            static void BadSpanWithoutKeepAlive(Tensor x)
            {
                var a = x.contiguous();
                System.ReadOnlySpan<float> s = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(a.bytes);
                Work(null);
                if (s.Length > 0) Read(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s));
            }
            static void GoodFinally(Tensor x, bool small)
            {
                try
                {
                    float* p = TensorPointers.FloatPtr(x);
                    if (small) { Work(p); return; }
                    Work(p);
                }
                finally { System.GC.KeepAlive(x); }
            }
            static void GoodUsing(Tensor y)
            {
                using var x = y.contiguous();
                float* p = TensorPointers.FloatPtr(x);
                if (p == null) return;
                Work(p);
            }
            static void GoodKeepAliveAfterALoop(Tensor x, int n)
            {
                float* p = TensorPointers.FloatPtr(x);
                for (int i = 0; i < n; i++) { if (i == 3) break; Work(p); }
                System.GC.KeepAlive(x);
            }
            static Tensor GoodReturned(Tensor y)
            {
                var x = y.contiguous();
                Work(TensorPointers.FloatPtr(x));
                return x;
            }
            static void GoodSpan(Tensor x)
            {
                var a = x.contiguous();
                System.ReadOnlySpan<float> s = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(a.bytes);
                Read(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s));
                System.GC.KeepAlive(a);
            }
        }
        """;

    /// <summary>The check above on planted code: each bad method is reported, each good one is not. None of the bad ones was
    /// reported by this check's previous form, which looked for a <c>GC.KeepAlive</c> (or a <c>return</c>) anywhere after the
    /// pointer in the text, and did not look at <c>Tensor.bytes</c> spans.</summary>
    [Fact]
    public void The_pointer_lifetime_check_reports_planted_unheld_tensors()
    {
        var (root, compilations) = source.Src;
        var tree = CSharpSyntaxTree.ParseText(Planted, (CSharpParseOptions)compilations[0].SyntaxTrees[0].Options, Path.Combine(root, "Planted.cs"));
        var c = compilations[0].AddSyntaxTrees(tree);
        var model = c.GetSemanticModel(tree);
        var errors = model.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error && d.Location.SourceTree == tree).ToList();
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        var reported = UnheldTensorMemoryNodes(model).Select(f => f.Node.Ancestors().OfType<MethodDeclarationSyntax>().First().Identifier.Text)
            .Distinct().Order(StringComparer.Ordinal).ToList();
        Assert.Equal(["BadBreakPastTheKeepAlive", "BadKeepAliveBeforeTheLastUse", "BadKeepAliveInABranch", "BadReturnInABranch",
                      "BadSpanOfAParameter", "BadSpanWithoutKeepAlive"], reported);
    }

    /// <summary>"file:line: code" for each raw pointer (<c>TensorPointers.*Ptr</c>) or byte span (<c>Tensor.bytes</c>) of a
    /// tensor not held on every path until the pointer's last use (the rule: the test above).</summary>
    internal static IEnumerable<string> UnheldTensorMemory(SemanticModel model, string root) =>
        UnheldTensorMemoryNodes(model).Select(f =>
            $"{Path.GetRelativePath(root, model.SyntaxTree.FilePath)}:{model.SyntaxTree.GetLineSpan(f.Node.Span).StartLinePosition.Line + 1}: {f.What}");

    private static IEnumerable<(SyntaxNode Node, string What)> UnheldTensorMemoryNodes(SemanticModel model)
    {
        var tree = model.SyntaxTree;
        bool inTensorPointers = Path.GetFileName(tree.FilePath) == "TensorPointers.cs";
        foreach (var node in tree.GetRoot().DescendantNodes())
        {
            ExpressionSyntax tensor;
            if (node is InvocationExpressionSyntax call && model.GetSymbolInfo(call).Symbol is IMethodSymbol { ContainingType.Name: "TensorPointers" } m
                && call.ArgumentList.Arguments.Count == 1 && m.Name.EndsWith("Ptr", StringComparison.Ordinal))
                tensor = call.ArgumentList.Arguments[0].Expression;
            else if (!inTensorPointers && node is MemberAccessExpressionSyntax { Name.Identifier.Text: "bytes" } bytes
                     && model.GetSymbolInfo(bytes).Symbol is IPropertySymbol { ContainingType.Name: "Tensor" })
            {
                // A pointer into a tensor's bytes is taken only by TensorPointers, whose callers this check follows.
                if (bytes.Ancestors().Any(a => a is FixedStatementSyntax
                        || a is InvocationExpressionSyntax i && model.GetSymbolInfo(i).Symbol is IMethodSymbol { Name: "AsPointer" }))
                    yield return (bytes, $"pointer into {bytes} outside TensorPointers");
                tensor = bytes.Expression;
            }
            else continue;
            if (!Held(model, node, tensor)) yield return (node, node.ToString());
        }
    }

    private static bool Held(SemanticModel model, SyntaxNode use, ExpressionSyntax tensor)
    {
        var body = use.Ancestors().First(a => a is BaseMethodDeclarationSyntax or LocalFunctionStatementSyntax or AnonymousFunctionExpressionSyntax
                                              or AccessorDeclarationSyntax or PropertyDeclarationSyntax);
        var symbol = model.GetSymbolInfo(tensor).Symbol;
        if (symbol is ILocalSymbol { IsUsing: true }) return true;
        bool Same(ExpressionSyntax e) => tensor is IdentifierNameSyntax ? SymbolEqualityComparer.Default.Equals(model.GetSymbolInfo(e).Symbol, symbol)
                                                                        : e.IsEquivalentTo(tensor, topLevel: false);
        // This function's own statements: not those of lambdas or local functions inside it (other functions, other exits).
        var own = body.DescendantNodes(n => n == body || n is not (AnonymousFunctionExpressionSyntax or LocalFunctionStatementSyntax)).ToList();

        // Where the pointer's use ends: its statement, or the last read of the local it is stored in (through ?: and casts, and
        // for a span through calls returning a span, such as MemoryMarshal.Cast).
        int End(SyntaxNode n) => n.AncestorsAndSelf().OfType<StatementSyntax>().FirstOrDefault()?.Span.End ?? body.Span.End;
        int useEnd = End(use);
        SyntaxNode up = use;
        while (up.Parent is ConditionalExpressionSyntax or ParenthesizedExpressionSyntax or CastExpressionSyntax
               || up.Parent is ArgumentSyntax { Parent.Parent: InvocationExpressionSyntax span } && model.GetTypeInfo(span).Type is { IsRefLikeType: true })
            up = up.Parent is ArgumentSyntax a ? a.Parent!.Parent! : up.Parent!;
        ISymbol? stored = up.Parent switch
        {
            EqualsValueClauseSyntax { Parent: VariableDeclaratorSyntax d } => model.GetDeclaredSymbol(d),
            AssignmentExpressionSyntax asg when asg.Right == up => model.GetSymbolInfo(asg.Left).Symbol,
            _ => null,
        };
        if (stored is ILocalSymbol)
            foreach (var read in body.DescendantNodes().OfType<IdentifierNameSyntax>())
                if (SymbolEqualityComparer.Default.Equals(model.GetSymbolInfo(read).Symbol, stored))
                    useEnd = Math.Max(useEnd, End(read));

        bool KeepAlive(StatementSyntax s) => s is ExpressionStatementSyntax { Expression: InvocationExpressionSyntax k }
            && model.GetSymbolInfo(k).Symbol is IMethodSymbol { Name: "KeepAlive", ContainingType.Name: "GC" } && Same(k.ArgumentList.Arguments[0].Expression);
        bool Hold(StatementSyntax s) => KeepAlive(s)
            || symbol is ILocalSymbol && s is ReturnStatementSyntax { Expression: { } r } && r.DescendantNodesAndSelf().OfType<IdentifierNameSyntax>().Any(Same);

        // A GC.KeepAlive in the finally of a try that holds the pointer and all its uses.
        foreach (var t in use.Ancestors().TakeWhile(a => a != body).OfType<TryStatementSyntax>())
            if (t.Finally is { } fin && t.Block.Span.Contains(use.Span) && useEnd <= t.Block.Span.End
                && fin.Block.DescendantNodes().OfType<StatementSyntax>().Any(KeepAlive))
                return true;

        // Leaves the stretch [from, to) of this function: an exit statement, or a break/continue whose loop (switch) encloses `from`.
        bool Leaves(int from, int to) => own.Any(n => n.SpanStart >= from && n.SpanStart < to && n switch
        {
            ReturnStatementSyntax or ThrowStatementSyntax or ThrowExpressionSyntax or GotoStatementSyntax => true,
            YieldStatementSyntax y => y.IsKind(SyntaxKind.YieldBreakStatement),
            BreakStatementSyntax => n.Ancestors().First(a => a is ForStatementSyntax or CommonForEachStatementSyntax or WhileStatementSyntax
                                                              or DoStatementSyntax or SwitchStatementSyntax).SpanStart < from,
            ContinueStatementSyntax => n.Ancestors().First(a => a is ForStatementSyntax or CommonForEachStatementSyntax or WhileStatementSyntax
                                                                 or DoStatementSyntax).SpanStart < from,
            _ => false,
        });

        // A hold statement of a block enclosing the pointer, after its last use, with no way out in between.
        foreach (var block in use.Ancestors().TakeWhile(a => a != body).OfType<BlockSyntax>())
            foreach (var h in block.Statements)
                if (h.SpanStart >= useEnd && Hold(h) && !Leaves(use.SpanStart, h.SpanStart))
                    return true;
        return false;
    }
}
