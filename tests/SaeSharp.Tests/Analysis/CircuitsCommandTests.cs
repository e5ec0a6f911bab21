using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using SkiaSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae model circuits --refactor-factored-attn-matrices</c> and <c>--eigen-png</c> end to end on tiny
/// checkpoints, and TransformerLens's refactor_factored_attn_matrices against the SVDs of the dense products it keeps.</summary>
public class CircuitsCommandTests : ModelTestBase
{
    private static string Fixture(string name) => TestPaths.Data("hf_models", name);

    [Fact]
    public void Refactor_on_the_command_line_keeps_every_score_and_is_refused_for_rotary_models()
    {
        string dir = TinyModels.WriteGpt2(Sub("cli"), seed: 5, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50, nPositions: 16);
        string plain = Path.Combine(Dir, "plain.json"), refactored = Path.Combine(Dir, "refactored.json");
        var (e1, _, err1) = CliRunner.Run("model", "circuits", "--model", dir, "--process-weights", "--tokens", "50", "--json", plain);
        Assert.True(e1 == 0, err1);
        var (e2, out2, err2) = CliRunner.Run("model", "circuits", "--model", dir, "--process-weights", "--tokens", "50", "--json", refactored,
            "--refactor-factored-attn-matrices");
        Assert.True(e2 == 0, err2);
        Assert.Contains("weights: fold_ln, center_writing_weights, center_unembed, fold_value_biases, refactor_factored_attn_matrices", out2);
        // Every score is a function of W_Q·W_Kᵀ and W_V·W_O alone, which the refactor keeps.
        var a = JsonNode.Parse(File.ReadAllText(plain))!;
        var b = JsonNode.Parse(File.ReadAllText(refactored))!;
        Assert.False(a["refactor_factored_attn_matrices"]!.GetValue<bool>());
        Assert.True(b["refactor_factored_attn_matrices"]!.GetValue<bool>());
        foreach (string score in new[] { "ov_copying_score", "full_ov_copying_score", "qk_previous_token_score" })
            for (int l = 0; l < 2; l++)
                for (int h = 0; h < 4; h++)
                    Assert.Equal(a[score]![l]![h]!.GetValue<double>(), b[score]![l]![h]!.GetValue<double>(), 4);

        var (rotary, _, rotaryErr) = CliRunner.Run("model", "circuits", "--model", Fixture("gpt_neox-sequential"), "--refactor-factored-attn-matrices");
        Assert.NotEqual(0, rotary);
        Assert.Contains("--refactor-factored-attn-matrices: gpt_neox-sequential (gpt_neox) has rotary positions", rotaryErr);
        Assert.Contains("has rotary positions; TransformerLens refuses them too", rotaryErr);
        var (opt, _, optErr) = CliRunner.Run("model", "circuits", "--model", Fixture("opt"), "--refactor-factored-attn-matrices");
        Assert.NotEqual(0, opt);
        Assert.Contains("(opt) is not supported here: GPT-2 only", optErr);
    }

    [Fact]
    public void Refactor_splits_QK_evenly_and_OV_as_U_S_and_a_rotation_and_moves_b_V_into_b_O()
    {
        using var raw = Gpt2(seed: 21);
        using var model = Gpt2(seed: 21);
        using var scope = NewDisposeScope();
        var w0 = AttentionCircuits.Weights(raw);
        var p0 = raw.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach().clone());
        AttentionCircuits.RefactorFactoredAttnMatrices(model);
        var w1 = AttentionCircuits.Weights(model);
        var p1 = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach());
        const int d = 16, heads = 4, dh = 4;
        for (int l = 0; l < 2; l++)
        {
            var bias0 = p0[$"transformer.h.{l}.attn.c_attn.bias"];
            var bias1 = p1[$"transformer.h.{l}.attn.c_attn.bias"];
            // b_O' = b_O + Σ_h b_V[h]·W_O[h], summed here head by head and entry by entry.
            var expectedBo = p0[$"transformer.h.{l}.attn.c_proj.bias"].clone();
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < dh; i++)
                    expectedBo.add_(w0.WO[l, h, i] * bias0[2 * d + h * dh + i], TorchScalars.One);
            AssertAllClose(expectedBo, p1[$"transformer.h.{l}.attn.c_proj.bias"], 1e-5, $"L{l} b_O");
            Assert.Equal(0f, bias1.narrow(0, 2 * d, d).abs().max().item<float>());
            for (int h = 0; h < heads; h++)
            {
                // The QK form with its biases, [x, 1] in, as a dense [d+1, d+1] matrix: W_Q_eff = U·√S and W_K_eff = V·√S, so
                // both have orthogonal columns whose norms are the square roots of its singular values.
                Tensor Eff(Tensor w, Tensor bias, int part) => cat([w, bias.narrow(0, part * d + h * dh, dh).unsqueeze(0)], 0);   // [d+1, dh]
                var qk = Eff(w0.WQ[l, h], bias0, 0).matmul(Eff(w0.WK[l, h], bias0, 1).t()).to(ScalarType.Float64);
                var rootS = linalg.svdvals(qk).narrow(0, 0, dh).sqrt();
                foreach (var eff in new[] { Eff(w1.WQ[l, h], bias1, 0), Eff(w1.WK[l, h], bias1, 1) })
                {
                    var gram = eff.t().matmul(eff).to(ScalarType.Float64);                                 // [dh, dh]
                    AssertAllClose(diag(rootS * rootS), gram, 1e-4, $"L{l}H{h} W_Q_eff/W_K_eff columns orthogonal, norms √S");
                }
                // W_V = U·S: orthogonal columns of norms S, the singular values of the dense W_V·W_O.
                var s = linalg.svdvals(w0.WV[l, h].matmul(w0.WO[l, h]).to(ScalarType.Float64)).narrow(0, 0, dh);
                AssertAllClose(diag(s * s), w1.WV[l, h].t().matmul(w1.WV[l, h]).to(ScalarType.Float64), 1e-4, $"L{l}H{h} W_V = U·S");
            }
        }
    }

    [Fact]
    public void Eigen_png_draws_a_panel_per_layer_of_the_OV_eigenvalues()
    {
        string dir = TinyModels.WriteGpt2(Sub("eig"), seed: 9, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50, nPositions: 16);
        using (var model = ModelLoader.FromPretrained(dir))
        using (var scope = NewDisposeScope())
        {
            var ev = AttentionCircuits.OvEigenvalues(model);
            var w = AttentionCircuits.Weights(model);
            Assert.Equal([0, 1], ev.Layers);
            for (int l = 0; l < 2; l++)
                for (int h = 0; h < 4; h++)
                {
                    // d_head eigenvalues whose sum is the trace of the dense W_V·W_O (its other d_model − d_head are zero).
                    Assert.Equal(4, ev.Values[l][h].Length);
                    double trace = w.WV[l, h].matmul(w.WO[l, h]).to(ScalarType.Float64).trace().item<double>();
                    var sum = ev.Values[l][h].Aggregate(System.Numerics.Complex.Zero, (acc, z) => acc + z);
                    Assert.Equal(trace, sum.Real, 4);
                    Assert.Equal(0, sum.Imaginary, 4);
                }
        }
        string png = Path.Combine(Dir, "eig.png");
        var (exit, output, err) = CliRunner.Run("model", "circuits", "--model", dir, "--eigen-png", png);
        Assert.True(exit == 0, err);
        Assert.Contains($"wrote {png}", output);
        using (var bitmap = SKBitmap.Decode(png))
        {
            // Two panels side by side of 380 pixels, 6 of margin each side; a title, one legend line, a 360-pixel row.
            Assert.Equal((12 + 2 * 380, 40 + 24 + 360), (bitmap.Width, bitmap.Height));
            var headColours = new[] { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728" }.Select(SKColor.Parse).ToList();
            var seen = new HashSet<SKColor>();
            for (int y = 0; y < bitmap.Height; y++)
                for (int x = 0; x < bitmap.Width; x++)
                    if (headColours.Contains(bitmap.GetPixel(x, y))) seen.Add(bitmap.GetPixel(x, y));
            Assert.Equal(4, seen.Count);                                                     // every head's colour drawn
        }
        string one = Path.Combine(Dir, "one.png");
        var (e1, _, err1) = CliRunner.Run("model", "circuits", "--model", dir, "--layer", "1", "--eigen-png", one);
        Assert.True(e1 == 0, err1);
        using (var bitmap = SKBitmap.Decode(one))
            Assert.Equal((12 + 380, 40 + 24 + 360), (bitmap.Width, bitmap.Height));

        var (same, _, sameErr) = CliRunner.Run("model", "circuits", "--model", dir, "--eigen-png", png, "--json", png);
        Assert.NotEqual(0, same);
        Assert.Contains($"--eigen-png {png}: the same file as --json", sameErr);
        var (folder, _, folderErr) = CliRunner.Run("model", "circuits", "--model", dir, "--eigen-png", Dir);
        Assert.NotEqual(0, folder);
        Assert.Contains($"--eigen-png {Dir}", folderErr);
    }
}
