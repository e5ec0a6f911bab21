namespace SaeSharp.Training;

/// <summary>Learning-rate and sparsity-coefficient schedules as pure functions of the 0-based step.</summary>
public static class Schedules
{
    /// <summary>
    /// Learning rate of step <paramref name="step"/> (0-based) of <paramref name="totalSteps"/> T, with warm-up W and
    /// decay D. Every schedule warms up as lr·(s+1)/W for s &lt; W.
    /// <list type="bullet">
    /// <item><c>constant</c> (SAELens): lr, and over the last D steps lr·(1 − j/D) at step T − D + j (the first decay step
    /// still at lr, the last at lr/D; lr_end is ignored). dictionary_learning's <c>decay_start</c> gives the same values.</item>
    /// <item><c>cosineannealing</c> (SAELens): from step W, lr_end + (lr − lr_end)·(1 + cos(πj/M))/2 at step W + j with
    /// M = T − W − D; then over the last D steps lr_end·(1 − j/D).</item>
    /// <item><c>cosineannealingwarmrestarts</c> (SAELens): from step W, PyTorch's <c>CosineAnnealingWarmRestarts</c> with
    /// T_0 = M // C (C: SAELens's n_restart_cycles, 1 in this overload; M = T − W − D) and η_min = lr_end:
    /// lr_end + (lr − lr_end)·(1 + cos(π·(j mod T_0)/T_0))/2 at step W + j (back at lr at j = T_0, 2T_0, …; a remainder
    /// M − C·T_0 starts one more, partial cycle); then over the last D steps lr_end·(1 − j/D).</item>
    /// <item><c>linear</c>, <c>cosine</c> (SaeSharp's own, not SAELens names): over the last D steps (all steps after the
    /// warm-up when D = 0) progress p = (j + 1)/D, lr + (lr_end − lr)·p or lr_end + (lr − lr_end)·(1 + cos πp)/2, so
    /// that the last step runs at exactly lr_end.</item>
    /// </list>
    /// </summary>
    public static double LearningRate(string scheduler, double lr, double lrEnd, long warmUpSteps, long decaySteps, long totalSteps, long step) =>
        LearningRate(scheduler, lr, lrEnd, warmUpSteps, decaySteps, totalSteps, step, 1);

    /// <summary>As <see cref="LearningRate(string, double, double, long, long, long, long)"/>, with the number of cosine
    /// cycles of <c>cosineannealingwarmrestarts</c> (SAELens's <c>n_restart_cycles</c>; the other schedules ignore it).</summary>
    public static double LearningRate(string scheduler, double lr, double lrEnd, long warmUpSteps, long decaySteps, long totalSteps, long step, long numCycles)
    {
        if (warmUpSteps > 0 && step < warmUpSteps) return lr * (step + 1) / warmUpSteps;
        var name = scheduler.ToLowerInvariant();
        if (name is LrSchedulers.Constant or LrSchedulers.CosineAnnealing or LrSchedulers.CosineAnnealingWarmRestarts)
        {
            long decayStart = totalSteps - decaySteps;
            if (decaySteps > 0 && step >= decayStart)
            {
                double from = name == LrSchedulers.Constant ? lr : lrEnd;
                return from * (1 - (double)(step - decayStart) / decaySteps);
            }
            if (name == LrSchedulers.Constant) return lr;
            long m = totalSteps - warmUpSteps - decaySteps;
            long j = step - warmUpSteps;
            if (name == LrSchedulers.CosineAnnealingWarmRestarts)
            {
                long t0 = m / numCycles;
                if (numCycles <= 0 || t0 <= 0)
                    throw new SaeSharpException($"cosineannealingwarmrestarts: n_restart_cycles {numCycles} leaves cycles of {t0} steps in the {m} steps between warm-up and decay (T_0 = {m} // {numCycles} must be positive)");
                return lrEnd + (lr - lrEnd) * (1 + Math.Cos(Math.PI * (j % t0) / t0)) / 2;
            }
            return lrEnd + (lr - lrEnd) * (1 + Math.Cos(Math.PI * j / m)) / 2;
        }
        long d = decaySteps > 0 ? decaySteps : totalSteps - warmUpSteps;
        long start = totalSteps - d;
        if (d <= 0 || step < start) return lr;
        double p = Math.Min(1.0, (double)(step - start + 1) / d);
        return name switch
        {
            LrSchedulers.Linear => lr + (lrEnd - lr) * p,
            LrSchedulers.Cosine => lrEnd + (lr - lrEnd) * (1 + Math.Cos(Math.PI * p)) / 2,
            _ => throw new SaeSharpException($"lr_scheduler_name '{scheduler}' is unknown, expected {string.Join("|", LrSchedulers.All)}"),
        };
    }

    /// <summary>Learning rate of a step under a (validated) config, with the resolved base lr.</summary>
    public static double LearningRate(TrainerConfig cfg, double lr, long step) =>
        LearningRate(cfg.LrSchedulerName, lr, cfg.LrEnd ?? lr / 10, cfg.LrWarmUpSteps, cfg.LrDecaySteps, cfg.Steps, step, cfg.NRestartCycles);

    /// <summary>Multiplier of the sparsity coefficient: s/N for s &lt; N (0 at the first step, as SAELens's L1 scheduler), then 1.</summary>
    public static double SparsityScale(long warmUpSteps, long step) =>
        warmUpSteps > 0 && step < warmUpSteps ? (double)step / warmUpSteps : 1.0;
}
