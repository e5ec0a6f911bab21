using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// <c>sae eval --model gemma-2b --sae gemma-2b-res-jb/...</c>, <c>--model gemma-2-2b --sae gemma-scope-2b-pt-res-canonical/...</c> (also offline) and <c>--model mistral-7b --sae mistral-7b-res-wg/...</c> as a
/// user runs them: the model by its TransformerLens name, downloaded from a (loopback) hub as <c>google/gemma-2b</c> /
/// <c>mistralai/Mistral-7B-v0.1</c>, the SAE from the release's repository and path. The models are the tiny checkpoints
/// transformers wrote (tests/data/hf_models/gemma, mistral) with a SentencePiece-style tokenizer.json; the SAE is the
/// identity pair (W_enc = [I, −I], W_dec = [I; −I], ReLU), so its reconstruction is exact whatever the model computes: CE
/// loss score 1, explained variance 1, and d_in active features per token (one of each ± pair, none zero).
/// </summary>
public class GemmaMistralReleaseTests : FakeHubTestBase
{
    private string P(params string[] parts) => Path.Combine([_work, .. parts]);

    /// <summary>Serves every file of <paramref name="folder"/> at the root of <paramref name="repo"/>.</summary>
    private void ServeModel(string repo, string folder) =>
        _server.Repos[repo] = Directory.GetFiles(folder).ToDictionary(f => Path.GetFileName(f),
            f => new FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: f.EndsWith(".safetensors", StringComparison.Ordinal)));

    /// <summary>Copies tests/data/hf_models/<paramref name="fixture"/>'s checkpoint (config, generation config, weights)
    /// into a new folder <paramref name="name"/> and returns it.</summary>
    private string CopyCheckpoint(string fixture, string name)
    {
        string model = P(name);
        Directory.CreateDirectory(model);
        foreach (var f in new[] { "config.json", "generation_config.json", "model.safetensors" })
            File.Copy(TestPaths.Data("hf_models", fixture, f), Path.Combine(model, f));
        return model;
    }

    /// <summary>The identity SAE on <paramref name="hook"/>, in SAELens's files, served as <paramref name="repo"/>/<paramref name="path"/>.</summary>
    private void ServeIdentitySae(string repo, string path, string hook, int dIn, string modelName)
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, ApplyBDecToInput = false };
        cfg.Metadata.HookName = hook;
        cfg.Metadata.ModelName = modelName;
        cfg.Metadata.ContextSize = 16;
        string dir = P("sae-src-" + modelName);
        using (var sae = SaeSharp.Tests.Saes.SaeTestUtil.Identity(cfg)) SaeLensFormat.Save(sae, dir);
        Serve(repo, path, dir, "cfg.json", "sae_weights.safetensors");
    }

    private JsonNode Eval(string model, string sae, bool offline = false)
    {
        string data = P("data.txt");
        var rng = new Random(5);
        string[] words = ["a", "b", "ab", "ba", "aab", "abb"];
        File.WriteAllLines(data, Enumerable.Range(0, 30).Select(_ => string.Join(" ", Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)]))));
        string json = P("eval-" + model + ".json");
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = _cache };
        if (offline) env["HF_HUB_OFFLINE"] = "1";
        var (exit, output, err) = CliRunner.RunWithEnvironment(env, "eval", "--model", model, "--sae", sae, "--dataset", data,
            "--tokens", "64", "--context-size", "16", "--json", json);
        Assert.True(exit == 0, err + output);
        return JsonNode.Parse(File.ReadAllText(json))!;
    }

    private static void AssertExactReconstruction(JsonNode result, int dIn, string what)
    {
        var r = result is JsonArray a ? a[0]! : result;
        string text = r.ToJsonString();
        double Metric(string group, string name) => (double?)r[group]?[name] ?? throw new Xunit.Sdk.XunitException($"{what}: no {group}.{name} in {text}");
        Assert.True(Math.Abs(Metric("model_performance_preservation", "ce_loss_score") - 1) < 1e-4, $"{what}: {text}");
        Assert.True(Metric("model_behavior_preservation", "kl_div_with_sae") < 1e-5, $"{what}: {text}");
        Assert.True(Math.Abs(Metric("reconstruction_quality", "explained_variance") - 1) < 1e-4, $"{what}: {text}");
        Assert.Equal(dIn, Metric("sparsity", "l0"), 3);
        Assert.Equal(64, Metric("token_stats", "total_tokens_eval_reconstruction"));
    }

    [Fact]
    public void Gemma_2b_by_its_TransformerLens_name_with_a_gemma_2b_res_jb_sae()
    {
        // The transformers-written Gemma 1 checkpoint (d_model 32, 2 layers) served as google/gemma-2b, with the hub's form
        // of its config.json (hidden_act "gelu", no hidden_activation) and a SentencePiece tokenizer.
        string model = CopyCheckpoint("gemma", "gemma-2b");
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "config.json")))!.AsObject();
        config.Remove("hidden_activation");
        File.WriteAllText(Path.Combine(model, "config.json"), config.ToJsonString());
        SentencePieceTokenizerTests.WriteTokenizer(model);
        ServeModel("google/gemma-2b", model);
        // pretrained_saes.yaml: gemma-2b-res-jb blocks.0.hook_resid_post is jbloom/Gemma-2b-Residual-Stream-SAEs at
        // gemma_2b_blocks.0.hook_resid_post_16384_anthropic.
        ServeIdentitySae("jbloom/Gemma-2b-Residual-Stream-SAEs", "gemma_2b_blocks.0.hook_resid_post_16384_anthropic", "blocks.0.hook_resid_post", 32, "gemma-2b");

        AssertExactReconstruction(Eval("gemma-2b", "gemma-2b-res-jb/blocks.0.hook_resid_post"), 32, "gemma-2b");
        Assert.True(File.Exists(Path.Combine(_cache, "models--google--gemma-2b", "snapshots", _server.Commit, "model.safetensors")),
            "the model was not downloaded as google/gemma-2b");
        Assert.Contains(_server.Requests, r => r.Path.Contains("/google/gemma-2b/", StringComparison.Ordinal));
    }

    [Fact]
    public void Mistral_7b_by_its_TransformerLens_name_with_a_mistral_7b_res_wg_sae()
    {
        // mistral-7b-res-wg's first SAE reads blocks.8.hook_resid_pre, so the transformers-written Mistral checkpoint's two
        // layers are repeated to nine (layer i = layer i mod 2), with a sliding window of 4 that bites in 16-token contexts.
        string model = P("mistral-7b");
        Directory.CreateDirectory(model);
        File.Copy(TestPaths.Data("hf_models", "mistral", "generation_config.json"), Path.Combine(model, "generation_config.json"));
        var config = JsonNode.Parse(File.ReadAllText(TestPaths.Data("hf_models", "mistral", "config.json")))!.AsObject();
        config["num_hidden_layers"] = 9;
        config["sliding_window"] = 4;
        File.WriteAllText(Path.Combine(model, "config.json"), config.ToJsonString());
        using (var scope = NewDisposeScope())
        {
            var w = SafeTensors.Load(TestPaths.Data("hf_models", "mistral", "model.safetensors"));
            var nine = new Dictionary<string, Tensor>();
            foreach (var (key, t) in w)
            {
                if (!key.StartsWith("model.layers.", StringComparison.Ordinal)) { nine[key] = t; continue; }
                var parts = key.Split('.', 4);    // model, layers, i, rest
                for (int i = int.Parse(parts[2], System.Globalization.CultureInfo.InvariantCulture); i < 9; i += 2)
                    nine[$"model.layers.{i}.{parts[3]}"] = t;
            }
            SafeTensors.Save(Path.Combine(model, "model.safetensors"), nine);
        }
        SentencePieceTokenizerTests.WriteTokenizer(model);
        ServeModel("mistralai/Mistral-7B-v0.1", model);
        // pretrained_saes.yaml: mistral-7b-res-wg blocks.8.hook_resid_pre is JoshEngels/Mistral-7B-Residual-Stream-SAEs at
        // mistral_7b_layer_8, with config_overrides normalize_activations: constant_norm_rescale (exact for this SAE too).
        ServeIdentitySae("JoshEngels/Mistral-7B-Residual-Stream-SAEs", "mistral_7b_layer_8", "blocks.8.hook_resid_pre", 32, "mistral-7b");

        AssertExactReconstruction(Eval("mistral-7b", "mistral-7b-res-wg/blocks.8.hook_resid_pre"), 32, "mistral-7b");
        Assert.True(File.Exists(Path.Combine(_cache, "models--mistralai--Mistral-7B-v0.1", "snapshots", _server.Commit, "model.safetensors")),
            "the model was not downloaded as mistralai/Mistral-7B-v0.1");
    }

    [Fact]
    public void Gemma_2_2b_with_a_gemma_scope_canonical_sae_then_offline_from_the_cache()
    {
        // The transformers-written Gemma 2 checkpoint (d_model 32, soft caps, sliding window) served as google/gemma-2-2b.
        string model = CopyCheckpoint("gemma2", "gemma-2-2b");
        SentencePieceTokenizerTests.WriteTokenizer(model);
        ServeModel("google/gemma-2-2b", model);
        // pretrained_saes.yaml: gemma-scope-2b-pt-res-canonical layer_0/width_16k/canonical is google/gemma-scope-2b-pt-res at
        // layer_0/width_16k/average_l0_105: a params.npz, 16384 latents as width_16k says. Latents 0..63 are the identity
        // pair [I, −I] with threshold 0 (JumpReLU = ReLU there, and no b_dec is subtracted), the others never fire.
        const int d = 32, dSae = 16384;
        using (var scope = NewDisposeScope())
        {
            var pair = cat([eye(d), -eye(d)], 1);
            var p = new Dictionary<string, Tensor>
            {
                ["W_enc"] = cat([pair, zeros(d, dSae - 2 * d)], 1),
                ["W_dec"] = cat([pair.t(), zeros(dSae - 2 * d, d)], 0),
                ["b_enc"] = zeros(dSae),
                ["b_dec"] = zeros(d),
                ["threshold"] = cat([zeros(2 * d), full(dSae - 2 * d, 1e9f)]),
            };
            string folder = P("gemma-scope-src");
            SaeSharp.Tests.Interop.GemmaScopeTests.WriteNpz(Path.Combine(folder, "params.npz"), p);
            Serve("google/gemma-scope-2b-pt-res", "layer_0/width_16k/average_l0_105", folder, "params.npz");
        }
        const string sae = "gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical";
        AssertExactReconstruction(Eval("gemma-2-2b", sae), d, "gemma-2-2b online");
        Assert.True(File.Exists(Path.Combine(_cache, "models--google--gemma-scope-2b-pt-res", "snapshots", _server.Commit, "layer_0", "width_16k",
            "average_l0_105", "params.npz")), "the SAE was not downloaded into the hub cache");
        int requests = _server.Requests.Count;
        AssertExactReconstruction(Eval("google/gemma-2-2b", sae, offline: true), d, "gemma-2-2b offline");
        Assert.Equal(requests, _server.Requests.Count);   // offline: the cache alone
    }
}
