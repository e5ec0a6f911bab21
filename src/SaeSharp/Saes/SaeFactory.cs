namespace SaeSharp.Saes;

/// <summary>Creates SAE modules through the architecture registry (<see cref="SaeArchitectures"/>).</summary>
public static class SaeFactory
{
    /// <summary>Creates an SAE with zero weights (load or initialise them next). The caller owns it and disposes it; its
    /// weights belong to no dispose scope, so an SAE made (or loaded) inside a <c>torch.NewDisposeScope()</c> outlives it.</summary>
    public static Sae Create(SaeConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        cfg.Validate();
        return OwnedModules.Detach(SaeArchitectures.Get(cfg.Architecture).Create(cfg));
    }
}
