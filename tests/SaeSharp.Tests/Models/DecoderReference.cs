using static TorchSharp.torch;
using static SaeSharp.Tests.Models.Reference;

namespace SaeSharp.Tests.Models;

/// <summary>
/// Double-precision forward of HF LlamaForCausalLM / Qwen2 / Qwen3 / Gemma2ForCausalLM for one unpadded sequence,
/// written from the Hugging Face modeling files with loops over arrays (no model code, no torch ops).
/// </summary>
internal static class DecoderReference
{
    public sealed record Result(double[][] Logits, List<double[][]> ResidPost);

    static double Silu(double x) => x / (1 + Math.Exp(-x));

    /// <summary>LlamaRMSNorm (x/rms · w) or Gemma2RMSNorm (x/rms · (1 + w)).</summary>
    static double[] Rms(double[] x, double[] w, bool gemma, double eps = 1e-6)
    {
        double ms = x.Select(v => v * v).Average();
        double r = 1 / Math.Sqrt(ms + eps);
        return x.Select((v, i) => v * r * (gemma ? 1 + w[i] : w[i])).ToArray();
    }

    /// <summary>HF rope init: default, or llama3 (_compute_llama3_parameters) when <paramref name="llama3"/> is given.</summary>
    public static double[] InvFreq(int dim, double theta, (double Factor, double Low, double High, double OldCtx)? llama3)
    {
        var inv = new double[dim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            double f = 1.0 / Math.Pow(theta, 2.0 * i / dim);
            if (llama3 is { } r)
            {
                double wavelen = 2 * Math.PI / f;
                double lowWl = r.OldCtx / r.Low, highWl = r.OldCtx / r.High;
                double scaled = wavelen > lowWl ? f / r.Factor : f;
                bool medium = !(wavelen < highWl) && !(wavelen > lowWl);
                if (medium)
                {
                    double smooth = (r.OldCtx / wavelen - r.Low) / (r.High - r.Low);
                    scaled = (1 - smooth) * scaled / r.Factor + smooth * scaled;
                }
                f = scaled;
            }
            inv[i] = f;
        }
        return inv;
    }

    /// <summary>apply_rotary_pos_emb with rotate_half: pairs (i, i + d/2) rotated by pos · inv_freq[i].</summary>
    static double[] Rope(double[] u, int pos, double[] inv)
    {
        int half = inv.Length;
        var r = (double[])u.Clone();
        for (int i = 0; i < half; i++)
        {
            double a = pos * inv[i], c = Math.Cos(a), s = Math.Sin(a);
            r[i] = u[i] * c - u[i + half] * s;
            r[i + half] = u[i + half] * c + u[i] * s;
        }
        return r;
    }

    static double[]? Opt(Dictionary<string, Tensor> w, string key) => w.TryGetValue(key, out var t) ? V(t) : null;

    public static Result Forward(Dictionary<string, Tensor> w, DecoderSpec p, long[] tokens, double[] invFreq)
    {
        if (p.ModelType == "gemma3_text") throw new ArgumentException("no Gemma 3 here: tests/data/hf_models/gemma3 holds transformers' own reference");
        bool gemma = p.Gemma;
        int hd = p.Hd, nh = p.Heads, nkv = p.KvHeads, s = tokens.Length, d = p.Hidden;
        var emb = M(w["model.embed_tokens.weight"]);
        var x = new double[s][];
        for (int t = 0; t < s; t++)
        {
            x[t] = new double[d];
            for (int i = 0; i < d; i++) x[t][i] = emb[tokens[t], i] * (gemma ? Math.Sqrt(d) : 1);
        }
        double scale = gemma ? 1 / Math.Sqrt(p.QueryPreAttnScalar ?? hd) : 1 / Math.Sqrt(hd);
        var residPost = new List<double[][]>();
        for (int l = 0; l < p.Layers; l++)
        {
            string b = $"model.layers.{l}.";
            bool sliding = gemma && l % 2 == 0;
            var q = new double[s][][]; var k = new double[s][][]; var v = new double[s][][];
            for (int t = 0; t < s; t++)
            {
                var a = Rms(x[t], V(w[b + "input_layernorm.weight"]), gemma);
                var qa = Linear(a, M(w[b + "self_attn.q_proj.weight"]), Opt(w, b + "self_attn.q_proj.bias"));
                var ka = Linear(a, M(w[b + "self_attn.k_proj.weight"]), Opt(w, b + "self_attn.k_proj.bias"));
                var va = Linear(a, M(w[b + "self_attn.v_proj.weight"]), Opt(w, b + "self_attn.v_proj.bias"));
                q[t] = Enumerable.Range(0, nh).Select(h => qa.Skip(h * hd).Take(hd).ToArray()).ToArray();
                k[t] = Enumerable.Range(0, nkv).Select(h => ka.Skip(h * hd).Take(hd).ToArray()).ToArray();
                v[t] = Enumerable.Range(0, nkv).Select(h => va.Skip(h * hd).Take(hd).ToArray()).ToArray();
                if (p.ModelType == "qwen3")
                {
                    q[t] = q[t].Select(u => Rms(u, V(w[b + "self_attn.q_norm.weight"]), false)).ToArray();
                    k[t] = k[t].Select(u => Rms(u, V(w[b + "self_attn.k_norm.weight"]), false)).ToArray();
                }
                int pos = t;
                q[t] = q[t].Select(u => Rope(u, pos, invFreq)).ToArray();
                k[t] = k[t].Select(u => Rope(u, pos, invFreq)).ToArray();
            }
            // Eager attention: scores·scaling, soft cap, causal (and sliding-window) mask, softmax; kv head = h / (nh/nkv).
            var z = new double[s][];
            for (int t = 0; t < s; t++)
            {
                z[t] = new double[nh * hd];
                for (int h = 0; h < nh; h++)
                {
                    int g = h / (nh / nkv);
                    var sc = new List<(int J, double S)>();
                    for (int j = 0; j <= t; j++)
                    {
                        if (sliding && t - j >= p.SlidingWindow) continue;
                        double dot = 0;
                        for (int e = 0; e < hd; e++) dot += q[t][h][e] * k[j][g][e];
                        dot *= scale;
                        if (gemma && p.AttnSoftCap is double cap) dot = Math.Tanh(dot / cap) * cap;
                        sc.Add((j, dot));
                    }
                    double max = sc.Max(c => c.S), sum = sc.Sum(c => Math.Exp(c.S - max));
                    foreach (var (j, sj) in sc)
                        for (int e = 0; e < hd; e++) z[t][h * hd + e] += Math.Exp(sj - max) / sum * v[j][g][e];
                }
            }
            for (int t = 0; t < s; t++)
            {
                var attn = Linear(z[t], M(w[b + "self_attn.o_proj.weight"]), Opt(w, b + "self_attn.o_proj.bias"));
                double[] mlpIn;
                if (gemma)
                {
                    x[t] = Add(x[t], Rms(attn, V(w[b + "post_attention_layernorm.weight"]), true));
                    mlpIn = Rms(x[t], V(w[b + "pre_feedforward_layernorm.weight"]), true);
                }
                else
                {
                    x[t] = Add(x[t], attn);
                    mlpIn = Rms(x[t], V(w[b + "post_attention_layernorm.weight"]), false);
                }
                var gate = Linear(mlpIn, M(w[b + "mlp.gate_proj.weight"]), null);
                var up = Linear(mlpIn, M(w[b + "mlp.up_proj.weight"]), null);
                var act = gate.Select((gv, i) => (gemma ? GeluNew(gv) : Silu(gv)) * up[i]).ToArray();
                var mlp = Linear(act, M(w[b + "mlp.down_proj.weight"]), null);
                if (gemma) mlp = Rms(mlp, V(w[b + "post_feedforward_layernorm.weight"]), true);
                x[t] = Add(x[t], mlp);
            }
            residPost.Add(x.Select(r => (double[])r.Clone()).ToArray());
        }
        var f = x.Select(r => Rms(r, V(w["model.norm.weight"]), gemma)).ToArray();
        var logits = Unembed(f, w.TryGetValue("lm_head.weight", out var lm) ? M(lm) : emb);
        if (gemma && p.FinalSoftCap is double fc)
            logits = logits.Select(r => r.Select(z => Math.Tanh(z / fc) * fc).ToArray()).ToArray();
        return new Result(logits, residPost);
    }
}
