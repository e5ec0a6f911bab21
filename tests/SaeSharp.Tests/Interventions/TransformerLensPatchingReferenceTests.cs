using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>
/// <see cref="ActivationPatching"/> against TransformerLens's own patching.py (v2.12.0 with its grouped-query fix #981;
/// bench/reference/tl_reference_fixture.py wrote tests/data/tl_reference/patching_*.npz) on the tiny GPT-2, NeoX (parallel
/// block: no resid_mid) and Llama 3 (4 heads, 2 key-value heads) checkpoints: the reference tokens' first row clean, the
/// second corrupted, the metric the logit difference of two tokens at the last position.
/// </summary>
public class TransformerLensPatchingReferenceTests
{
    private const double Tolerance = 1e-4;

    [Theory]
    [InlineData("gpt2")]
    [InlineData("gpt_neox-parallel")]
    [InlineData("llama3")]
    public void Every_patch_equals_TransformerLens(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"patching_{family}.npz"));
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        var answer = r["answer"].data<long>().ToArray();
        var metrics = new[] { AttributionMetric.LogitDiff(answer[0], answer[1]) };
        var (clean, corrupted) = (r["clean"], r["corrupted"]);
        var failures = new List<string>();

        var perPosition = new List<(PatchedActivation, string)>
        {
            (PatchedActivation.ResidPre, "resid_pre"), (PatchedActivation.AttnOut, "attn_out"), (PatchedActivation.MlpOut, "mlp_out"),
            (PatchedActivation.HeadZ, "attn_head_out_all_pos"), (PatchedActivation.HeadQ, "attn_head_q_all_pos"),
            (PatchedActivation.HeadK, "attn_head_k_all_pos"), (PatchedActivation.HeadV, "attn_head_v_all_pos"),
            (PatchedActivation.HeadPattern, "attn_head_pattern_all_pos"),
        };
        if (r.ContainsKey("resid_mid")) perPosition.Add((PatchedActivation.ResidMid, "resid_mid"));
        var results = ActivationPatching.RunEach(model, clean, corrupted, [.. perPosition.Select(p => p.Item1)], metrics);
        Assert.Equal(r["clean_metric"].data<double>()[0], results[0].Clean, Tolerance);
        Assert.Equal(r["corrupted_metric"].data<double>()[0], results[0].Corrupted, Tolerance);
        foreach (var (result, (_, key)) in results.Zip(perPosition))
            Compare(failures, key, r[key], result.Patched.Cast<double>().ToArray(), [result.Patched.GetLength(0), result.Patched.GetLength(1)]);

        var heads = ActivationPatching.HeadEvery;
        var byPosition = ActivationPatching.RunByPositionEach(model, clean, corrupted, heads, metrics);
        var names = new Dictionary<PatchedActivation, string>
        {
            [PatchedActivation.HeadZ] = "attn_head_out_by_pos", [PatchedActivation.HeadQ] = "attn_head_q_by_pos",
            [PatchedActivation.HeadK] = "attn_head_k_by_pos", [PatchedActivation.HeadV] = "attn_head_v_by_pos",
            [PatchedActivation.HeadPattern] = "attn_head_pattern_by_pos",
        };
        foreach (var result in byPosition)
        {
            var p = result.Patched;
            long[] shape = [p.GetLength(0), p.GetLength(1), p.GetLength(2)];
            // TransformerLens's pattern_by_pos is [layer, head, dest_pos]; ours [layer, pos, head] as its *_every turns it.
            var expected = result.Activation == PatchedActivation.HeadPattern ? r[names[result.Activation]].permute(0, 2, 1) : r[names[result.Activation]];
            Compare(failures, names[result.Activation], expected, p.Cast<double>().ToArray(), shape);
        }

        var destSrc = ActivationPatching.RunPatternDestSrc(model, clean, corrupted, metrics).Patched;
        Compare(failures, "attn_head_pattern_dest_src_pos", r["attn_head_pattern_dest_src_pos"], destSrc.Cast<double>().ToArray(),
                [destSrc.GetLength(0), destSrc.GetLength(1), destSrc.GetLength(2), destSrc.GetLength(3)]);
        Assert.True(failures.Count == 0, $"{family}: " + string.Join("; ", failures));
    }

    private static void Compare(List<string> failures, string name, Tensor expected, double[] actual, long[] shape)
    {
        if (!expected.shape.SequenceEqual(shape))
        {
            failures.Add($"{name}: shape [{string.Join(", ", shape)}], TransformerLens [{string.Join(", ", expected.shape)}]");
            return;
        }
        var e = expected.contiguous().to(ScalarType.Float64).data<double>().ToArray();
        double worst = e.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
        if (!(worst < Tolerance)) failures.Add($"{name}: {worst:g3}");
    }
}
