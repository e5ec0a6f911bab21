namespace SaeSharp.Saes;

/// <summary>Creates SAE modules through the architecture registry (<see cref="SaeArchitectures"/>).</summary>
public static class SaeFactory
{
    /// <summary>Creates an SAE with zero weights (load or initialise them next).</summary>
    public static Sae Create(SaeConfig cfg)
    {
        cfg.Validate();
        return SaeArchitectures.Get(cfg.Architecture).Create(cfg);
    }
}
