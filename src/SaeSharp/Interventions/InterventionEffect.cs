using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>
/// What an intervention does to next-token predictions: per position the cross-entropy of the next token on the clean
/// and on the edited run, and KL(clean ‖ edited); with their means over the compared positions.
/// </summary>
public sealed class InterventionEffect : IDisposable
{
    /// <summary>[batch, pos − 1] next-token CE (nats) of the clean and the edited run.</summary>
    public required Tensor CleanLoss { get; init; }
    /// <summary>[batch, pos − 1] next-token CE (nats) of the edited run.</summary>
    public required Tensor EditedLoss { get; init; }
    /// <summary>[batch, pos] KL(clean ‖ edited) of the next-token distributions.</summary>
    public required Tensor Kl { get; init; }
    /// <summary>[batch, pos] most likely next token of the clean and of the edited run, with its probability.</summary>
    public required Tensor CleanTop { get; init; }
    /// <summary>[batch, pos] most likely next token of the edited run.</summary>
    public required Tensor EditedTop { get; init; }
    /// <summary>[batch, pos] probability of <see cref="CleanTop"/> on the clean run.</summary>
    public required Tensor CleanTopProb { get; init; }
    /// <summary>[batch, pos] probability of <see cref="EditedTop"/> on the edited run.</summary>
    public required Tensor EditedTopProb { get; init; }

    /// <summary>Mean of <see cref="CleanLoss"/> (nats).</summary>
    public double MeanCleanLoss => CleanLoss.mean().item<double>();
    /// <summary>Mean of <see cref="EditedLoss"/> (nats).</summary>
    public double MeanEditedLoss => EditedLoss.mean().item<double>();
    /// <summary>Mean of <see cref="Kl"/> (nats).</summary>
    public double MeanKl => Kl.mean().item<double>();

    /// <summary>Compares the logits [batch, pos, d_vocab] of a clean and an edited run on <paramref name="tokens"/>.</summary>
    public static InterventionEffect Compare(Tensor cleanLogits, Tensor editedLogits, Tensor tokens)
    {
        if (!cleanLogits.shape.SequenceEqual(editedLogits.shape))
            throw new SaeSharpException($"logits differ in shape: [{string.Join(", ", cleanLogits.shape)}] vs [{string.Join(", ", editedLogits.shape)}]");
        long s = tokens.shape[1];
        if (s < 2) throw new SaeSharpException("comparing next-token losses needs at least 2 tokens");
        using var scope = NewDisposeScope();
        var lc = TokenLosses.LogProbs(cleanLogits);
        var le = TokenLosses.LogProbs(editedLogits);
        var (pc, ic) = lc.max(-1);
        var (pe, ie) = le.max(-1);
        var effect = new InterventionEffect
        {
            CleanLoss = TokenLosses.NextTokenLoss(lc, tokens).MoveToOuterDisposeScope(),
            EditedLoss = TokenLosses.NextTokenLoss(le, tokens).MoveToOuterDisposeScope(),
            Kl = TokenLosses.Kl(lc, le).MoveToOuterDisposeScope(),
            CleanTop = ic.MoveToOuterDisposeScope(),
            EditedTop = ie.MoveToOuterDisposeScope(),
            CleanTopProb = pc.exp().MoveToOuterDisposeScope(),
            EditedTopProb = pe.exp().MoveToOuterDisposeScope(),
        };
        return effect;
    }

    /// <summary>The <paramref name="n"/> (batch, position) pairs whose next-token distribution changed most (by KL).</summary>
    public IReadOnlyList<(int Batch, int Position, double Kl)> MostChanged(int n)
    {
        using var scope = NewDisposeScope();
        var flat = Kl.reshape(-1);
        int k = (int)Math.Min(n, flat.shape[0]);
        var (vals, idx) = flat.topk(k);
        long s = Kl.shape[1];
        var v = vals.data<double>().ToArray();
        return idx.data<long>().Select((j, i) => ((int)(j / s), (int)(j % s), v[i])).ToList();
    }

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        foreach (var t in new[] { CleanLoss, EditedLoss, Kl, CleanTop, EditedTop, CleanTopProb, EditedTopProb }) t.Dispose();
    }
}
