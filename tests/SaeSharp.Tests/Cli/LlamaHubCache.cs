using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// A Hugging Face hub cache (<c>models--ORG--NAME/refs/main</c>, <c>snapshots/COMMIT/…</c>, as
/// <c>huggingface-cli download</c> leaves it) holding a tiny Llama 3.1 checkpoint as <c>meta-llama/Llama-3.1-8B</c> and
/// <c>meta-llama/Llama-3.1-8B-Instruct</c> (LlamaForCausalLM, rope_scaling llama3, BOS 128000 / EOS 128001, vocabulary
/// 128256), and tiny SAEs in the on-disk format of each Llama release: Llama Scope (<c>hyperparams.json</c> +
/// <c>checkpoints/final.safetensors</c>), Goodfire (a <c>.pth</c> state dict), andyrdt (dictionary_learning's
/// <c>ae.pt</c> + <c>config.json</c>) and EleutherAI sparsify (<c>layers.N/cfg.json</c> + <c>sae.safetensors</c>).
/// </summary>
internal static class LlamaHubCache
{
    public const string Commit = "0e9e39f249a16976918f6564b8830bc894c89659";
    public const int DModel = 32, Layers = 20, Vocab = 128256, Bos = 128000, Eos = 128001;

    /// <summary>The snapshot folder of <paramref name="repo"/> in <paramref name="cache"/>, created with its <c>refs/main</c>.</summary>
    public static string Snapshot(string cache, string repo)
    {
        string storage = Path.Combine(cache, "models--" + repo.Replace("/", "--", StringComparison.Ordinal));
        Directory.CreateDirectory(Path.Combine(storage, "refs"));
        File.WriteAllText(Path.Combine(storage, "refs", "main"), Commit);
        return Directory.CreateDirectory(Path.Combine(storage, "snapshots", Commit)).FullName;
    }

    /// <summary>A byte-level BPE tokenizer.json in Llama 3's shape (its split regex, ByteLevel, the TemplateProcessing
    /// post-processor that puts <c>&lt;|begin_of_text|&gt;</c> first): the 256 byte tokens at their byte's id, no merges, and
    /// the 256 special tokens at Llama 3's ids.</summary>
    public static string TokenizerJson()
    {
        var vocab = new JsonObject();
        // GPT-2's byte → unicode table: printable bytes map to themselves, the rest to 256 + n.
        var bs = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToList();
        int extra = 0;
        var chars = new string[256];
        for (int b = 0; b < 256; b++) chars[b] = bs.Contains(b) ? ((char)b).ToString() : ((char)(256 + extra++)).ToString();
        for (int b = 0; b < 256; b++) vocab[chars[b]] = b;
        // Ids 256..127999 are the real file's merged tokens: here unreachable fillers (no merges make them), so that
        // every id of the model's vocabulary has a token, as in the real file.
        for (int id = 256; id < Bos; id++) vocab[$"<filler_{id}>"] = id;
        JsonObject Special(int id, string content) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
            ["normalized"] = false, ["special"] = true,
        };
        var tok = new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null,
            ["added_tokens"] = new JsonArray(Enumerable.Range(Bos, Vocab - Bos).Select(id => (JsonNode)Special(id, id switch
            {
                Bos => "<|begin_of_text|>", Eos => "<|end_of_text|>", 128006 => "<|start_header_id|>", 128007 => "<|end_header_id|>",
                128008 => "<|eom_id|>", 128009 => "<|eot_id|>", _ => $"<|reserved_special_token_{(id < 128006 ? id - 128002 : id - 128006)}|>",
            })).ToArray()),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split",
                        ["pattern"] = new JsonObject { ["Regex"] = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" },
                        ["behavior"] = "Isolated", ["invert"] = false,
                    },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
            },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["processors"] = new JsonArray(
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = false, ["use_regex"] = true },
                    new JsonObject
                    {
                        ["type"] = "TemplateProcessing",
                        ["single"] = new JsonArray(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<|begin_of_text|>", ["type_id"] = 0 } },
                            new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                        ["pair"] = new JsonArray(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<|begin_of_text|>", ["type_id"] = 0 } },
                            new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                            new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<|begin_of_text|>", ["type_id"] = 1 } },
                            new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
                        ["special_tokens"] = new JsonObject
                        {
                            ["<|begin_of_text|>"] = new JsonObject { ["id"] = "<|begin_of_text|>", ["ids"] = new JsonArray(Bos), ["tokens"] = new JsonArray("<|begin_of_text|>") },
                        },
                    }),
            },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = true,
                ["vocab"] = vocab, ["merges"] = new JsonArray(),
            },
        };
        return tok.ToJsonString();
    }

    /// <summary>Writes the tiny Llama 3.1 model as <paramref name="repo"/> (with <paramref name="tokenizerFolder"/>'s
    /// tokenizer.json / tokenizer_config.json when given, else <see cref="TokenizerJson"/>).</summary>
    public static string WriteModel(string cache, string repo, string? tokenizerFolder = null)
    {
        string snap = Snapshot(cache, repo);
        TinyDecoders.Write(snap, new DecoderSpec
        {
            ModelType = "llama", Layers = Layers, Hidden = DModel, Heads = 4, KvHeads = 2, Intermediate = 64, Vocab = Vocab,
            RopeTheta = 500000,
            RopeScaling = new JsonObject
            {
                ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
                ["original_max_position_embeddings"] = 8192, ["rope_type"] = "llama3",
            },
        });
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(snap, "config.json")))!.AsObject();
        config["bos_token_id"] = Bos;
        config["eos_token_id"] = repo.EndsWith("-Instruct", StringComparison.Ordinal) ? new JsonArray(Eos, 128008, 128009) : Eos;
        config["max_position_embeddings"] = 131072;
        config["_name_or_path"] = repo;
        File.WriteAllText(Path.Combine(snap, "config.json"), config.ToJsonString());
        File.WriteAllText(Path.Combine(snap, "generation_config.json"),
            $$"""{"bos_token_id": {{Bos}}, "do_sample": true, "eos_token_id": {{Eos}}, "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.43.0.dev0"}""");
        if (tokenizerFolder is null)
        {
            File.WriteAllText(Path.Combine(snap, "tokenizer.json"), TokenizerJson());
            File.WriteAllText(Path.Combine(snap, "tokenizer_config.json"),
                """{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}""");
        }
        else
            foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
                File.Copy(Path.Combine(tokenizerFolder, f), Path.Combine(snap, f), overwrite: true);
        return snap;
    }

    static float[] Rand(Random rng, int n, double scale) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();

    /// <summary>The raw arrays of a Llama Scope SAE as written: encoder.weight [d_sae, d_model], encoder.bias,
    /// decoder.weight [d_model, d_sae], decoder.bias.</summary>
    public sealed record LlamaScopeWeights(float[] EncW, float[] EncB, float[] DecW, float[] DecB, double Threshold, double NormIn, int DSae);

    /// <summary>A Llama Scope SAE at <paramref name="hook"/> as fnlp's repos hold it, in <paramref name="repo"/>/<paramref name="folder"/>.</summary>
    public static LlamaScopeWeights WriteLlamaScope(string cache, string repo, string folder, string hook, int dSae = 8 * DModel,
        double threshold = 0.05, double normIn = 4.0, int seed = 13)
    {
        string dir = Path.Combine(Snapshot(cache, repo), folder);
        Directory.CreateDirectory(Path.Combine(dir, "checkpoints"));
        var rng = new Random(seed);
        var w = new LlamaScopeWeights(Rand(rng, dSae * DModel, 1.0), Rand(rng, dSae, 0.2), Rand(rng, DModel * dSae, 0.3), Rand(rng, DModel, 0.1), threshold, normIn, dSae);
        using (var scope = NewDisposeScope())
            SafeTensors.Save(Path.Combine(dir, "checkpoints", "final.safetensors"), new Dictionary<string, Tensor>
            {
                ["encoder.weight"] = tensor(w.EncW, [dSae, DModel]), ["encoder.bias"] = tensor(w.EncB, [dSae]),
                ["decoder.weight"] = tensor(w.DecW, [DModel, dSae]), ["decoder.bias"] = tensor(w.DecB, [DModel]),
            });
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        // The keys of fnlp's hyperparams.json files.
        File.WriteAllText(Path.Combine(dir, "hyperparams.json"), $$"""
            {"d_model": {{DModel}}, "expansion_factor": {{dSae / DModel}}, "d_sae": {{dSae}}, "hook_point_in": "{{hook}}", "hook_point_out": "{{hook}}",
             "use_decoder_bias": true, "apply_decoder_bias_to_pre_encoder": false, "norm_activation": "dataset-wise",
             "sparsity_include_decoder_norm": true, "act_fn": "jumprelu", "jump_relu_threshold": {{threshold.ToString(inv)}},
             "dataset_average_activation_norm": {"in": {{normIn.ToString(inv)}}, "out": {{normIn.ToString(inv)}}}, "top_k": 50}
            """);
        return w;
    }

    /// <summary>An SAE's raw arrays as written: the encoder [d_sae, d_model] (PyTorch Linear layout), its bias, the
    /// decoder bias.</summary>
    public sealed record EncoderWeights(float[] EncW, float[] EncB, float[] DecB, int DSae);

    /// <summary>Goodfire's Llama-3.1-8B-Instruct SAE file (<c>encoder_linear</c> / <c>decoder_linear</c> state dict).</summary>
    public static EncoderWeights WriteGoodfire(string cache, int dSae = 4 * DModel, int seed = 17)
    {
        string snap = Snapshot(cache, "Goodfire/Llama-3.1-8B-Instruct-SAE-l19");
        var rng = new Random(seed);
        var w = new EncoderWeights(Rand(rng, dSae * DModel, 0.5), Rand(rng, dSae, 20), Rand(rng, DModel, 0.1), dSae);
        using var scope = NewDisposeScope();
        TorchSave.SaveStateDict(Path.Combine(snap, "Llama-3.1-8B-Instruct-SAE-l19.pth"),
        [
            new("encoder_linear.weight", tensor(w.EncW, [dSae, DModel])),
            new("encoder_linear.bias", tensor(w.EncB, [dSae])),
            new("decoder_linear.weight", tensor(Rand(rng, DModel * dSae, 0.3), [DModel, dSae])),
            new("decoder_linear.bias", tensor(w.DecB, [DModel])),
        ]);
        return w;
    }

    /// <summary>andyrdt's <c>resid_post_layer_L/trainer_T</c> folder: dictionary_learning's BatchTopKSAE <c>ae.pt</c>
    /// (encoder.weight, encoder.bias, decoder.weight, b_dec, k, threshold) and the <c>config.json</c> its trainer writes.</summary>
    public static EncoderWeights WriteAndyrdt(string cache, int layer, int trainer, int k, float threshold, int dSae = 4 * DModel, int seed = 23)
    {
        string dir = Path.Combine(Snapshot(cache, "andyrdt/saes-llama-3.1-8b-instruct"), $"resid_post_layer_{layer}", $"trainer_{trainer}");
        Directory.CreateDirectory(dir);
        var rng = new Random(seed);
        var w = new EncoderWeights(Rand(rng, dSae * DModel, 0.5), Rand(rng, dSae, 0.1), Rand(rng, DModel, 20), dSae);
        using (var scope = NewDisposeScope())
            TorchSave.SaveStateDict(Path.Combine(dir, "ae.pt"),
            [
                new("b_dec", tensor(w.DecB, [DModel])),
                new("k", tensor((long)k)),
                new("threshold", tensor(threshold)),
                new("encoder.weight", tensor(w.EncW, [dSae, DModel])),
                new("encoder.bias", tensor(w.EncB, [dSae])),
                new("decoder.weight", tensor(Rand(rng, DModel * dSae, 0.3), [DModel, dSae])),
            ], ["", "encoder", "decoder"]);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"trainer": {"trainer_class": "BatchTopKTrainer", "dict_class": "BatchTopKSAE", "lr": 0.0002, "steps": 244140, "auxk_alpha": 0.03125,
              "warmup_steps": 1000, "decay_start": null, "threshold_beta": 0.999, "threshold_start_step": 1000, "top_k_aux": {{DModel / 2}},
              "seed": 0, "activation_dim": {{DModel}}, "dict_size": {{dSae}}, "k": {{k}}, "device": "cuda:0", "layer": {{layer}},
              "lm_name": "meta-llama/Llama-3.1-8B-Instruct", "wandb_name": "BatchTopKTrainer-meta-llama/Llama-3.1-8B-Instruct-resid_post_layer_{{layer}}",
              "submodule_name": "resid_post_layer_{{layer}}"},
             "buffer": {"d_submodule": {{DModel}}, "io": "out", "n_ctxs": 1024, "ctx_len": 1024, "refresh_batch_size": 64, "out_batch_size": 8192, "device": "cuda:0"} }
            """);
        return w;
    }

    /// <summary>EleutherAI sparsify's <c>layers.N</c> folder (cfg.json + sae.safetensors), TopK.</summary>
    public static EncoderWeights WriteSparsify(string cache, int layer, int k = 8, int seed = 19)
    {
        string dir = Path.Combine(Snapshot(cache, "EleutherAI/sae-llama-3-8b-32x"), $"layers.{layer}");
        Directory.CreateDirectory(dir);
        int dSae = 4 * DModel;
        var rng = new Random(seed);
        var w = new EncoderWeights(Rand(rng, dSae * DModel, 0.5), Rand(rng, dSae, 0.1), Rand(rng, DModel, 20), dSae);
        File.WriteAllText(Path.Combine(dir, "cfg.json"),
            $$"""{"expansion_factor": 4, "normalize_decoder": true, "num_latents": 0, "k": {{k}}, "multi_topk": false, "d_in": {{DModel}}}""");
        using var scope = NewDisposeScope();
        SafeTensors.Save(Path.Combine(dir, "sae.safetensors"), new Dictionary<string, Tensor>
        {
            ["encoder.weight"] = tensor(w.EncW, [dSae, DModel]), ["encoder.bias"] = tensor(w.EncB, [dSae]),
            ["W_dec"] = tensor(Rand(rng, dSae * DModel, 0.3), [dSae, DModel]), ["b_dec"] = tensor(w.DecB, [DModel]),
        });
        return w;
    }
}
