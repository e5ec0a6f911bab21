namespace SaeSharp.Saes;

/// <summary>The architecture registry: cfg.json <c>architecture</c> names (SAELens's) to <see cref="SaeArchitecture"/>s.</summary>
public static class SaeArchitectures
{
    /// <summary>"standard": ReLU encoder (alias "relu").</summary>
    public const string Standard = "standard";
    /// <summary>"topk".</summary>
    public const string TopK = "topk";
    /// <summary>"batchtopk".</summary>
    public const string BatchTopK = "batchtopk";
    /// <summary>"gated".</summary>
    public const string Gated = "gated";
    /// <summary>"jumprelu".</summary>
    public const string JumpReLU = "jumprelu";
    /// <summary>"matryoshka_batchtopk" (alias "matryoshka").</summary>
    public const string MatryoshkaBatchTopK = "matryoshka_batchtopk";
    /// <summary>"skip_transcoder": a ReLU transcoder with a linear skip connection W_skip (SAELens).</summary>
    public const string SkipTranscoder = "skip_transcoder";
    /// <summary>"jumprelu_skip_transcoder": a JumpReLU transcoder with a linear skip connection W_skip (SAELens 6.37).</summary>
    public const string JumpReluSkipTranscoder = "jumprelu_skip_transcoder";
    /// <summary>"matching_pursuit": latents chosen greedily against the residual, encoder tied to the decoder (SAELens 6.37).</summary>
    public const string MatchingPursuit = "matching_pursuit";

    /// <summary>"temporal": SAELens's Temporal SAE (canrager), inference only.</summary>
    public const string Temporal = "temporal";

    private static readonly List<SaeArchitecture> Registered =
    [
        StandardSae.Descriptor,
        TopKSae.Descriptor,
        BatchTopKSae.Descriptor,
        GatedSae.Descriptor,
        JumpReluSae.Descriptor,
        MatryoshkaBatchTopKSae.Descriptor,
        SkipTranscoderSae.Descriptor,
        JumpReluSae.SkipTranscoderDescriptor,
        TemporalSae.Descriptor,
        MatchingPursuitSae.Descriptor,
    ];

    /// <summary>The registered names, in registration order.</summary>
    public static IReadOnlyList<string> All
    {
        get { lock (Registered) return Registered.Select(a => a.Name).ToList(); }
    }

    /// <summary>The architecture registered under <paramref name="name"/> or one of its aliases, or null.</summary>
    public static SaeArchitecture? Find(string? name)
    {
        if (name is null) return null;
        lock (Registered)
            return Registered.FirstOrDefault(a => a.Name == name) ?? Registered.FirstOrDefault(a => a.Aliases.Contains(name));
    }

    /// <summary><see cref="Find"/>, or a <see cref="SaeSharpException"/> listing the known names.</summary>
    public static SaeArchitecture Get(string name, string source = "cfg.json") =>
        Find(name) ?? throw new SaeSharpException($"{source}: unknown architecture '{name}'{NameSuggestion.For(name, All)} (known: {string.Join(", ", All)})");

    /// <summary>The architecture whose training behaviour <paramref name="architecture"/> shares
    /// (<see cref="SaeArchitecture.TrainsAs"/>): <see cref="JumpReLU"/> for <see cref="JumpReluSkipTranscoder"/>,
    /// <see cref="Standard"/> for <see cref="SkipTranscoder"/>, else its own registered name (an unknown name as given).
    /// Compare this, not the cfg.json name, where training behaviour is meant.</summary>
    public static string TrainsAs(string architecture) => Find(architecture) is { } a ? a.TrainsAs ?? a.Name : architecture;

    /// <summary>Registers an architecture of one's own (its name and aliases must be new).</summary>
    public static void Register(SaeArchitecture architecture)
    {
        lock (Registered)
        {
            foreach (var n in architecture.Aliases.Prepend(architecture.Name))
                if (Registered.Any(a => a.Name == n || a.Aliases.Contains(n)))
                    throw new SaeSharpException($"architecture name '{n}' is already registered");
            Registered.Add(architecture);
        }
    }
}
