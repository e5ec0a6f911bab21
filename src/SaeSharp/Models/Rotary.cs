using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Rotary embeddings on the first rotary_dim dims of each head: NeoX's rotate_half convention (the dims' halves
/// rotated together), or GPT-J's interleaved one (rotate_every_two: adjacent dims (0, 1), (2, 3), … rotated as pairs).</summary>
internal static class Rotary
{
    /// <summary>cos, sin: [batch, pos, 1, rotary_dim] for positions [batch, pos].</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int rotaryDim, double theta, ScalarType dtype) =>
        CosSin(positions, InvFreq(rotaryDim, theta), dtype);

    /// <summary>HF default rotary frequencies 1 / theta^(2i / rotary_dim), float32 [rotary_dim / 2].</summary>
    public static Tensor InvFreq(int rotaryDim, double theta)
    {
        using var dim = rotaryDim.ToScalar();
        using var thetaTensor = tensor(theta);   // a 0-dim float64 tensor, as the implicit conversion made
        return TorchScalars.Of(1.0) / pow(thetaTensor, arange(TorchScalars.Of(0), dim, TorchScalars.Of(2), dtype: ScalarType.Int64).to(ScalarType.Float32) / dim);
    }

    /// <summary>cos, sin: [batch, pos, 1, 2·len(invFreq)] for positions [batch, pos] and float32 frequencies, both
    /// multiplied in float32 by <paramref name="attentionScaling"/> (HF <c>attention_scaling</c>: YaRN's attention factor,
    /// 1 for the other rope types) before the cast to <paramref name="dtype"/>.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, Tensor invFreq, ScalarType dtype, double attentionScaling = 1.0)
    {
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq.to(positions.device); // [b, pos, rot/2]
        var emb = cat([freqs, freqs], -1).unsqueeze(2);                      // [b, pos, 1, rot]
        if (attentionScaling == 1.0) return (emb.cos().to(dtype), emb.sin().to(dtype));
        using var scaling = attentionScaling.ToScalar();
        return ((emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype));
    }

    /// <summary>x: [batch, pos, head, d_head]; rotates x[..., :rot] as x·cos + rotate_half(x)·sin, or, with
    /// <paramref name="interleaved"/> (HF GPT-J's <c>apply_rotary_pos_emb</c>, TransformerLens's <c>rotary_adjacent_pairs</c>),
    /// as x·cos' + rotate_every_two(x)·sin' where cos' and sin' repeat each frequency for the two dims of its pair: the
    /// pair (x[2i], x[2i+1]) turns by the angle of frequency i. cos, sin: <see cref="CosSin(Tensor, Tensor, ScalarType, double)"/>'s
    /// tables, whose first rot/2 columns are the frequencies' cos and sin either way.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin, int rot, bool interleaved = false)
    {
        long d = x.shape[^1];
        var xr = rot == d ? x : x.narrow(3, 0, rot);
        Tensor rotated;
        if (interleaved)
        {
            var pairs = xr.unflatten(3, [rot / 2, 2]);
            var (even, odd) = (pairs.select(4, 0), pairs.select(4, 1));
            var (c, s) = (cos.narrow(3, 0, rot / 2), sin.narrow(3, 0, rot / 2));
            rotated = stack([(even * c).add(odd.neg() * s, TorchScalars.One), (odd * c).add(even * s, TorchScalars.One)], -1).flatten(3);
        }
        else
        {
            var x1 = xr.narrow(3, 0, rot / 2);
            var x2 = xr.narrow(3, rot / 2, rot / 2);
            rotated = (xr * cos).add(cat([x2.neg(), x1], -1) * sin, TorchScalars.One);
        }
        return rot == d ? rotated : cat([rotated, x.narrow(3, rot, d - rot)], -1);
    }
}
