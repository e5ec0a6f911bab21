using SaeSharp.Activations;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>
/// What a run does before its first step: the activation-normalisation estimate (SAELens's
/// <c>expected_average_only_in</c>: scale so that the mean row norm is √d) and the weights' initialisation (the
/// architecture's <see cref="Sae.InitializeWeights"/>, optionally an encoder independent of the decoder, and b_dec at the
/// geometric median or mean of a sample of targets), seeded per SAE from the run's seed. An SAE started from a saved one
/// (<see cref="TrainerConfig.FromPretrainedPath"/>) keeps its weights, rescaled into the training scale.
/// </summary>
internal static class TrainingInitialization
{
    /// <summary>One SAE to initialise: its index in the run (for its seed), the SAE and its trainer config.</summary>
    public readonly record struct Target(int Index, Sae Sae, TrainerConfig Config);

    /// <summary>Reads the batches the estimate and the b_dec sample need from <paramref name="source"/>, initialises the
    /// SAEs whose config asks for it, and returns the input and target scales (1 without normalisation). The estimate, the
    /// sample statistics and the initial weights are computed on <paramref name="device"/>, where the SAEs are (null: CPU);
    /// the random draws are made on the CPU, so every device starts from the same weights.</summary>
    public static (double ScaleIn, double ScaleOut) Run(TrainerConfig cfg, IActivationSource source, IReadOnlyList<Target> saes, Device? device = null)
    {
        double scaleIn = 1, scaleOut = 1;
        bool normalize = cfg.NormalizeActivations == "expected_average_only_in";
        bool needSample = saes.Any(s => Initializes(s.Config) && (s.Config.BDecInitMethod != "zeros" || ThresholdsFromData(s.Sae)));
        int normBatches = normalize ? cfg.NBatchesForNormEstimate : 0;
        var sample = new List<Tensor>();
        var inputs = new List<Tensor>();
        long sampleRows = 0, normRows = 0;
        double sumNormIn = 0, sumNormOut = 0;
        bool separateTarget = false;
        try
        {
            for (int b = 0; b < normBatches || (needSample && sampleRows < cfg.BDecInitRows); b++)
            {
                using var scope = NewDisposeScope();
                using var batch = source.Next(cfg.TrainBatchSizeTokens)
                    ?? throw new SaeSharpException($"the activation source ran out after {(long)b * cfg.TrainBatchSizeTokens} rows while reading the initialisation sample " +
                                                   $"({(long)normBatches * cfg.TrainBatchSizeTokens} rows for the normalisation estimate, {(needSample ? cfg.BDecInitRows : 0)} for b_dec); " +
                                                   "give more data or let the source repeat it (sae train --epochs)");
                SaeTrainer.CheckBatch(source, batch);
                separateTarget |= batch.HasSeparateTarget;
                if (b < normBatches)
                {
                    sumNormIn += ComputeDevice.To(batch.Input, device ?? CPU).to(ScalarType.Float64).norm(1).sum().item<double>();
                    sumNormOut += ComputeDevice.To(batch.Target, device ?? CPU).to(ScalarType.Float64).norm(1).sum().item<double>();
                    normRows += batch.Rows;
                }
                if (needSample && sampleRows < cfg.BDecInitRows)
                {
                    long take = Math.Min(batch.Rows, cfg.BDecInitRows - sampleRows);
                    sample.Add(batch.Target.narrow(0, 0, take).to(ScalarType.Float32, copy: true).DetachFromDisposeScope());
                    if (batch.HasSeparateTarget) inputs.Add(batch.Input.narrow(0, 0, take).to(ScalarType.Float32, copy: true).DetachFromDisposeScope());
                    sampleRows += take;
                }
            }
            if (normalize)
            {
                if (!(sumNormIn > 0)) throw new SaeSharpException("cannot normalise activations: the mean input norm of the estimation batches is 0");
                scaleIn = Math.Sqrt(source.DIn) / (sumNormIn / normRows);
                bool oneScale = !separateTarget || saes.Any(s => s.Sae.Cfg.ApplyBDecToInput);
                scaleOut = oneScale ? scaleIn : Math.Sqrt(source.DOut) / (sumNormOut / normRows);
            }

            using var _ = no_grad();
            using var initScope = NewDisposeScope();
            using Scalar scaleOutScalar = scaleOut.ToScalar(), scaleInScalar = scaleIn.ToScalar(), ratio = (scaleIn / scaleOut).ToScalar();
            Tensor? points = sample.Count > 0 ? ComputeDevice.To(cat(sample, 0), device ?? CPU) * scaleOutScalar : null;
            Tensor? inputPoints = inputs.Count > 0 ? ComputeDevice.To(cat(inputs, 0), device ?? CPU) * scaleInScalar : points is null ? null : points * ratio;
            foreach (var (index, sae, c) in saes)
            {
                // The saved SAE's function on raw activations, as the same function on the scaled ones.
                if (c.FromPretrainedPath is not null && (scaleIn != 1 || scaleOut != 1)) sae.FoldActivationScale(1 / scaleIn, 1 / scaleOut);
                // A training form that holds the decoder rows at unit norm starts from the same function with them there
                // (a folded activation scale leaves them at another norm).
                if (c.FromPretrainedPath is not null && sae.TrainsUnitNormDecoderRows) sae.FoldDecoderNorms();
                if (!Initializes(c)) continue;
                using var gen = new Generator(MixSeed(cfg.Seed, index, 0));
                sae.InitializeWeights(gen, c.DecoderInitNorm);
                if (!c.InitEncoderAsDecoderTranspose) sae.InitializeEncoderIndependently(gen, c.DecoderInitNorm);
                if (c.BDecInitMethod == "geometric_median") sae.BDec.copy_(GeometricMedian.Compute(points!));
                else if (c.BDecInitMethod == "mean") sae.BDec.copy_(points!.mean([0]));
                if (ThresholdsFromData(sae))
                    ((JumpReluSae)sae).InitializeForTargetL0(inputPoints!, TargetL0Control.StartL0(sae.Training, sae.Cfg));
            }
        }
        finally
        {
            foreach (var t in sample) t.Dispose();
            foreach (var t in inputs) t.Dispose();
        }
        return (scaleIn, scaleOut);
    }

    private static bool Initializes(TrainerConfig c) => c.InitializeWeights && c.FromPretrainedPath is null;

    /// <summary>JumpReLU under <c>--target-l0</c> starts its thresholds from the data (<see cref="TargetL0Control"/>).</summary>
    private static bool ThresholdsFromData(Sae sae) => sae is JumpReluSae && TargetL0Control.IsTwoSided(sae.Training, sae.Cfg) && sae.Training.AdaptToTargetL0;

    /// <summary>A generator seed for SAE <paramref name="slot"/> at <paramref name="step"/> of a run seeded
    /// <paramref name="seed"/> (a splitmix-style hash, non-negative).</summary>
    public static ulong MixSeed(long seed, int slot, long step)
    {
        unchecked
        {
            ulong z = (ulong)seed * 0x9E3779B97F4A7C15UL ^ ((ulong)slot + 1) * 0xBF58476D1CE4E5B9UL ^ ((ulong)step + 1) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            return z & 0x7FFF_FFFF_FFFF_FFFFUL;
        }
    }
}
