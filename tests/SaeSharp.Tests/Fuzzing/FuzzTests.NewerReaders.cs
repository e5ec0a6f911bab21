using System.Text;
using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Interop;
using SaeSharp.Tests.Saes;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Fuzzing;

/// <summary>
/// The readers added after the first fuzzing table (docs/fuzzing.md, "Newer readers"): whole cross-layer transcoders,
/// the newer model families' config.json and quantised tensors, the other SAE formats' metadata, <c>sae features</c>
/// folders as <c>sae dashboard</c> and <c>sae neuronpedia</c> read them, and <c>train_log.jsonl</c>. Same harness,
/// mutations and contract as the properties in FuzzTests.cs.
/// </summary>
public sealed partial class FuzzTests
{
    /// <summary>Copies the files of the test-data folder <paramref name="parts"/> into <paramref name="dir"/>.</summary>
    static void CopyData(string dir, params string[] parts) => CopyFolder(TestPaths.Data(parts), dir);

    /// <summary>Mutations of a safetensors file's JSON header only (its 8-byte length rewritten to match), so that cases
    /// reach the dtype, shape and offset checks and the readers behind them instead of stopping at the length check.</summary>
    static byte[] MutateSafetensorsHeader(byte[] file, Mutation[] ms)
    {
        long length = BitConverter.ToInt64(file, 0);
        byte[] header = Apply(file[8..(int)(8 + length)], ms);
        return [.. BitConverter.GetBytes((long)header.Length), .. header, .. file.AsSpan((int)(8 + length))];
    }

    /// <summary>Mutations of the data bytes of the tensors whose names <paramref name="select"/> picks only (their bytes
    /// concatenated, mutated, and written back at the same places; header and file length kept): values no writer
    /// produces, such as NaN or infinite scales, in tensors whose shapes are valid.</summary>
    static Func<byte[], Mutation[], byte[]> MutateTensorData(Func<string, bool> select) => (file, ms) =>
    {
        long length = BitConverter.ToInt64(file, 0);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(file, 8, (int)length))!.AsObject();
        var ranges = header.Where(kv => kv.Key != "__metadata__" && select(kv.Key))
            .Select(kv => (Start: 8 + (int)length + (int)kv.Value!["data_offsets"]![0]!, End: 8 + (int)length + (int)kv.Value!["data_offsets"]![1]!))
            .OrderBy(r => r.Start).ToList();
        byte[] data = [.. ranges.SelectMany(r => file[r.Start..r.End])];
        byte[] mutated = Apply(data, ms);
        byte[] result = (byte[])file.Clone();
        int at = 0;
        foreach (var (start, end) in ranges)
            for (int i = start; i < end; i++, at++) result[i] = at < mutated.Length ? mutated[at] : (byte)0;
        return result;
    };

    // ---- whole cross-layer transcoders ----

    static string WriteCircuitTracerClt(string dir)
    {
        CltReference.Random(layers: 3, features: 4, dModel: 3, seed: 1, threshold: true, skip: true).WriteCircuitTracer(dir, threshold: true);
        File.WriteAllText(Path.Combine(dir, SaeLensConversions.CircuitTracerConfigFile),
            "model_name: gpt2\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\nscan: null\n");
        return dir;
    }

    static void LoadClt(string file) => CrossLayerTranscoderLoader.Load(Path.GetDirectoryName(file)!).Dispose();

    [Fact]
    public void Clt_circuit_tracer_config_yaml() =>
        Fuzz("clt-config-yaml", dir => Path.Combine(WriteCircuitTracerClt(dir), "config.yaml"), LoadClt);

    [Fact]
    public void Clt_circuit_tracer_W_enc() =>
        Fuzz("clt-w-enc", dir => Path.Combine(WriteCircuitTracerClt(dir), "W_enc_1.safetensors"), LoadClt);

    [Fact]
    public void Clt_circuit_tracer_W_dec_header() =>
        Fuzz("clt-w-dec", dir => Path.Combine(WriteCircuitTracerClt(dir), "W_dec_0.safetensors"), LoadClt, MutateSafetensorsHeader);

    [Fact]
    public void Clt_gemma_scope_2_params() => Fuzz("clt-gemma-scope-2", dir =>
    {
        string folder = Path.Combine(dir, "gemma-scope-2-270m-pt", "clt", "width_16k_l0_small");
        CltReference.Random(layers: 3, features: 4, dModel: 3, seed: 2, threshold: true, skip: false).WriteGemmaScope2(folder);
        return Path.Combine(folder, "params_layer_1.safetensors");
    }, LoadClt);

    // ---- model config.json and quantised tensors of the newer families ----

    static void LoadModel(string file) => ModelLoader.FromPretrained(Path.GetDirectoryName(file)!).Dispose();

    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen3_moe")]
    [InlineData("deepseek_v3-fp8")]
    [InlineData("gpt_oss-mxfp4")]
    public void Model_config_json_of_newer_families(string family) => Fuzz($"model-config-{family}", dir =>
    {
        CopyData(dir, "hf_models", family);
        return Path.Combine(dir, "config.json");
    }, LoadModel);

    /// <summary>DeepSeek-V3's FP8 block-scaled weights (<c>weight_scale_inv</c>) and gpt-oss's MXFP4 experts
    /// (<c>*_blocks</c>, <c>*_scales</c>): the safetensors header (dtypes, shapes, offsets) mutated.</summary>
    [Theory]
    [InlineData("deepseek_v3-fp8")]
    [InlineData("gpt_oss-mxfp4")]
    public void Quantised_weights_header(string family) => Fuzz($"quantised-header-{family}", dir =>
    {
        CopyData(dir, "hf_models", family);
        return Path.Combine(dir, "model.safetensors");
    }, LoadModel, MutateSafetensorsHeader);

    /// <summary>The same files with the quantised tensors' bytes mutated only (scales, FP8 values, MXFP4 blocks).</summary>
    [Theory]
    [InlineData("deepseek_v3-fp8")]
    [InlineData("gpt_oss-mxfp4")]
    public void Quantised_weights_data(string family) => Fuzz($"quantised-data-{family}", dir =>
    {
        CopyData(dir, "hf_models", family);
        return Path.Combine(dir, "model.safetensors");
    }, LoadModel, MutateTensorData(k => k.EndsWith("_scale_inv", StringComparison.Ordinal) || k.EndsWith("_blocks", StringComparison.Ordinal)
        || k.EndsWith("_scales", StringComparison.Ordinal) || family.StartsWith("deepseek", StringComparison.Ordinal) && k.Contains("mlp.", StringComparison.Ordinal)));

    // ---- the other SAE formats' metadata ----

    [Theory]
    [InlineData("config.json")]
    [InlineData("ae.pt")]
    public void Dictionary_learning(string file) => Fuzz($"dictionary-learning-{file}", dir =>
    {
        CopyData(dir, "dictionary_learning", "AutoEncoderTopK");
        File.Delete(Path.Combine(dir, "reference.safetensors"));
        return Path.Combine(dir, file);
    }, p => DictionaryLearning.Load(Path.GetDirectoryName(p)!).Dispose());

    [Fact]
    public void Sparsify_cfg_json() => Fuzz("sparsify-cfg", dir =>
    {
        foreach (var t in SparsifyTests.WriteSae(dir).Values) t.Dispose();
        return Path.Combine(dir, "cfg.json");
    }, p => Sparsify.Load(Path.GetDirectoryName(p)!).Dispose());

    [Fact]
    public void OpenAi_sae_pt() => Fuzz("openai-sae", dir =>
    {
        string p = Path.Combine(dir, "v5_32k", "autoencoders", "6.pt");
        var sd = OpenAiSaeTests.RandomStateDict(d: 4, n: 6, seed: 1);
        OpenAiSaeTests.WriteCheckpoint(p, sd, "TopK", k: 2, normalize: true);
        foreach (var (_, t) in sd) t.Dispose();
        return p;
    }, p => OpenAiSae.Load(p).Dispose());

    [Fact]
    public void Llama_scope_hyperparams_json() => Fuzz("llama-scope-hyperparams", dir =>
    {
        Directory.CreateDirectory(Path.Combine(dir, "checkpoints"));
        var g = new TorchSharp.torch.Generator(3);
        using (var a = randn(8, 4, generator: g)) using (var b = randn(8, generator: g)) using (var c = randn(4, 8, generator: g)) using (var d = randn(4, generator: g))
            SafeTensors.Save(Path.Combine(dir, LlamaScope.WeightsFile), new Dictionary<string, Tensor> { ["encoder.weight"] = a, ["encoder.bias"] = b, ["decoder.weight"] = c, ["decoder.bias"] = d });
        string p = Path.Combine(dir, LlamaScope.HyperparamsFile);
        File.WriteAllText(p, """
            {"d_model": 4, "expansion_factor": 2, "d_sae": 8, "hook_point_in": "blocks.15.hook_resid_post", "hook_point_out": "blocks.15.hook_resid_post",
             "use_decoder_bias": true, "apply_decoder_bias_to_pre_encoder": false, "norm_activation": "dataset-wise", "act_fn": "jumprelu",
             "jump_relu_threshold": 0.3, "dataset_average_activation_norm": {"in": 2.0, "out": 2.0}}
            """);
        return p;
    }, p => LlamaScope.Load(Path.GetDirectoryName(p)!).Dispose());

    [Fact]
    public void Gemma_scope_2_config_json() => Fuzz("gemma-scope-2-config", dir =>
    {
        string folder = Path.Combine(dir, "gemma-scope-2-270m-pt", "resid_post", "layer_12_width_16k_l0_small");
        CopyData(folder, "saelens_conversions", "gemma_scope_2", "resid_post", "layer_12_width_16k_l0_small");
        return Path.Combine(folder, "config.json");
    }, p => GemmaScope.LoadScope2(Path.GetDirectoryName(p)!).Dispose());

    [Fact]
    public void Temporal_conf_yaml() => Fuzz("temporal-conf-yaml", dir =>
    {
        string folder = Path.Combine(dir, "layer_3", "temporal");
        CopyData(folder, "temporal_sae", "tied_topk", "canrager", "layer_3", "temporal");
        return Path.Combine(folder, SaeLensConversions.TemporalConfigFile);
    }, p => SaeLensConversions.LoadTemporal(Path.GetDirectoryName(p)!).Dispose());

    // ---- sae features folders, read by sae dashboard and sae neuronpedia ----

    /// <summary>Reads the folder as <c>sae dashboard</c> (the report, then the site) and <c>sae neuronpedia</c> (the
    /// export, token strings from tokens.json) do, writing beside the case.</summary>
    static void ReadFeatureFolder(string file)
    {
        string dir = Path.GetDirectoryName(file)!, outDir = Path.Combine(dir, "..", "out");
        DashboardWriter.Write(FeatureReport.Load(dir), Path.Combine(outDir, "site"));
        NeuronpediaExport.Write(dir, Path.Combine(outDir, "neuronpedia"), new NeuronpediaExportOptions { FeaturesPerBatch = 2 });
    }

    [Theory]
    [InlineData(FeatureReport.FeaturesFile)]
    [InlineData(FeatureReport.SummaryFile)]
    [InlineData(FeatureReport.TokensFile)]
    public void Feature_folders(string file) => Fuzz($"features-{file}", dir =>
    {
        string folder = Path.Combine(dir, "features");
        CopyData(folder, "neuronpedia", "features");
        return Path.Combine(folder, file);
    }, ReadFeatureFolder);

    // ---- crosscoders (the science-of-finetuning fork's files) ----

    /// <summary>Loads the crosscoder and runs it on one row, so that a shape or option the loader let through is caught
    /// where it would first be used.</summary>
    static void LoadAndRunCrossCoder(string file)
    {
        using var cc = CrossCoderFormat.Load(Path.GetDirectoryName(file)!);
        using var x = randn(2, cc.Cfg.NumLayers, cc.Cfg.ActivationDim);
        using var y = cc.forward(x);
    }

    [Theory]
    [InlineData("cc_hub", "config.json")]
    [InlineData("cc_hub", "model.safetensors")]
    [InlineData("cc_encoder_layers", "config.json")]
    [InlineData("cc_num_decoder_layers", "config.json")]
    [InlineData("cc_batchtopk", "ae.pt")]
    [InlineData("cc_decoupled", "ae.pt")]
    public void Crosscoder_files(string folder, string file) => Fuzz($"crosscoder-{folder}-{file}", dir =>
    {
        CopyData(dir, "crosscoder", folder);
        return Path.Combine(dir, file);
    }, LoadAndRunCrossCoder, file.EndsWith(".safetensors", StringComparison.Ordinal) ? MutateSafetensorsHeader : null);

    // ---- train_log.jsonl, read by sae plot-log ----

    [Fact]
    public void Train_log_jsonl() => Fuzz("train-log", dir =>
    {
        string p = Path.Combine(dir, TrainLogFile.FileName);
        File.WriteAllText(p, string.Join("\n",
            """{"step":1,"tokens":100,"sae":"topk","lr":0.001,"losses":{"overall_loss":10,"mse_loss":9},"l0":8,"dead_fraction":0,"explained_variance":0.5}""",
            """{"step":1,"sae":"topk","event":"resampled_dead_latents","count":3}""",
            """{"step":2,"tokens":200,"sae":"topk","lr":0.001,"losses":{"overall_loss":"NaN","mse_loss":5},"l0":8,"dead_fraction":0.125,"explained_variance":"-Infinity"}""",
            """{"step":3,"tokens":300,"sae":"topk","lr":0.001,"losses":{"overall_loss":7,"mse_loss":5},"l0":7}""") + "\n");
        return p;
    }, p => TrainingCurves.Render(TrainLogFile.Read(p), 400, 300));
}
