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
    public void Factored_matrix_even_form_corner_collapses_and_scalar_products_match_the_dense_product()
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        var a = randn(2, 5, 3);
        var b = randn(2, 3, 4);
        var ab = a.matmul(b);                                                     // [2, 5, 4] of rank 3
        var f = new FactoredMatrix(a, b);
        Assert.Equal(3, f.NDim);
        Close(ab, f.Pair.A.matmul(f.Pair.B));

        // make_even: the same product; each factor's Gram matrix is diag(S), so A'ᵀA' = B'B'ᵀ (halves of every singular value).
        var even = f.MakeEven();
        Close(ab, even.AB);
        var s = linalg.svdvals(ab).narrow(-1, 0, 3);
        for (int i = 0; i < 2; i++)
        {
            Close(diag(s[i]), even.A[i].t().matmul(even.A[i]));
            Close(diag(s[i]), even.B[i].matmul(even.B[i].t()));
        }

        // collapse_l / collapse_r: the product once U or Vᵀ is taken off (U, V orthonormal columns).
        var (u, _, v) = f.Svd();
        Close(ab, u.matmul(f.CollapseL()));
        Close(ab, f.CollapseR().matmul(v.transpose(-2, -1)));
        Assert.Equal([2L, 3, 4], f.CollapseL().shape);
        Assert.Equal([2L, 5, 3], f.CollapseR().shape);

        // get_corner: the dense product's [:3, :3, :3] (the leading dimension has only 2).
        Close(ab.narrow(1, 0, 3).narrow(2, 0, 3), f.GetCorner());
        Close(ab.narrow(1, 0, 1).narrow(2, 0, 1).narrow(0, 0, 1), f.GetCorner(1));

        // Scalar products, either side, and by a one-element tensor.
        Close(ab * 2.5, (f * 2.5).AB);
        Close(ab * -3, (-3 * f).AB);
        Close(ab * 0.5, f.Multiply(tensor(new[] { 0.5f })).AB);
        Assert.Contains("one-element", Assert.Throws<SaeSharpException>(() => f.Multiply(ones(2))).Message);
    }

    [Fact]
    public void Refactored_attention_matrices_keep_QK_OV_and_the_logits_and_make_W_O_a_rotation()
    {
        using var raw = Gpt2(seed: 13);
        using var model = Gpt2(seed: 13);
        using var scope = NewDisposeScope();
        var tokens = Tokens([3, 17, 8, 22, 5, 40, 11]);
        var before = raw.Run(tokens, new RunOptions()).Logits!;
        var w0 = AttentionCircuits.Weights(raw);
        var p0 = raw.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach());
        AttentionCircuits.RefactorFactoredAttnMatrices(model);
        var w1 = AttentionCircuits.Weights(model);
        var p1 = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach());
        AssertAllClose(before, model.Run(tokens, new RunOptions()).Logits!, 1e-4, "logits");
        AssertAllClose(w0.WQ.matmul(w0.WK.transpose(-2, -1)), w1.WQ.matmul(w1.WK.transpose(-2, -1)), 1e-4, "QK");
        AssertAllClose(w0.WV.matmul(w0.WO), w1.WV.matmul(w1.WO), 1e-4, "OV");
        Assert.True((w0.WQ - w1.WQ).abs().max().item<float>() > 1e-2, "W_Q unchanged: the test proves nothing");
        for (int l = 0; l < 2; l++)
        {
            // The bilinear form with biases: [x, 1]·W_Q_eff·W_K_effᵀ·[y, 1]ᵀ per head.
            Tensor Eff(Tensor wq, Dictionary<string, Tensor> p, int part) =>
                cat([wq, p[$"transformer.h.{l}.attn.c_attn.bias"].narrow(0, part * 16, 16).view(4, 1, 4)], 1);
            AssertAllClose(Eff(w0.WQ[l], p0, 0).matmul(Eff(w0.WK[l], p0, 1).transpose(-2, -1)),
                           Eff(w1.WQ[l], p1, 0).matmul(Eff(w1.WK[l], p1, 1).transpose(-2, -1)), 1e-4, $"L{l} QK with biases");
            for (int h = 0; h < 4; h++)
                AssertAllClose(eye(4), w1.WO[l, h].matmul(w1.WO[l, h].t()), 1e-4, $"L{l}H{h} W_O rows orthonormal");
            Assert.True(p1[$"transformer.h.{l}.attn.c_attn.bias"].narrow(0, 32, 16).abs().max().item<float>() == 0, "b_V moved into b_O");
        }
        using var neox = NeoX(parallel: false);
        Assert.Contains("has rotary positions; TransformerLens refuses them too", Assert.Throws<SaeSharpException>(() => AttentionCircuits.RefactorFactoredAttnMatrices(neox)).Message);
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
    public void Processed_circuit_weights_are_centred_and_change_each_logit_by_a_per_position_constant_only()
    {
        using var scope = NewDisposeScope();
        foreach (var (raw, copy, unembedKey, betaKey) in new[]
                 {
                     (Gpt2(seed: 11), Gpt2(seed: 11), "transformer.wte.weight", "transformer.ln_f.bias"),
                     (NeoX(parallel: false, seed: 12), NeoX(parallel: false, seed: 12), "embed_out.weight", "gpt_neox.final_layer_norm.bias"),
                 })
        {
            using var _ = raw;
            string kind = raw.Config.Architecture;
            var rawP = raw.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach());
            var options = WeightProcessingOptions.TransformerLensDefaults;
            using var pm = WeightProcessing.Apply(copy, options);
            var wu = AttentionCircuits.Unembed(pm.Model, options);                          // [d, vocab]
            Assert.True(wu.mean([1]).abs().max().item<float>() < 1e-5, $"{kind}: W_U centred over the vocabulary (center_unembed)");
            Assert.True(wu.mean([0]).abs().max().item<float>() < 1e-5, $"{kind}: W_U centred over d_model (fold_ln)");
            Assert.True((wu - AttentionCircuits.Unembed(raw)).abs().max().item<float>() > 1e-3, $"{kind}: the centring changed nothing, the test proves nothing");
            // Writing weights: zero mean over d_model.
            Assert.True(AttentionCircuits.Embedding(pm.Model, options).mean([1]).abs().max().item<float>() < 1e-5, $"{kind} W_E");
            Assert.True(AttentionCircuits.Weights(pm.Model).WO.mean([-1]).abs().max().item<float>() < 1e-5, $"{kind} W_O");
            if (AttentionCircuits.PositionEmbedding(pm.Model) is { } wpos)
                Assert.True(wpos.mean([1]).abs().max().item<float>() < 1e-5, $"{kind} W_pos");
            // Logits through the processed W_U (plus the final norm's β through the raw W_U, TransformerLens's b_U) against
            // the unprocessed model's: x̂ of the processed run is the raw run's, so they differ by a constant per position.
            var tokens = Tokens([3, 17, 8, 22, 5], [40, 11, 2, 9, 30]);
            var logits = raw.Run(tokens, new RunOptions()).Logits!;
            using var run = pm.Model.RunWithCache(tokens, new RunOptions { CacheNames = [pm.Model.HookPoints.Blocks[^1].ResidPost], Hooks = pm.Hooks });
            var resid = run.Cache[pm.Model.HookPoints.Blocks[^1].ResidPost];
            var xhat = nn.functional.layer_norm(resid, [resid.shape[^1]], eps: raw.Config.LayerNormEps);
            var bU = rawP[unembedKey].matmul(rawP[betaKey]);                               // β·W_U [vocab]
            var diff = logits - (xhat.matmul(wu) + bU);
            Assert.True((diff - diff.mean([-1], keepdim: true)).abs().max().item<float>() < 1e-4, $"{kind}: logits differ by more than a per-position constant");
        }
    }

    [Fact]
    public void QK_scores_find_a_previous_token_head_and_a_same_token_head_built_by_hand()
    {
        // d_model 16, 4 heads of d_head 4, 4 tokens, 4 positions. Token t embeds as e_t, position p as e_{4+p}.
        // Head 0: W_Q maps position p ≥ 1 to slot p − 1 (times c), W_K maps position k to slot k, so the positional score of
        // query p and key k is c·[k = p − 1]. Head 1: W_Q = W_K = identity on the token dimensions (QK = I on tokens).
        // Head 2: W_K negated (QK = −I). Head 3: zero (uniform attention).
        string dir = TinyModels.WriteGpt2(Sub("qk"), seed: 5, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 4, nPositions: 4);
        using var model = ModelLoader.FromPretrained(dir);
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        const float c = 4f;
        using (no_grad())
        {
            using var scope = NewDisposeScope();
            var wte = zeros(4, 16);
            var wpe = zeros(4, 16);
            for (int t = 0; t < 4; t++) { wte[t, t] = tensor(1f); wpe[t, 4 + t] = tensor(1f); }
            p["transformer.wte.weight"].copy_(wte);
            p["transformer.wpe.weight"].copy_(wpe);
            var cAttn = zeros(16, 48);                                                // q | k | v, head h in columns 4h..4h+3
            for (int pos = 1; pos < 4; pos++) cAttn[4 + pos, pos - 1] = tensor(c);   // head 0 query
            for (int pos = 0; pos < 3; pos++) cAttn[4 + pos, 16 + pos] = tensor(1f); // head 0 key
            for (int t = 0; t < 4; t++)
            {
                cAttn[t, 4 + t] = tensor(1f); cAttn[t, 16 + 4 + t] = tensor(1f);       // head 1
                cAttn[t, 8 + t] = tensor(1f); cAttn[t, 16 + 8 + t] = tensor(-1f);      // head 2
            }
            p["transformer.h.0.attn.c_attn.weight"].copy_(cAttn);
        }
        var r = AttentionCircuits.QkScores(model);
        Assert.Equal(4, r.Positions);
        // Query q ≥ 1 sees q + 1 keys: the previous one scores c / √d_head = 2, the others 0.
        double s = Math.Exp(c / 2);
        double expected = (s / (s + 1) + s / (s + 2) + s / (s + 3)) / 3;
        Assert.Equal(expected, r.PreviousToken![0, 0], 5);
        Assert.Equal((1 / 2.0 + 1 / 3.0 + 1 / 4.0) / 3, r.PreviousToken[0, 3], 5);   // uniform
        Assert.Equal(1, r.SameToken[0, 1]);
        Assert.Equal(0, r.SameToken[0, 2]);
        Assert.Equal(2, AttentionCircuits.QkScores(model, positions: 2).Positions);
        using var neox = NeoX(parallel: false);
        Assert.Null(AttentionCircuits.QkScores(neox).PreviousToken);                 // rotary: no W_pos
        // Positions past W_pos's 4 rows, or on a model without W_pos, were capped or ignored without a word.
        Assert.Contains("positions 5: more than the 4 rows of W_pos (n_ctx)", Assert.Throws<SaeSharpException>(() => AttentionCircuits.QkScores(model, positions: 5)).Message);
        Assert.Contains("positions 2: ", Assert.Throws<SaeSharpException>(() => AttentionCircuits.QkScores(neox, positions: 2)).Message);
        Assert.Contains("no learned position embedding W_pos (rotary positions)", Assert.Throws<SaeSharpException>(() => AttentionCircuits.QkScores(neox, positions: 2)).Message);
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
        Assert.Contains("weights: fold_ln\n", foldedOut.ReplaceLineEndings("\n"));
        var (processed, processedOut, processedErr) = CliRunner.Run("model", "circuits", "--model", dir, "--process-weights", "--positions", "8", "--json", json);
        Assert.True(processed == 0, processedErr);
        Assert.Contains("weights: fold_ln, center_writing_weights, center_unembed, fold_value_biases", processedOut);
        Assert.Contains("Positional QK previous-token score", processedOut);
        Assert.Contains("over the first 8 positions", processedOut);
        Assert.Contains("Full QK same-token top-1", processedOut);
        node = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.True(node["center_unembed"]!.GetValue<bool>());
        Assert.Equal(8, node["qk_positions"]!.GetValue<int>());
        Assert.Equal(2, node["qk_previous_token_score"]!.AsArray().Count);
        var (bad, _, badErr) = CliRunner.Run("model", "circuits", "--model", dir, "--layer", "2");
        Assert.NotEqual(0, bad);
        Assert.Contains("--layer 2: the model has layers 0..1", badErr);
    }
}
