namespace SaeSharp.Saes;

/// <summary>The architecture registry: the <c>architecture</c> string of <c>cfg.json</c> to its module type.</summary>
public static class SaeFactory
{
    /// <summary>Creates an SAE with zero weights (load or initialise them next).</summary>
    public static Sae Create(SaeConfig cfg)
    {
        cfg.Validate();
        return cfg.Architecture switch
        {
            SaeArchitectures.Standard => new StandardSae(cfg),
            SaeArchitectures.TopK => new TopKSae(cfg),
            SaeArchitectures.BatchTopK => new BatchTopKSae(cfg),
            SaeArchitectures.MatryoshkaBatchTopK => new MatryoshkaBatchTopKSae(cfg),
            SaeArchitectures.Gated => new GatedSae(cfg),
            SaeArchitectures.JumpReLU => new JumpReluSae(cfg),
            _ => throw new SaeSharpException($"architecture '{cfg.Architecture}' is not implemented"),
        };
    }
}
