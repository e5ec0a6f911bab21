using System.Text.Json;
using SaeSharp.Hooks;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary>
/// Gemma Scope 2 SAEs spliced into the tiny Gemma 3 model (tests/data/hf_models/gemma3) against transformers' own forward:
/// tests/data/gemma_scope_2_splice holds tiny SAEs in Gemma Scope 2's layout and, for each, what
/// bench/reference/gemma_scope_2_splice_fixture.py got from transformers 4.51's Gemma3ForCausalLM with the SAE's output
/// substituted by PyTorch hooks at the HF module SAELens 6.37.6 records (<c>hf_hook_name</c>, a transcoder's
/// <c>hf_hook_name_out</c>): the SAE's input there, its feature activations and output, and the logits, without and with
/// the error term. Each SAE is loaded as a user's download is (by folder, and by release name through the fake hub),
/// with its model as <c>sae model run --sae</c> loads it (<see cref="ModelForSae"/>), and spliced by
/// <see cref="HookedSaeTransformer"/> at the TransformerLens hooks SaeSharp maps those HF modules to.
/// </summary>
public sealed class GemmaScope2SpliceTests(ITestOutputHelper output) : FakeHubTestBase
{
    private const double RelativeTolerance = 1e-5;   // as HfTransformersParityTests: float32 on both sides, other kernels

    /// <summary>A fixture SAE: its release spec (google/gemma-scope-2-270m-pt), the HF hooks SAELens records and the
    /// TransformerLens hooks they must be.</summary>
    private sealed record Case(string Release, string HfIn, string? HfOut, string Hook, string? HookOut);

    private static readonly Dictionary<string, Case> Cases = new()
    {
        ["resid_post_all/layer_1_width_16k_l0_small"] = new("gemma-scope-2-270m-pt-res-all/layer_1_width_16k_l0_small",
            "model.layers.1.output", null, "blocks.1.hook_resid_post", null),
        // d_in 64 = 4 heads × d_head 16: hook_z flattened is o_proj's input.
        ["attn_out_all/layer_0_width_16k_l0_small"] = new("gemma-scope-2-270m-pt-att-all/layer_0_width_16k_l0_small",
            "model.layers.0.self_attn.o_proj.input", null, "blocks.0.attn.hook_z", null),
        // No config.json: the hooks are inferred from the folder name.
        ["mlp_out_all/layer_2_width_16k_l0_small"] = new("gemma-scope-2-270m-pt-mlp-all/layer_2_width_16k_l0_small",
            "model.layers.2.post_feedforward_layernorm.output", null, "blocks.2.hook_mlp_out", null),
        ["transcoder_all/layer_1_width_16k_l0_big_affine"] = new("gemma-scope-2-270m-pt-transcoders-all/layer_1_width_16k_l0_big_affine",
            "model.layers.1.pre_feedforward_layernorm.output", "model.layers.1.post_feedforward_layernorm.output",
            "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"),
        ["transcoder_all/layer_3_width_16k_l0_small"] = new("gemma-scope-2-270m-pt-transcoders-all/layer_3_width_16k_l0_small",
            "model.layers.3.pre_feedforward_layernorm.output", "model.layers.3.post_feedforward_layernorm.output",
            "blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out"),
    };

    public static TheoryData<string> Folders => new(Cases.Keys);

    private static string ModelFolder => TestPaths.Data("hf_models", "gemma3");

    private static string Fixture(string folder) => TestPaths.Data(["gemma_scope_2_splice", .. folder.Split('/')]);

    private static string? Meta(Sae sae, string key) =>
        sae.Cfg.Metadata.Extra?.GetValueOrDefault(key) is { ValueKind: JsonValueKind.String } v ? v.GetString() : null;

    private double Check(Tensor expected, Tensor actual, string what)
    {
        double d = HfTransformersParityTests.RelativeMaxDifference(expected, actual, what);
        output.WriteLine($"{what}: {d:G3}");
        Assert.True(d <= RelativeTolerance, $"{what} differs from transformers by {d:G3} of its scale (> {RelativeTolerance})");
        return d;
    }

    [Theory]
    [MemberData(nameof(Folders))]
    public void Spliced_into_gemma3_it_gives_transformers_features_and_logits(string folder)
    {
        var c = Cases[folder];
        string dir = Fixture(folder);
        Serve("google/gemma-scope-2-270m-pt", folder, dir,
            [.. new[] { "params.safetensors", "config.json" }.Where(f => File.Exists(Path.Combine(dir, f)))]);
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(dir, "reference.npz"));
        var tokens = r["tokens"];
        long b = tokens.shape[0], s = tokens.shape[1];
        // The splice must change the model, or matching the logits would say nothing about it.
        var clean = Npy.LoadNpz(Path.Combine(ModelFolder, "reference.npz"))["logits"];
        Assert.True(HfTransformersParityTests.RelativeMaxDifference(clean, r["logits"], "spliced vs clean") > 0.1,
            "the reference splice barely moves the logits");
        foreach (var spec in new[] { dir, c.Release })
        {
            using var sae = SaeLoader.Load(spec, new SaeLoadOptions { Hub = Hub });
            var m = sae.Cfg.Metadata;
            Assert.Equal((c.Hook, c.HookOut, c.HfIn, c.HfOut), (m.HookName, m.HookNameOut, Meta(sae, "hf_hook_name"), Meta(sae, "hf_hook_name_out")));
            Assert.Equal(folder.EndsWith("_affine", StringComparison.Ordinal), sae.HasSkip);
            using var pm = ModelForSae.Load(ModelFolder, sae.Cfg);
            foreach (bool errorTerm in new[] { false, true })
            {
                var hooked = new HookedSaeTransformer(pm.Model) { ModelHooks = pm.Hooks };
                var a = hooked.AddSae(sae, useErrorTerm: errorTerm);
                Assert.Equal((c.Hook, c.HookOut ?? c.Hook), (a.Hook, a.WriteHook));
                string[] names = [a.HookName(SaeHookPoints.Input), a.HookName(SaeHookPoints.ActsPost), a.HookName(SaeHookPoints.Recons)];
                var (logits, cache) = hooked.RunWithCache(tokens, names);
                using (cache)
                {
                    string what = $"{folder} ({(spec == dir ? "path" : "release")}{(errorTerm ? ", error term" : "")})";
                    // The SAE reads what transformers has at hf_hook_name (hook_z flattened: o_proj's input).
                    Check(r["sae_in"], cache[names[0]].reshape(b, s, -1), $"{what} SAE input");
                    Check(r["feature_acts"], cache[names[1]].reshape(b, s, -1), $"{what} feature activations");
                    Check(r["sae_out"], cache[names[2]].reshape(b, s, -1), $"{what} SAE output");
                    Check(r[errorTerm ? "logits_error_term" : "logits"], logits!, $"{what} logits");
                }
            }
        }
        // Some latents fire, not all: the thresholds are exercised both ways.
        var fired = r["feature_acts"].gt(0).to(ScalarType.Float32).mean().item<float>();
        Assert.InRange(fired, 0.1f, 0.7f);
    }

    [Theory]
    [MemberData(nameof(Folders))]
    public void Spliced_into_gemma3_conditional_it_gives_transformers_logits(string folder)
    {
        // Gemma Scope 2's SAEs of gemma-3-4b and larger are for Gemma3ForConditionalGeneration checkpoints, whose text
        // model SaeSharp loads; transformers was hooked at language_model + SAELens's module names (its 4.51 layout).
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture(folder), "reference.npz"));
        using var sae = SaeLoader.Load(Fixture(folder));
        using var pm = ModelForSae.Load(TestPaths.Data("hf_models", "gemma3-conditional"), sae.Cfg);
        var hooked = new HookedSaeTransformer(pm.Model) { ModelHooks = pm.Hooks };
        var a = hooked.AddSae(sae);
        var (logits, cache) = hooked.RunWithCache(r["tokens"], [a.HookName(SaeHookPoints.ActsPost)]);
        using (cache)
        {
            Check(r["feature_acts"], cache[a.HookName(SaeHookPoints.ActsPost)].reshape(r["feature_acts"].shape), $"{folder} conditional feature activations");
            Check(r["logits_conditional"], logits!, $"{folder} conditional logits");
        }
    }

    [Fact]
    public void A_transcoder_reads_the_pre_feedforward_norms_output_not_SAELenss_hook_mlp_in()
    {
        // SAELens 6.37.6 names a Gemma Scope 2 transcoder's input blocks.N.hook_mlp_in, which in TransformerLens is ln2's
        // input (the residual stream mid-block); its hf_hook_name, pre_feedforward_layernorm.output, is ln2's output.
        // transformers' activation there is SaeSharp's ln2.hook_normalized, and far from the residual stream.
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture("transcoder_all/layer_1_width_16k_l0_big_affine"), "reference.npz"));
        using var model = SaeSharp.Models.ModelLoader.FromPretrained(ModelFolder);
        var (_, cache) = model.RunWithCache(r["tokens"], ["blocks.1.ln2.hook_normalized", "blocks.1.hook_resid_mid"]);
        using (cache)
        {
            Check(r["sae_in"], cache["blocks.1.ln2.hook_normalized"], "transcoder input vs ln2.hook_normalized");
            double mid = HfTransformersParityTests.RelativeMaxDifference(r["sae_in"], cache["blocks.1.hook_resid_mid"], "vs hook_resid_mid");
            Assert.True(mid > 0.5, $"ln2's input is {mid:G3} of scale from pre_feedforward_layernorm.output");
        }
    }

    [Fact]
    public void Sae_model_run_splices_an_affine_transcoder_into_gemma3_as_transformers()
    {
        const string folder = "transcoder_all/layer_1_width_16k_l0_big_affine";
        string dir = Fixture(folder);
        var r = Npy.LoadNpz(Path.Combine(dir, "reference.npz"));
        string input = Path.Combine(_work, "tokens.safetensors"), outPath = Path.Combine(_work, "out.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = r["tokens"] });
        const string acts = "blocks.1.ln2.hook_normalized.hook_sae_acts_post";
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", ModelFolder, "--input", input, "--out", outPath, "--sae", dir, "--hooks", acts);
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(outPath);
        try
        {
            Check(r["logits"], o["logits"], "sae model run logits");
            Check(r["feature_acts"], o[acts].reshape(r["feature_acts"].shape), "sae model run feature activations");
        }
        finally
        {
            foreach (var t in o.Values) t.Dispose();
            foreach (var t in r.Values) t.Dispose();
        }
    }
}
