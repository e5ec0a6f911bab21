using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// A researcher's Llama 3.1 8B session, offline, from a hub cache as <c>huggingface-cli download</c> leaves it
/// (<see cref="LlamaHubCache"/>): <c>--model meta-llama/Llama-3.1-8B</c> with Llama Scope SAEs at resid_post, mlp_out and
/// attn_out, <c>meta-llama/Llama-3.1-8B-Instruct</c> with Goodfire's and andyrdt's SAEs, and a sparsify SAE by
/// <c>hf:</c> folder. Each SAE's feature activations (<c>sae inspect --json</c>) are compared with a hand computation
/// from the fixture's weights on the hook activations <c>sae model run</c> writes; the configs with SAELens's.
/// </summary>
public class LlamaReleaseTests : TempDirTestBase
{
    private const string Prompt = "Hi there";
    // BOS, then the prompt's bytes: the fixture's tokenizer has the 256 byte tokens (id = byte) and no merges.
    private static readonly long[] PromptTokens = [LlamaHubCache.Bos, 'H', 'i', ' ', 't', 'h', 'e', 'r', 'e'];

    private string Cache => Path.Combine(_dir, "hub");

    private (int Exit, string Out, string Err) Sae(params string[] args) =>
        CliRunner.RunWithEnvironment(new Dictionary<string, string> { ["HF_HUB_CACHE"] = Cache, ["HF_HUB_OFFLINE"] = "1" }, args);

    private string Ok(params string[] args)
    {
        var (exit, output, err) = Sae(args);
        Assert.True(exit == 0, $"sae {string.Join(' ', args)}: {err}{output}");
        return output;
    }

    /// <summary><c>sae info</c>'s name → value lines.</summary>
    private Dictionary<string, string> Info(string sae) =>
        Ok("info", sae).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('\t')).Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1].Trim());

    /// <summary>The hook activations [pos, d_model] of the prompt, from <c>sae model run --hooks</c>.</summary>
    private Dictionary<string, float[][]> Activations(string model, params string[] hooks)
    {
        string file = Path.Combine(_dir, "acts.safetensors");
        Ok("model", "run", "--model", model, "--prompt", Prompt, "--hooks", string.Join(',', hooks), "--out", file);
        using var scope = NewDisposeScope();
        var t = SafeTensors.Load(file);
        Assert.Equal(PromptTokens, t["tokens"].data<long>().ToArray());
        return hooks.ToDictionary(h => h, h =>
        {
            var a = t[h][0];
            return Enumerable.Range(0, (int)a.shape[0]).Select(p => a[p].data<float>().ToArray()).ToArray();
        });
    }

    /// <summary><c>sae inspect --json</c>'s feature activations [pos, d_sae] (features it does not list: 0).</summary>
    private float[][] Inspect(string model, string sae, int dSae)
    {
        string json = Path.Combine(_dir, "inspect.json");
        Ok("inspect", "--model", model, "--sae", sae, "--prompt", Prompt, "--top", dSae.ToString(System.Globalization.CultureInfo.InvariantCulture), "--json", json);
        var view = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(PromptTokens, view["tokens"]!.AsArray().Select(v => (long)v!).ToArray());
        var f = Enumerable.Range(0, PromptTokens.Length).Select(_ => new float[dSae]).ToArray();
        foreach (var feature in view["features"]!.AsArray())
        {
            var acts = feature!["acts"]!.AsArray();
            for (int p = 0; p < f.Length; p++) f[p][(int)feature["feature"]!] = (float)acts[p]!;
        }
        return f;
    }

    private static void AssertClose(float[][] expected, float[][] actual, string what)
    {
        int fired = 0;
        for (int p = 0; p < expected.Length; p++)
            for (int j = 0; j < expected[p].Length; j++)
            {
                double e = expected[p][j], a = actual[p][j];
                Assert.True(Math.Abs(e - a) <= 1e-3 + 1e-4 * Math.Abs(e), $"{what}: position {p} feature {j}: expected {e}, got {a}");
                if (e > 0) fired++;
            }
        Assert.True(fired > 0 && fired < expected.Length * expected[0].Length, $"{what}: {fired} features fired; the test needs some on and some off");
    }

    private JsonNode Eval(string model, string sae)
    {
        string data = Path.Combine(_dir, "data.txt");
        File.WriteAllLines(data, Enumerable.Range(0, 20).Select(i => $"The capital of France is Paris, and line {i} says hello there."));
        string json = Path.Combine(_dir, "eval.json");
        Ok("eval", "--model", model, "--sae", sae, "--dataset", data, "--tokens", "128", "--context-size", "32", "--json", json);
        var r = JsonNode.Parse(File.ReadAllText(json))!;
        return r is JsonArray a ? a[0]! : r;
    }

    [Fact]
    public void Llama_Scope_SAEs_at_resid_post_mlp_out_and_attn_out_encode_as_SAELens_loads_them()
    {
        LlamaHubCache.WriteModel(Cache, "meta-llama/Llama-3.1-8B");
        const string model = "meta-llama/Llama-3.1-8B";
        var saes = new (string Spec, string Repo, string Folder, string Hook, string Neuronpedia)[]
        {
            ("llama_scope_lxr_8x/l3r_8x", "fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L3R-8x", "blocks.3.hook_resid_post", "llama3.1-8b/3-llamascope-res-32k"),
            ("llama_scope_lxm_8x/l3m_8x", "fnlp/Llama3_1-8B-Base-LXM-8x", "Llama3_1-8B-Base-L3M-8x", "blocks.3.hook_mlp_out", "llama3.1-8b/3-llamascope-mlp-32k"),
            ("llama_scope_lxa_32x/l3a_32x", "fnlp/Llama3_1-8B-Base-LXA-32x", "Llama3_1-8B-Base-L3A-32x", "blocks.3.hook_attn_out", "llama3.1-8b/3-llamascope-att-131k"),
        };
        var acts = Activations(model, saes.Select(s => s.Hook).ToArray());
        int seed = 0;
        foreach (var (spec, repo, folder, hook, np) in saes)
        {
            int expansion = spec.EndsWith("32x", StringComparison.Ordinal) ? 32 : 8;
            var w = LlamaHubCache.WriteLlamaScope(Cache, repo, folder, hook, expansion * LlamaHubCache.DModel, threshold: 30, normIn: 8.0, seed: 21 + seed++);
            int d = LlamaHubCache.DModel, n = w.DSae;
            // get_llama_scope_config_from_hf (SAELens): jumprelu, no b_dec subtraction, hook = hook_point_in, these constants;
            // from_pretrained folds the input scaling (normalize_activations becomes none).
            var info = Info(spec);
            Assert.Equal(("jumprelu", "false", "none", hook, model), (info["architecture"], info["apply_b_dec_to_input"], info["normalize_activations"], info["hook_name"], info["model_name"]));
            Assert.Equal(("1024", "true", "cerebras/SlimPajama-627B", np), (info["context_size"], info["prepend_bos"], info["dataset_path"], info["neuronpedia_id"]));

            // By hand: the input scaled to norm √d_model on average, s = √d_model / dataset_average_activation_norm.in;
            // pre = s·x·encoder.weightᵀ + encoder.bias; a latent fires when pre > jump_relu_threshold·s (SAELens's scaled threshold).
            double s = Math.Sqrt(d) / w.NormIn, theta = w.Threshold * s;
            var x = acts[hook];
            int cutByTheta = 0, keptBelowRaw = 0;
            var expected = x.Select(row => Enumerable.Range(0, n).Select(j =>
            {
                double pre = w.EncB[j];
                for (int k = 0; k < d; k++) pre += s * row[k] * w.EncW[j * d + k];
                if (pre > 0 && pre <= theta) cutByTheta++;
                if (pre > theta && pre <= w.Threshold) keptBelowRaw++;
                return pre > theta ? (float)pre : 0f;
            }).ToArray()).ToArray();
            // The prompt has latents that ReLU keeps and θ cuts, and latents above θ but below the unscaled threshold.
            Assert.True(cutByTheta > 0 && keptBelowRaw > 0, $"{spec}: {cutByTheta} cut by θ, {keptBelowRaw} between θ and jump_relu_threshold");
            AssertClose(expected, Inspect(model, spec, n), spec);

            // Spliced into the model at its hook: with the error term added back the model is unchanged.
            var r = Eval(model, spec);
            Assert.Equal(hook, (string?)r["hook_name"]);
            Assert.True(Math.Abs((double)r["model_behavior_preservation"]!["kl_div_with_error_term"]!) < 1e-6, r.ToJsonString());
            Assert.True((double)r["model_behavior_preservation"]!["kl_div_with_sae"]! > 1e-3, r.ToJsonString());
        }
    }

    /// <summary>ReLU(pre) per position, pre = (x − b_dec·<paramref name="subtractBDec"/>)·encoder.weightᵀ + encoder.bias.</summary>
    private static double[][] ReluPre(float[][] x, LlamaHubCache.EncoderWeights w, bool subtractBDec) =>
        x.Select(row => Enumerable.Range(0, w.DSae).Select(j =>
        {
            double pre = w.EncB[j];
            for (int k = 0; k < row.Length; k++) pre += (row[k] - (subtractBDec ? w.DecB[k] : 0)) * w.EncW[j * row.Length + k];
            return Math.Max(pre, 0);
        }).ToArray()).ToArray();

    [Fact]
    public void Goodfire_andyrdt_and_sparsify_SAEs_load_eval_and_encode_the_Llama_activations_by_hand()
    {
        LlamaHubCache.WriteModel(Cache, "meta-llama/Llama-3.1-8B-Instruct");
        LlamaHubCache.WriteModel(Cache, "meta-llama/Llama-3.1-8B");
        const string it = "meta-llama/Llama-3.1-8B-Instruct";
        // No chat template: Llama 3's chat format written into the prompt; its special tokens are read as themselves.
        string chat = Path.Combine(_dir, "chat.safetensors");
        Ok("model", "run", "--model", it, "--prompt", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "--out", chat);
        using (var scope = NewDisposeScope())
            Assert.Equal([LlamaHubCache.Bos, 128006, 'u', 's', 'e', 'r', 128007, '\n', '\n', 'H', 'i', 128009],
                SafeTensors.Load(chat)["tokens"].data<long>().ToArray());

        // Goodfire (SAELens's fixed config for the 8B file): standard, no b_dec subtraction, blocks.19.hook_resid_post.
        var gf = LlamaHubCache.WriteGoodfire(Cache);
        const string gfSpec = "goodfire-llama-3.1-8b-instruct/layer_19";
        var info = Info(gfSpec);
        Assert.Equal(("standard", "false", "blocks.19.hook_resid_post", it, "llama3.1-8b-it/19-resid-post-gf"),
            (info["architecture"], info["apply_b_dec_to_input"], info["hook_name"], info["model_name"], info["neuronpedia_id"]));
        var x19 = Activations(it, "blocks.19.hook_resid_post")["blocks.19.hook_resid_post"];
        AssertClose(ReluPre(x19, gf, subtractBDec: false).Select(r => r.Select(v => (float)v).ToArray()).ToArray(), Inspect(it, gfSpec, gf.DSae), gfSpec);
        Assert.Equal("blocks.19.hook_resid_post", (string?)Eval(it, gfSpec)["hook_name"]);

        // andyrdt (dictionary_learning_1): BatchTopKSAE at inference keeps ReLU((x − b_dec)·W + b) above its threshold.
        const float threshold = 15;
        var aa = LlamaHubCache.WriteAndyrdt(Cache, layer: 3, trainer: 1, k: 16, threshold);
        const string aaSpec = "llama-3.1-8b-instruct-andyrdt/resid_post_layer_3_trainer_1";
        info = Info(aaSpec);
        Assert.Equal(("batchtopk", "16", "true", "blocks.3.hook_resid_post", it, "llama3.1-8b-it/3-resid-post-aa"),
            (info["architecture"], info["k"], info["apply_b_dec_to_input"], info["hook_name"], info["model_name"], info["neuronpedia_id"]));
        var x3 = Activations(it, "blocks.3.hook_resid_post")["blocks.3.hook_resid_post"];
        var relu3 = ReluPre(x3, aa, subtractBDec: true);
        Assert.Contains(relu3.SelectMany(r => r), v => v > 0 && v <= threshold);
        AssertClose(relu3.Select(r => r.Select(v => v > threshold ? (float)v : 0f).ToArray()).ToArray(), Inspect(it, aaSpec, aa.DSae), aaSpec);
        Assert.Equal("blocks.3.hook_resid_post", (string?)Eval(it, aaSpec)["hook_name"]);

        // sparsify by hf: folder: TopK of ReLU((x − b_dec)·encoder.weightᵀ + encoder.bias); layers.5 is blocks.5.hook_resid_post.
        const int k = 8;
        var sp = LlamaHubCache.WriteSparsify(Cache, layer: 5, k);
        const string spSpec = "hf:EleutherAI/sae-llama-3-8b-32x/layers.5";
        info = Info(spSpec);
        Assert.Equal(("topk", "8", "true", "blocks.5.hook_resid_post"), (info["architecture"], info["k"], info["apply_b_dec_to_input"], info["hook_name"]));
        var x5 = Activations("meta-llama/Llama-3.1-8B", "blocks.5.hook_resid_post")["blocks.5.hook_resid_post"];
        var top = ReluPre(x5, sp, subtractBDec: true).Select(r =>
        {
            double kth = r.OrderByDescending(v => v).ElementAt(k - 1);
            return r.Select(v => v >= kth ? (float)v : 0f).ToArray();
        }).ToArray();
        Assert.All(top, r => Assert.Equal(k, r.Count(v => v > 0)));
        AssertClose(top, Inspect("meta-llama/Llama-3.1-8B", spSpec, sp.DSae), spSpec);
        var r5 = Eval("meta-llama/Llama-3.1-8B", spSpec);
        Assert.Equal(k, (double)r5["sparsity"]!["l0"]!, 6);
    }

    [Theory]
    // pretrained_saes.yaml: llama_scope_lxa_8x's model is meta-llama/Llama-3.1-8B, Goodfire's 8B SAE's the -Instruct model.
    [InlineData("llama_scope_lxa_8x/l3a_8x", "meta-llama/Llama-3.1-8B")]
    [InlineData("goodfire-llama-3.1-8b-instruct/layer_19", "meta-llama/Llama-3.1-8B-Instruct")]
    public void Eval_with_a_dataset_but_no_model_names_the_model_the_release_was_trained_on(string sae, string model)
    {
        string data = Path.Combine(_dir, "data.txt");
        File.WriteAllText(data, "hello there\n");
        var (exit, _, err) = Sae("eval", "--sae", sae, "--dataset", data);
        Assert.NotEqual(0, exit);
        Assert.Contains($"--dataset needs --model, the model to run ({sae} was trained on {model}: --model {model})", err);
        Assert.False(Directory.Exists(Cache), "nothing is downloaded or cached for the message");
    }
}
