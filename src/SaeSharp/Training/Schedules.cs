namespace SaeSharp.Training;

/// <summary>Learning-rate and sparsity-coefficient schedules as pure functions of the 0-based step.</summary>
public static class Schedules
{
    /// <summary>
    /// Learning rate of step <paramref name="step"/> (0-based) of <paramref name="totalSteps"/>:
    /// warm-up lr·(s+1)/W for s &lt; W; then lr; for linear/cosine, over the last D steps (D = lr_decay_steps, or all
    /// steps after warm-up when 0) progress p = (s − (T − D) + 1)/D goes to 1 and lr moves to lr_end
    /// linearly (lr + (lr_end − lr)·p) or along a half cosine (lr_end + (lr − lr_end)·(1 + cos πp)/2).
    /// "constant" does not decay unless lr_decay_steps &gt; 0, in which case it decays linearly to 0 (as in SAELens).
    /// </summary>
    public static double LearningRate(string scheduler, double lr, double lrEnd, long warmUpSteps, long decaySteps, long totalSteps, long step)
    {
        if (warmUpSteps > 0 && step < warmUpSteps) return lr * (step + 1) / warmUpSteps;
        var name = scheduler.ToLowerInvariant();
        if (name == LrSchedulers.Constant)
        {
            if (decaySteps <= 0) return lr;
            lrEnd = 0; // SAELens: "constant" with lr_decay_steps decays linearly to 0
            name = LrSchedulers.Linear;
        }
        long d = decaySteps > 0 ? decaySteps : totalSteps - warmUpSteps;
        long start = totalSteps - d;
        if (d <= 0 || step < start) return lr;
        double p = Math.Min(1.0, (double)(step - start + 1) / d);
        return name switch
        {
            LrSchedulers.Linear => lr + (lrEnd - lr) * p,
            LrSchedulers.Cosine or "cosineannealing" => lrEnd + (lr - lrEnd) * (1 + Math.Cos(Math.PI * p)) / 2,
            _ => throw new SaeSharpException($"lr_scheduler_name '{scheduler}' is unknown, expected {string.Join("|", LrSchedulers.All)}"),
        };
    }

    /// <summary>Learning rate of a step under a (validated) config, with the resolved base lr.</summary>
    public static double LearningRate(TrainerConfig cfg, double lr, long step) =>
        LearningRate(cfg.LrSchedulerName, lr, cfg.LrEnd ?? lr / 10, cfg.LrWarmUpSteps, cfg.LrDecaySteps, cfg.Steps, step);

    /// <summary>Multiplier of the sparsity coefficient: s/N for s &lt; N (0 at the first step, as SAELens's L1 scheduler), then 1.</summary>
    public static double SparsityScale(long warmUpSteps, long step) =>
        warmUpSteps > 0 && step < warmUpSteps ? (double)step / warmUpSteps : 1.0;
}
