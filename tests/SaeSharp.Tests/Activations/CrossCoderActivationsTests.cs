using SaeSharp.Activations;
using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>Activations with a layer axis for crosscoders: [N, L, d] files, one file per layer, <c>sae cache</c> folders.</summary>
public class CrossCoderActivationsTests : TempDirTestBase
{
    /// <summary>A <c>sae cache</c> folder written by hand: two shards of <c>activations</c> and <c>token_ids</c>.</summary>
    internal static void WriteCache(string dir, string model, string hook, Tensor rows, Tensor tokens)
    {
        Directory.CreateDirectory(dir);
        long n = rows.shape[0], half = n / 2;
        SafeTensors.Save(Path.Combine(dir, "shard_00000.safetensors"), new Dictionary<string, Tensor> { ["activations"] = rows[..(int)half], ["token_ids"] = tokens[..(int)half] });
        SafeTensors.Save(Path.Combine(dir, "shard_00001.safetensors"), new Dictionary<string, Tensor> { ["activations"] = rows[(int)half..], ["token_ids"] = tokens[(int)half..] });
        File.WriteAllText(Path.Combine(dir, "manifest.json"), $$"""
            {"format": "saesharp-activation-cache", "format_version": 1, "model": "{{model}}", "hook": "{{hook}}", "d_in": {{rows.shape[1]}}, "d_out": {{rows.shape[1]}},
             "total_rows": {{n}}, "context_size": 4, "complete": true,
             "shards": [{"file": "shard_00000.safetensors", "rows": {{half}}, "contexts": 1}, {"file": "shard_00001.safetensors", "rows": {{n - half}}, "contexts": 1}]}
            """);
    }

    [Fact]
    public void OneFilePerLayerStacksAlongTheLayerAxisInOrder()
    {
        var dir = _dir;
        using var a = TorchScalars.Arange(12, dtype: ScalarType.Float32).reshape(4, 3);
        using var b = a + 100;
        Npy.Save(Path.Combine(dir, "a.npy"), a);
        Npy.Save(Path.Combine(dir, "b.npy"), b);
        using var x = CrossCoderActivations.Load([Path.Combine(dir, "b.npy"), Path.Combine(dir, "a.npy")]);
        Assert.Equal([4L, 2L, 3L], x.shape);
        Assert.Equal(105f, x[1, 0, 2].item<float>()); // row 1 of b, layer slot 0
        Assert.Equal(5f, x[1, 1, 2].item<float>());
        using var stacked = stack([a, b], 1);
        SafeTensors.Save(Path.Combine(dir, "ab.safetensors"), new Dictionary<string, Tensor> { ["activations"] = stacked });
        using var y = CrossCoderActivations.Load([Path.Combine(dir, "ab.safetensors")], maxRows: 3);
        Assert.True(y.eq(stacked[..3]).all().item<bool>());
        // Refused by name: a single [N, d] file, and layers of different widths.
        Assert.Contains("a crosscoder reads [N, n_layers, d]", Assert.Throws<SaeSharpException>(() => CrossCoderActivations.Load([Path.Combine(dir, "a.npy")])).Message);
        using var narrow = zeros(4, 2);
        Npy.Save(Path.Combine(dir, "n.npy"), narrow);
        Assert.Contains("differs from", Assert.Throws<SaeSharpException>(() => CrossCoderActivations.Load([Path.Combine(dir, "a.npy"), Path.Combine(dir, "n.npy")])).Message);
    }

    [Fact]
    public void CacheFoldersGiveTheirHooksAndModelsAndMustHoldTheSameTokens()
    {
        var dir = _dir;
        using var tokens = tensor(new long[] { 5, 6, 7, 8, 9, 10 });
        using var baseRows = randn(6, 3);
        using var chatRows = randn(6, 3);
        WriteCache(Path.Combine(dir, "base"), "gpt2", "blocks.3.hook_resid_post", baseRows, tokens);
        WriteCache(Path.Combine(dir, "chat"), "gpt2-chat", "blocks.3.hook_resid_post", chatRows, tokens);
        using var data = CrossCoderActivations.LoadWithSources([Path.Combine(dir, "base"), Path.Combine(dir, "chat")]);
        Assert.Equal([6L, 2L, 3L], data.X.shape);
        Assert.True(data.X.select(1, 0).eq(baseRows).all().item<bool>());
        Assert.True(data.X.select(1, 1).eq(chatRows).all().item<bool>());
        Assert.Equal(["gpt2", "gpt2-chat"], data.Models);
        Assert.Equal(["blocks.3.hook_resid_post", "blocks.3.hook_resid_post"], data.Hooks);
        using var otherTokens = tensor(new long[] { 5, 6, 7, 8, 9, 11 });
        WriteCache(Path.Combine(dir, "other"), "gpt2-chat", "blocks.3.hook_resid_post", chatRows, otherTokens);
        Assert.Contains("token_ids differ", Assert.Throws<SaeSharpException>(() =>
            CrossCoderActivations.LoadWithSources([Path.Combine(dir, "base"), Path.Combine(dir, "other")])).Message);
        // Caches of different row counts: the counts named, not "token_ids differ".
        WriteCache(Path.Combine(dir, "short"), "gpt2-chat", "blocks.3.hook_resid_post", chatRows[..4], tokens[..4]);
        var e = Assert.Throws<SaeSharpException>(() => CrossCoderActivations.LoadWithSources([Path.Combine(dir, "base"), Path.Combine(dir, "short")]));
        Assert.Contains("short: 4 rows, but", e.Message);
        Assert.Contains("base has 6", e.Message);
    }

    [Fact]
    public void CachesInAnotherOrderThanTheCrossCodersSlotsAreRefused()
    {
        var dir = _dir;
        using var tokens = tensor(new long[] { 5, 6, 7, 8 });
        using var rows = randn(4, 3);
        WriteCache(Path.Combine(dir, "l3"), "gpt2", "blocks.3.hook_resid_post", rows, tokens);
        WriteCache(Path.Combine(dir, "l5"), "gpt2", "blocks.5.hook_resid_post", rows, tokens);
        WriteCache(Path.Combine(dir, "chat"), "gpt2-chat", "blocks.3.hook_resid_post", rows, tokens);
        var layers = new SaeSharp.Interop.CrossCoderSources { HookNames = ["blocks.3.hook_resid_post", "blocks.5.hook_resid_post"], ModelNames = ["gpt2"] };
        using (var inOrder = CrossCoderActivations.LoadWithSources([Path.Combine(dir, "l3"), Path.Combine(dir, "l5")]))
            inOrder.CheckSlotsMatch(layers, "cc");
        using (var swapped = CrossCoderActivations.LoadWithSources([Path.Combine(dir, "l5"), Path.Combine(dir, "l3")]))
            Assert.Contains("slot 0: the activations are of hook 'blocks.5.hook_resid_post' (the cache's manifest.json), but cc reads 'blocks.3.hook_resid_post'",
                Assert.Throws<SaeSharpException>(() => swapped.CheckSlotsMatch(layers, "cc")).Message);
        // A diffing pair: the models' order is checked; another name for a model (an alias) is not refused.
        var diff = new SaeSharp.Interop.CrossCoderSources { HookNames = ["blocks.3.hook_resid_post", "blocks.3.hook_resid_post"], ModelNames = ["gpt2", "gpt2-chat"] };
        using (var reversed = CrossCoderActivations.LoadWithSources([Path.Combine(dir, "chat"), Path.Combine(dir, "l3")]))
            Assert.Contains("slot 0: the activations are of model 'gpt2-chat'", Assert.Throws<SaeSharpException>(() => reversed.CheckSlotsMatch(diff, "cc")).Message);
        var aliased = diff with { ModelNames = ["openai-community/gpt2", "gpt2-chat"] };
        using (var pair = CrossCoderActivations.LoadWithSources([Path.Combine(dir, "l3"), Path.Combine(dir, "chat")]))
            pair.CheckSlotsMatch(aliased, "cc");
        // Nothing recorded on the crosscoder's side: nothing to check.
        using (var any = CrossCoderActivations.LoadWithSources([Path.Combine(dir, "l5"), Path.Combine(dir, "l3")]))
            any.CheckSlotsMatch(new SaeSharp.Interop.CrossCoderSources(), "cc");
    }
}
