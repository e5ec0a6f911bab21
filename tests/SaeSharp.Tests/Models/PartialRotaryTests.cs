using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>hook_rot_q / hook_rot_k of a partial-rotary model against the rotation written out per pair of dims.</summary>
public class PartialRotaryTests : ModelTestBase
{
    [Fact]
    public void Partial_rotary_rotates_the_first_rotary_dims_in_half_pairs_and_passes_the_rest_through_in_place()
    {
        // GPT-NeoX rotate_half on the first r dims of each head: for i < r/2, with angle a = p·base^(−2i/r),
        //   q'[i] = q[i]·cos a − q[i + r/2]·sin a,   q'[i + r/2] = q[i + r/2]·cos a + q[i]·sin a,
        // and q'[j] = q[j] for j ≥ r. (The dot products q'·k' do not see where the pass-through dims go, so only the
        // hook shows a misplaced pass-through.)
        using var model = NeoX(parallel: true, rotaryPct: 0.5);
        int r = model.Config.RotaryDim, d = model.Config.DHead;
        double theta = model.Config.RotaryBase;
        Assert.True(r > 0 && r < d, $"rotary dims {r} of {d}: not a partial rotary model");
        var toks = Tokens([5, 11, 23, 42, 7]);
        var (_, cache) = model.RunWithCache(toks, ["blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_rot_k"]);
        using (cache)
        {
            foreach (var (plain, rotated) in new[] { ("hook_q", "hook_rot_q"), ("hook_k", "hook_rot_k") })
            {
                var x = cache[$"blocks.0.attn.{plain}"].to(ScalarType.Float64);   // [1, pos, head, d_head]
                var y = cache[$"blocks.0.attn.{rotated}"].to(ScalarType.Float64);
                long nPos = x.shape[1], nHead = x.shape[2];
                var xs = x.contiguous().data<double>().ToArray();
                var ys = y.contiguous().data<double>().ToArray();
                for (int p = 0; p < nPos; p++)
                    for (int h = 0; h < nHead; h++)
                    {
                        int o = (int)((p * nHead + h) * d);
                        for (int i = 0; i < r / 2; i++)
                        {
                            double a = p * Math.Pow(theta, -2.0 * i / r);
                            double x1 = xs[o + i], x2 = xs[o + i + r / 2];
                            Assert.Equal(x1 * Math.Cos(a) - x2 * Math.Sin(a), ys[o + i], 5);
                            Assert.Equal(x2 * Math.Cos(a) + x1 * Math.Sin(a), ys[o + i + r / 2], 5);
                        }
                        for (int j = r; j < d; j++) Assert.Equal(xs[o + j], ys[o + j], 6);
                    }
            }
        }
    }
}
