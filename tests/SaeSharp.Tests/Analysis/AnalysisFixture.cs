using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// A tiny GPT-NeoX (no position embedding, so <c>hook_embed</c> depends on the token alone) with a word-level byte-BPE
/// tokenizer.json, a text corpus, and an SAE on <c>hook_embed</c> whose encoder column i is the unit embedding direction
/// of a chosen word: feature i's activation on token u is relu(E[u]·E[t_i]/|E[t_i]|), known in closed form.
/// </summary>
internal sealed class AnalysisFixture : IDisposable
{
    public static readonly string[] Words =
    [
        "the", "cat", "sat", "on", "mat", "dog", "ran", "to", "park", "red", "blue", "green", "big", "small", "bird", "sang",
        "in", "tree", "fish", "swam", "sea", "and", "a", "sun", "moon", "star", "shone", "over", "hill", "river",
    ];

    public string Dir { get; } = Directory.CreateTempSubdirectory("analysis-").FullName;
    public string ModelDir { get; }
    public string SaeDir { get; }
    public string DataPath { get; }
    public Dictionary<string, int> Vocab { get; } = new();
    public const int DSae = 12;
    /// <summary>The word each feature's encoder points at (feature i ↔ ChosenWords[i]).</summary>
    public static readonly string[] ChosenWords = ["cat", "dog", "bird", "fish", "sun", "moon", "star", "tree", "red", "blue", "sea", "hill"];
    public int Bos => 0;

    public AnalysisFixture(int seed = 3)
    {
        ModelDir = Path.Combine(Dir, "model");
        WriteTokenizer(ModelDir);
        TinyModels.WriteNeoX(ModelDir, seed: seed, nLayer: 2, hiddenSize: 16, nHead: 2, vocab: Vocab.Count, maxPositions: 64, rotaryPct: 0.25);
        DataPath = Path.Combine(Dir, "corpus.txt");
        var rng = new Random(seed);
        var lines = Enumerable.Range(0, 60).Select(_ =>
            string.Join(" ", Enumerable.Range(0, 6 + rng.Next(6)).Select(_ => Words[rng.Next(Words.Length)])));
        File.WriteAllLines(DataPath, lines);
        SaeDir = Path.Combine(Dir, "sae");
        using var sae = EmbeddingSae();
        SaeLensFormat.Save(sae, SaeDir);
    }

    /// <summary>[vocab, d] embedding matrix as stored in the model file.</summary>
    public float[,] Embedding()
    {
        var w = SafeTensors.Load(Path.Combine(ModelDir, "model.safetensors"));
        try
        {
            var e = w["gpt_neox.embed_in.weight"];
            var a = e.data<float>().ToArray();
            int v = (int)e.shape[0], d = (int)e.shape[1];
            var r = new float[v, d];
            for (int i = 0; i < v; i++) for (int j = 0; j < d; j++) r[i, j] = a[i * d + j];
            return r;
        }
        finally
        {
            foreach (var t in w.Values) t.Dispose();
        }
    }

    /// <summary>Feature i's closed-form activation on token u: relu(E[u]·E[t_i]/|E[t_i]|), in double.</summary>
    public double[,] ExpectedActs()
    {
        var e = Embedding();
        int v = e.GetLength(0), d = e.GetLength(1);
        var r = new double[DSae, v];
        for (int i = 0; i < DSae; i++)
        {
            int t = Vocab["Ġ" + ChosenWords[i]];
            double norm = Math.Sqrt(Enumerable.Range(0, d).Sum(k => (double)e[t, k] * e[t, k]));
            for (int u = 0; u < v; u++)
            {
                double dot = 0;
                for (int k = 0; k < d; k++) dot += (double)e[u, k] * e[t, k];
                r[i, u] = Math.Max(0, dot / norm);
            }
        }
        return r;
    }

    private Sae EmbeddingSae()
    {
        var cfg = new SaeConfig { DIn = 16, DSae = DSae, ApplyBDecToInput = false };
        cfg.Metadata.HookName = "hook_embed";
        cfg.Metadata.ContextSize = 16;
        cfg.Metadata.ModelName = "tiny-neox";
        cfg.Metadata.Extra = new() { ["neuronpedia_id"] = System.Text.Json.JsonDocument.Parse("\"tiny-neox/0-embed\"").RootElement };
        var sae = SaeFactory.Create(cfg);
        var e = Embedding();
        using var _ = no_grad();
        var wenc = zeros(16, DSae);
        for (int i = 0; i < DSae; i++)
        {
            int t = Vocab["Ġ" + ChosenWords[i]];
            var col = tensor(Enumerable.Range(0, 16).Select(k => e[t, k]).ToArray());
            wenc[.., i] = col / col.norm();
        }
        sae.WEnc.copy_(wenc);
        sae.WDec.copy_(wenc.t());
        sae.BEnc.zero_();
        sae.BDec.zero_();
        return sae;
    }

    /// <summary>A byte-level BPE tokenizer.json whose merges build every word, with and without a leading space, as one token.</summary>
    private void WriteTokenizer(string dir)
    {
        Directory.CreateDirectory(dir);
        Vocab["<|endoftext|>"] = 0;
        var merges = new List<string>();
        void Add(string t) { if (!Vocab.ContainsKey(t)) Vocab[t] = Vocab.Count; }
        foreach (var c in "Ġ" + string.Concat(Words.SelectMany(w => w).Distinct().Order())) Add(c.ToString());
        foreach (var form in Words.Select(w => "Ġ" + w).Concat(Words))
        {
            for (int k = 2; k <= form.Length; k++)
            {
                string left = form[..(k - 1)], right = form[(k - 1)..k];
                string m = left + " " + right;
                if (!merges.Contains(m)) merges.Add(m);
                Add(form[..k]);
            }
        }
        var vocab = new JsonObject(Vocab.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject
            {
                ["id"] = 0, ["content"] = "<|endoftext|>", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            }),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)JsonValue.Create(m)).ToArray()),
            },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}""");
    }

    public void Dispose() => Directory.Delete(Dir, true);
}
