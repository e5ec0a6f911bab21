using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>TransformerLens's <c>FactoredMatrix</c> against torch.linalg on the dense product, and the QK / OV circuits of
/// tiny models against their weights sliced by hand, against what the model's own hooks compute, and on weights built so
/// that the copying scores are known.</summary>
public class AttentionCircuitsTests : ModelTestBase
{
    private static void Close(Tensor expected, Tensor actual, double tol = 1e-4)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff < tol, $"max |difference| {diff}");
    }

    /// <summary>A tensor's values sorted, for comparing spectra whose order is not fixed.</summary>
    private static double[] Sorted(Tensor t) => t.to(ScalarType.Float64).data<double>().OrderBy(x => x).ToArray();

    [Fact]
    public void Factored_matrix_matches_the_dense_product()
    {
        using var scope = NewDisposeScope();
        manual_seed(50);
        var a = randn(5, 2);
        var b = randn(2, 5);
        var ab = a.matmul(b);
        var f = new FactoredMatrix(a, b);
        Assert.Equal((5L, 2L, 5L), (f.LDim, f.MDim, f.RDim));
        Close(ab, f.AB);
        Close(b.matmul(a), f.BA);
        Close(ab.t(), f.T.AB);

        // Eigenvalues: the dense product's two nonzero ones (its other three are zero, left out by the factored form).
        var dense = linalg.eigvals(ab);
        var nonzero = dense.abs().argsort(descending: true).narrow(0, 0, 2);
        var expected = dense.index_select(0, nonzero);
        var got = f.Eigenvalues();
        Assert.Equal(2, got.shape[0]);
        Assert.Equal(Sorted(expected.real), Sorted(got.real), (x, y) => Math.Abs(x - y) < 1e-4);
        Assert.Equal(Sorted(expected.imag), Sorted(got.imag), (x, y) => Math.Abs(x - y) < 1e-4);

        // Singular values: the dense product's largest two (then zeros); U·diag(S)·Vᵀ rebuilds it.
        var (u, s, v) = f.Svd();
        var denseS = linalg.svdvals(ab);
        Close(denseS.narrow(0, 0, 2), s);
        Close(ab, u.matmul(diag(s)).matmul(v.t()));
        Close(u.t().matmul(u), eye(2));

        // Norm: the Frobenius norm of AB written out.
        Assert.Equal(Math.Sqrt(ab.mul(ab).sum().item<float>()), f.Norm().item<float>(), 4);

        // Products: with a matrix on either side (factored along the inner dimension 2, not 5), and with another factored matrix.
        var c = randn(5, 300);
        var abc = f.MatMul(c);
        Assert.Equal((5L, 2L, 300L), (abc.LDim, abc.MDim, abc.RDim));
        Close(ab.matmul(c), abc.AB);
        var left = randn(7, 5);
        Close(left.matmul(ab), f.LeftMatMul(left).AB);
        var g = new FactoredMatrix(randn(5, 3), randn(3, 4));
        Close(ab.matmul(g.AB), f.MatMul(g).AB);
    }

    [Fact]
    public void Factored_matrix_broadcasts_leading_dimensions_and_refuses_bad_shapes()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var a = randn(3, 4, 6, 2);
        var b = randn(2, 6);
        var f = new FactoredMatrix(a, b);
        Assert.Equal([3L, 4, 6, 6], f.Shape);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
            {
                Close(a[i, j].matmul(b), f[i][j].AB);
                Close(a[i, j].matmul(b).mul(a[i, j].matmul(b)).sum().sqrt(), f.Norm()[i, j]);
            }
        Assert.Contains("inner dimension", Assert.Throws<SaeSharpException>(() => new FactoredMatrix(randn(5, 2), randn(3, 5))).Message);
        Assert.Contains("do not broadcast", Assert.Throws<SaeSharpException>(() => new FactoredMatrix(randn(3, 5, 2), randn(4, 2, 5))).Message);
        Assert.Contains("square", Assert.Throws<SaeSharpException>(() => new FactoredMatrix(randn(5, 2), randn(2, 4)).BA).Message);
    }

    [Fact]
    public void Gpt2_OV_and_QK_are_the_heads_slices_of_c_attn_and_c_proj()
    {
        using var model = Gpt2(nLayer: 2);
        using var scope = NewDisposeScope();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach());
        int d = 16, heads = 4, hd = 4;
        var ov = AttentionCircuits.OV(model);
        var qk = AttentionCircuits.QK(model);
        Assert.Equal([2L, heads, d, d], ov.Shape);
        for (int l = 0; l < 2; l++)
        {
            var cAttn = p[$"transformer.h.{l}.attn.c_attn.weight"];        // Conv1D [d, 3d]: q | k | v, each head-major
            var cProj = p[$"transformer.h.{l}.attn.c_proj.weight"];        // [d, d]
            for (int h = 0; h < heads; h++)
            {
                var wq = cAttn.narrow(1, h * hd, hd);
                var wk = cAttn.narrow(1, d + h * hd, hd);
                var wv = cAttn.narrow(1, 2 * d + h * hd, hd);
                var wo = cProj.narrow(0, h * hd, hd);
                Close(wv.matmul(wo), ov[l][h].AB, 1e-5);
                Close(wq.matmul(wk.t()), qk[l][h].AB, 1e-5);
            }
        }
    }

    [Fact]
    public void After_fold_ln_OV_reads_through_the_LayerNorm_scale_and_centring()
    {
        using var model = Gpt2(nLayer: 1, seed: 8);
        using var scope = NewDisposeScope();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach().clone());
        var gamma = p["transformer.h.0.ln_1.weight"];
        var centre = eye(16) - full(16, 16, 1f / 16);                          // I − 11ᵀ/d: what fold_ln's centring does to W_V's rows
        WeightProcessing.Apply(model, new WeightProcessingOptions { FoldLn = true });
        var ov = AttentionCircuits.OV(model);
        for (int h = 0; h < 4; h++)
        {
            var wv = p["transformer.h.0.attn.c_attn.weight"].narrow(1, 32 + 4 * h, 4);
            var wo = p["transformer.h.0.attn.c_proj.weight"].narrow(0, 4 * h, 4);
            Close(centre.matmul(gamma.unsqueeze(1) * wv).matmul(wo), ov[0][h].AB, 1e-5);
        }
    }

    /// <summary>What the model computes: the difference of two positions' values is the difference of their ln1 outputs
    /// through W_V (the bias cancels), and each head's <c>hook_result</c> is its z through W_O.</summary>
    private static void AssertWeightsMatchHooks(HookedTransformer model)
    {
        using var scope = NewDisposeScope();
        var w = AttentionCircuits.Weights(model);
        var c = model.Config;
        var tokens = tensor(new long[] { 1, 5, 9, 3 }).unsqueeze(0);
        var blk = model.HookPoints.Blocks[0];
        using var run = model.RunWithCache(tokens, new RunOptions { CacheNames = [blk.Ln1, blk.Q, blk.K, blk.V, blk.Z, blk.Result] });
        var cache = run.Cache;
        var x = cache[blk.Ln1][0];                                             // [pos, d]
        var dx = x[1] - x[0];
        int group = c.NHeads / c.NKvHeads;
        for (int h = 0; h < c.NHeads; h++)
        {
            var v = cache[blk.V][0].select(1, h / group);                      // [pos, d_head] of the KV head query head h reads
            Close(v[1] - v[0], dx.matmul(w.WV[0, h]));
            Close(cache[blk.Result][0].select(1, h), cache[blk.Z][0].select(1, h).matmul(w.WO[0, h]));
        }
    }

    [Fact]
    public void Weights_of_gpt2_neox_gpt_neo_and_a_grouped_query_llama_are_what_their_hooks_compute()
    {
        using (var gpt2 = Gpt2()) AssertWeightsMatchHooks(gpt2);
        using (var neox = NeoX(parallel: false)) AssertWeightsMatchHooks(neox);
        using (var neo = ModelLoader.FromPretrained(TestPaths.Data("hf_models", "gpt_neo"))) AssertWeightsMatchHooks(neo);
        string llama = TinyDecoders.Write(Sub("llama"), new DecoderSpec { ModelType = "llama", Heads = 4, KvHeads = 2 });
        using var m = ModelLoader.FromPretrained(llama);
        AssertWeightsMatchHooks(m);
        // Query heads 2 and 3 read KV head 1: the same W_K and W_V, k_proj's rows 4..7 (Linear [out, in]) transposed.
        using var scope = NewDisposeScope();
        var w = AttentionCircuits.Weights(m);
        var kProj = m.named_parameters().First(kv => kv.name == "model.layers.0.self_attn.k_proj.weight").parameter.detach();
        Close(kProj.narrow(0, 4, 4).t(), w.WK[0, 2]);
        Close(kProj.narrow(0, 4, 4).t(), w.WK[0, 3]);
        Close(kProj.narrow(0, 0, 4).t(), w.WK[0, 1]);
    }

    [Fact]
    public void Copying_scores_are_one_for_a_copying_head_and_minus_one_for_a_negating_one()
    {
        // d_model 16, 4 heads of d_head 4; vocabulary 4. Token t embeds as Σ_h e_{4h+t}; head h reads and writes its own
        // block of 4 dimensions (W_V[h] = E_h, W_O[h] = ±E_hᵀ), so OV[h] = ±(projection onto the block) and the full OV circuit
        // W_E·OV·W_U = ±I on the 4 tokens (W_U = W_Eᵀ, tied, final LayerNorm scale 1).
        string dir = TinyModels.WriteGpt2(Sub("copy"), seed: 5, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 4, nPositions: 8);
        using var model = ModelLoader.FromPretrained(dir);
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        using (no_grad())
        {
            using var scope = NewDisposeScope();
            var wte = zeros(4, 16);
            for (int t = 0; t < 4; t++) for (int h = 0; h < 4; h++) wte[t, 4 * h + t] = tensor(1f);
            p["transformer.wte.weight"].copy_(wte);
            p["transformer.ln_f.weight"].copy_(ones(16));
            var cAttn = zeros(16, 48);
            var cProj = zeros(16, 16);
            for (int i = 0; i < 16; i++)
            {
                cAttn[i, 32 + i] = tensor(1f);                                  // W_V: dimension i to head i / 4's slot i % 4
                cProj[i, i] = tensor(i / 4 == 1 ? -1f : 1f);                     // W_O: back, negated for head 1
            }
            p["transformer.h.0.attn.c_attn.weight"].copy_(cAttn);
            p["transformer.h.0.attn.c_proj.weight"].copy_(cProj);
        }
        var r = AttentionCircuits.Scores(model);
        Assert.Equal([0L, 1, 2, 3], r.Tokens);
        for (int h = 0; h < 4; h++)
        {
            double sign = h == 1 ? -1 : 1;
            Assert.Equal(sign, r.OvCopying[0, h], 6);
            Assert.Equal(sign, r.FullOvCopying[0, h], 6);
            Assert.Equal(h == 1 ? 0 : 1, r.Top1[0, h]);
        }
        // A sample of 2 tokens: ids 0 and 2 (evenly spaced), each still its own row's largest.
        var two = AttentionCircuits.Scores(model, tokens: 2);
        Assert.Equal([0L, 2], two.Tokens);
        Assert.Equal(1, two.Top1[0, 0]);
    }

    [Fact]
    public void Full_OV_scores_follow_the_dense_circuit_of_a_random_model()
    {
        using var model = Gpt2(nLayer: 1, seed: 7);
        using var scope = NewDisposeScope();
        var r = AttentionCircuits.Scores(model);
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach());
        var we = p["transformer.wte.weight"];                                  // [50, 16]
        var wu = we.t() * p["transformer.ln_f.weight"].unsqueeze(1);             // γ folded, [16, 50]
        var cAttn = p["transformer.h.0.attn.c_attn.weight"];
        var cProj = p["transformer.h.0.attn.c_proj.weight"];
        for (int h = 0; h < 4; h++)
        {
            var full = we.matmul(cAttn.narrow(1, 32 + 4 * h, 4)).matmul(cProj.narrow(0, 4 * h, 4)).matmul(wu).to(ScalarType.Float64); // [50, 50]
            var eig = linalg.eigvals(full);
            double score = eig.sum().real.item<double>() / eig.abs().sum().item<double>();
            Assert.Equal(score, r.FullOvCopying[0, h], 3);
            var rows = full.argmax(-1).data<long>().ToArray();
            Assert.Equal(rows.Where((best, i) => best == i).Count() / 50.0, r.Top1[0, h], 9);
        }
    }

    [Fact]
    public void Circuits_command_prints_the_three_tables_and_writes_the_scores_to_json()
    {
        string dir = TinyModels.WriteGpt2(Sub("cli"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50, nPositions: 16);
        string json = Path.Combine(Dir, "circuits.json");
        var (exit, output, err) = CliRunner.Run("model", "circuits", "--model", dir, "--layer", "1", "--tokens", "20", "--json", json);
        Assert.True(exit == 0, err);
        Assert.Contains("1 layer × 4 heads, d_head 4", output);
        Assert.Contains("OV copying score (W_V·W_O)", output);
        Assert.Contains("Full OV top-1 accuracy on 20 tokens of 50", output);
        var node = JsonNode.Parse(File.ReadAllText(json))!;
        using var model = ModelLoader.FromPretrained(dir);
        var r = AttentionCircuits.Scores(model, 20, [1]);
        Assert.Equal(1, node["layers"]![0]!.GetValue<int>());
        Assert.Equal(20, node["top1_tokens"]!.AsArray().Count);
        for (int h = 0; h < 4; h++)
        {
            Assert.Equal(r.OvCopying[0, h], node["ov_copying_score"]![0]![h]!.GetValue<double>(), 12);
            Assert.Equal(r.Top1[0, h], node["full_ov_top1"]![0]![h]!.GetValue<double>(), 12);
        }
        var (folded, foldedOut, foldedErr) = CliRunner.Run("model", "circuits", "--model", dir, "--layer", "0", "--fold-ln");
        Assert.True(folded == 0, foldedErr);
        Assert.Contains("1 layer × 4 heads, d_head 4, fold_ln", foldedOut);
        var (bad, _, badErr) = CliRunner.Run("model", "circuits", "--model", dir, "--layer", "2");
        Assert.NotEqual(0, bad);
        Assert.Contains("layer 2 is outside 0..1", badErr);
    }
}
