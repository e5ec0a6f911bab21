using SaeSharp.Interop;
using SaeSharp.Tests.Interop;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.CrossLayerTranscoderTests;

namespace SaeSharp.Tests.Hub;

/// <summary>Transcoder sets named <c>hf:ORG/REPO</c>, served by the loopback hub as circuit-tracer's repos hold them: a
/// config.yaml whose <c>transcoders:</c> list points into another repo (mwhanna/gemma-scope-transcoders → Gemma Scope's
/// npz files), or a config.yaml beside <c>layer_L.safetensors</c>.</summary>
public class TranscoderSetHubTests : FakeHubTestBase
{
    private const string SetRepo = "mwhanna/tiny-scope-transcoders", ScopeRepo = "google/gemma-scope-tiny-pt-transcoders";

    private List<string> Downloaded(string repo) =>
        _server.Requests.Where(q => q.Path.StartsWith($"/{repo}/resolve/", StringComparison.Ordinal))
            .Select(q => string.Join('/', q.Path.Split('/').Skip(5))).Distinct().Order(StringComparer.Ordinal).ToList();

    private void ServeText(string repo, string path, string text)
    {
        if (!_server.Repos.TryGetValue(repo, out var r)) _server.Repos[repo] = r = new();
        r[path] = new FakeHubServer.FakeFile(System.Text.Encoding.UTF8.GetBytes(text));
    }

    [Fact]
    public void A_config_listing_hf_uris_into_another_repo_downloads_only_the_listed_files()
    {
        var r = CltReference.Random(2, 6, 4, seed: 21, threshold: true, skip: false).ZeroOffDiagonal();
        var lines = new List<string>();
        for (int l = 0; l < 2; l++)
        {
            var p = r.PerLayerTensors(l, threshold: true);
            string rel = $"layer_{l}/width_6/average_l0_{5 + l}";
            string file = Path.Combine(_work, rel, "params.npz");
            GemmaScopeTests.WriteNpz(file, new Dictionary<string, Tensor>
            {
                ["W_enc"] = p["W_enc"].t().contiguous(), ["W_dec"] = p["W_dec"], ["b_enc"] = p["b_enc"], ["b_dec"] = p["b_dec"], ["threshold"] = p["activation_function.threshold"],
            });
            Serve(ScopeRepo, rel, Path.GetDirectoryName(file)!, "params.npz");
            lines.Add($"  - hf://{ScopeRepo}/{rel}/params.npz" + (l == 1 ? "?revision=main" : ""));
        }
        // Another width the list does not name: never fetched.
        Serve(ScopeRepo, "layer_0/width_6/average_l0_99", Path.Combine(_work, "layer_0/width_6/average_l0_5"), "params.npz");
        ServeText(SetRepo, "config.yaml", "model_name: google/gemma-2-2b\nmodel_kind: transcoder_set\nfeature_input_hook: hook_resid_mid\n" +
            "feature_output_hook: hook_mlp_out\nscan: gemma-2-2b\ntranscoders:\n" + string.Join("\n", lines) + "\n");
        ServeText(SetRepo, "README.md", "# a transcoder set\n");

        Assert.True(CrossLayerTranscoderLoader.IsCrossLayerTranscoder($"hf:{SetRepo}", Hub));
        using (var set = CrossLayerTranscoderLoader.Load($"hf:{SetRepo}", Hub))
        {
            Assert.Equal((2, 6, 4, true, true, "google/gemma-2-2b"), (set.Cfg.NLayers, set.Cfg.DTranscoder, set.Cfg.DModel, set.Cfg.JumpRelu, set.Cfg.PerLayer, set.Cfg.ModelName));
            var (x, expected) = Case(r, rows: 3, seed: 4);
            using var _ = x;
            using var y = set.forward(x);
            AssertClose(expected, y);
        }
        Assert.Equal(["config.yaml"], Downloaded(SetRepo));
        Assert.Equal(["layer_0/width_6/average_l0_5/params.npz", "layer_1/width_6/average_l0_6/params.npz"], Downloaded(ScopeRepo));
    }

    [Fact]
    public void A_config_beside_layer_files_loads_them()
    {
        var r = CltReference.Random(3, 5, 4, seed: 22, threshold: false, skip: true).ZeroOffDiagonal();
        string folder = Path.Combine(_work, "set");
        r.WriteTranscoderSet(folder, threshold: false, inputHook: "hook_resid_mid");
        Serve("mntss/transcoder-tiny", "sub", folder, "config.yaml", "layer_0.safetensors", "layer_1.safetensors", "layer_2.safetensors");
        using var set = CrossLayerTranscoderLoader.Load("hf:mntss/transcoder-tiny/sub", Hub);
        Assert.Equal((3, false, true, true), (set.Cfg.NLayers, set.Cfg.JumpRelu, set.Cfg.SkipConnection, set.Cfg.PerLayer));
        var (x, expected) = Case(r, rows: 3, seed: 6);
        using var _ = x;
        using var y = set.forward(x);
        AssertClose(expected, y);
    }
}
