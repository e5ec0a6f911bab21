using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// Plain double-precision forward passes written with loops over arrays, independent of the model code
/// and of torch ops, for one unpadded sequence. Weights come straight from the checkpoint dictionary.
/// </summary>
internal static class Reference
{
    public static double[,] M(Tensor t)
    {
        var c = t.to(ScalarType.Float64).contiguous();
        var data = c.data<double>().ToArray();
        long r = c.shape[0], k = c.shape[1];
        var m = new double[r, k];
        for (int i = 0; i < r; i++) for (int j = 0; j < k; j++) m[i, j] = data[i * k + j];
        return m;
    }

    public static double[] V(Tensor t) => t.to(ScalarType.Float64).contiguous().data<double>().ToArray();

    public static double[] LayerNorm(double[] x, double[] w, double[] b, double eps = 1e-5)
    {
        double mean = x.Average();
        double var = x.Select(v => (v - mean) * (v - mean)).Average();
        return x.Select((v, i) => (v - mean) / Math.Sqrt(var + eps) * w[i] + b[i]).ToArray();
    }

    /// <summary>x·W + b with W stored [in, out] (GPT-2 Conv1D).</summary>
    public static double[] Conv1D(double[] x, double[,] w, double[] b)
    {
        var y = (double[])b.Clone();
        for (int o = 0; o < y.Length; o++) for (int i = 0; i < x.Length; i++) y[o] += x[i] * w[i, o];
        return y;
    }

    /// <summary>x·Wᵀ + b with W stored [out, in] (torch Linear).</summary>
    public static double[] Linear(double[] x, double[,] w, double[]? b)
    {
        var y = b is null ? new double[w.GetLength(0)] : (double[])b.Clone();
        for (int o = 0; o < y.Length; o++) for (int i = 0; i < x.Length; i++) y[o] += x[i] * w[o, i];
        return y;
    }

    public static double GeluNew(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    public static double GeluErf(double x) => 0.5 * x * (1 + Erf(x / Math.Sqrt(2)));

    // Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
    private static double Erf(double x)
    {
        double s = Math.Sign(x);
        x = Math.Abs(x);
        double t = 1 / (1 + 0.3275911 * x);
        double y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.Exp(-x * x);
        return s * y;
    }

    public static double[] Add(double[] a, double[] b) => a.Select((v, i) => v + b[i]).ToArray();

    /// <summary>Causal multi-head attention over q[t][h][d], k, v; returns z[t] concatenated over heads.</summary>
    public static double[][] Attention(double[][][] q, double[][][] k, double[][][] v)
    {
        int s = q.Length, nh = q[0].Length, hd = q[0][0].Length;
        var z = new double[s][];
        for (int t = 0; t < s; t++)
        {
            z[t] = new double[nh * hd];
            for (int h = 0; h < nh; h++)
            {
                var scores = new double[t + 1];
                for (int j = 0; j <= t; j++)
                {
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += q[t][h][d] * k[j][h][d];
                    scores[j] = dot / Math.Sqrt(hd);
                }
                double max = scores.Max();
                var e = scores.Select(x => Math.Exp(x - max)).ToArray();
                double sum = e.Sum();
                for (int j = 0; j <= t; j++)
                    for (int d = 0; d < hd; d++)
                        z[t][h * hd + d] += e[j] / sum * v[j][h][d];
            }
        }
        return z;
    }

    public static double[][] Unembed(double[][] x, double[,] wU)
    {
        return x.Select(row => Linear(row, wU, null)).ToArray();
    }

    /// <summary>HF GPT2LMHeadModel forward (keys with the transformer. prefix).</summary>
    public static double[][] Gpt2(Dictionary<string, Tensor> w, int nLayer, int nHead, long[] tokens, Func<double, double> act)
    {
        var wte = M(w["transformer.wte.weight"]);
        var wpe = M(w["transformer.wpe.weight"]);
        int d = wte.GetLength(1), hd = d / nHead, s = tokens.Length;
        var x = new double[s][];
        for (int t = 0; t < s; t++)
        {
            x[t] = new double[d];
            for (int i = 0; i < d; i++) x[t][i] = wte[tokens[t], i] + wpe[t, i];
        }
        for (int l = 0; l < nLayer; l++)
        {
            string p = $"transformer.h.{l}.";
            var q = new double[s][][]; var k = new double[s][][]; var v = new double[s][][];
            for (int t = 0; t < s; t++)
            {
                var a = LayerNorm(x[t], V(w[p + "ln_1.weight"]), V(w[p + "ln_1.bias"]));
                var qkv = Conv1D(a, M(w[p + "attn.c_attn.weight"]), V(w[p + "attn.c_attn.bias"]));
                // GPT-2: [q | k | v], each d wide, head h at columns h·hd..(h+1)·hd.
                q[t] = Enumerable.Range(0, nHead).Select(h => qkv.Skip(h * hd).Take(hd).ToArray()).ToArray();
                k[t] = Enumerable.Range(0, nHead).Select(h => qkv.Skip(d + h * hd).Take(hd).ToArray()).ToArray();
                v[t] = Enumerable.Range(0, nHead).Select(h => qkv.Skip(2 * d + h * hd).Take(hd).ToArray()).ToArray();
            }
            var z = Attention(q, k, v);
            for (int t = 0; t < s; t++)
            {
                var attn = Conv1D(z[t], M(w[p + "attn.c_proj.weight"]), V(w[p + "attn.c_proj.bias"]));
                x[t] = Add(x[t], attn);
                var b = LayerNorm(x[t], V(w[p + "ln_2.weight"]), V(w[p + "ln_2.bias"]));
                var pre = Conv1D(b, M(w[p + "mlp.c_fc.weight"]), V(w[p + "mlp.c_fc.bias"]));
                var mlp = Conv1D(pre.Select(act).ToArray(), M(w[p + "mlp.c_proj.weight"]), V(w[p + "mlp.c_proj.bias"]));
                x[t] = Add(x[t], mlp);
            }
        }
        var f = x.Select(r => LayerNorm(r, V(w["transformer.ln_f.weight"]), V(w["transformer.ln_f.bias"]))).ToArray();
        return Unembed(f, wte);
    }

    /// <summary>HF GPTNeoXForCausalLM forward (keys with the gpt_neox. prefix); rotary written pair by pair.</summary>
    public static double[][] NeoX(Dictionary<string, Tensor> w, int nLayer, int nHead, double rotaryPct, bool parallel, long[] tokens, Func<double, double> act)
    {
        var emb = M(w["gpt_neox.embed_in.weight"]);
        int d = emb.GetLength(1), hd = d / nHead, s = tokens.Length;
        int rot = (int)(hd * rotaryPct), half = rot / 2;
        var x = new double[s][];
        for (int t = 0; t < s; t++)
        {
            x[t] = new double[d];
            for (int i = 0; i < d; i++) x[t][i] = emb[tokens[t], i];
        }
        double[] Rotate(double[] u, int pos)
        {
            var r = (double[])u.Clone();
            for (int i = 0; i < half; i++)
            {
                double theta = pos * Math.Pow(10000, -2.0 * i / rot);
                double c = Math.Cos(theta), sn = Math.Sin(theta);
                r[i] = u[i] * c - u[i + half] * sn;
                r[i + half] = u[i + half] * c + u[i] * sn;
            }
            return r;
        }
        for (int l = 0; l < nLayer; l++)
        {
            string p = $"gpt_neox.layers.{l}.";
            var q = new double[s][][]; var k = new double[s][][]; var v = new double[s][][];
            for (int t = 0; t < s; t++)
            {
                var a = LayerNorm(x[t], V(w[p + "input_layernorm.weight"]), V(w[p + "input_layernorm.bias"]));
                var qkv = Linear(a, M(w[p + "attention.query_key_value.weight"]), V(w[p + "attention.query_key_value.bias"]));
                // NeoX: head h owns rows h·3hd..(h+1)·3hd, split as [q | k | v].
                q[t] = Enumerable.Range(0, nHead).Select(h => Rotate(qkv.Skip(h * 3 * hd).Take(hd).ToArray(), t)).ToArray();
                k[t] = Enumerable.Range(0, nHead).Select(h => Rotate(qkv.Skip(h * 3 * hd + hd).Take(hd).ToArray(), t)).ToArray();
                v[t] = Enumerable.Range(0, nHead).Select(h => qkv.Skip(h * 3 * hd + 2 * hd).Take(hd).ToArray()).ToArray();
            }
            var z = Attention(q, k, v);
            for (int t = 0; t < s; t++)
            {
                var attn = Linear(z[t], M(w[p + "attention.dense.weight"]), V(w[p + "attention.dense.bias"]));
                var mlpIn = parallel ? x[t] : Add(x[t], attn);
                var b = LayerNorm(mlpIn, V(w[p + "post_attention_layernorm.weight"]), V(w[p + "post_attention_layernorm.bias"]));
                var pre = Linear(b, M(w[p + "mlp.dense_h_to_4h.weight"]), V(w[p + "mlp.dense_h_to_4h.bias"]));
                var mlp = Linear(pre.Select(act).ToArray(), M(w[p + "mlp.dense_4h_to_h.weight"]), V(w[p + "mlp.dense_4h_to_h.bias"]));
                x[t] = Add(Add(x[t], attn), mlp);
            }
        }
        var f = x.Select(r => LayerNorm(r, V(w["gpt_neox.final_layer_norm.weight"]), V(w["gpt_neox.final_layer_norm.bias"]))).ToArray();
        return Unembed(f, M(w["embed_out.weight"]));
    }

    public static void AssertClose(double[][] expected, Tensor actual, double atol)
    {
        var a = actual.to(ScalarType.Float64).contiguous();
        Assert.Equal(expected.Length, (int)a.shape[0]);
        var data = a.data<double>().ToArray();
        int v = expected[0].Length;
        for (int t = 0; t < expected.Length; t++)
            for (int j = 0; j < v; j++)
                Assert.True(Math.Abs(expected[t][j] - data[t * v + j]) <= atol,
                    $"position {t}, logit {j}: expected {expected[t][j]}, got {data[t * v + j]}");
    }
}
