namespace SaeSharp.Interop;

/// <summary>
/// A file that an SAE format's loader reads beside the file it is given (NAME_cfg.json beside a connor_rob_hook_z
/// NAME.pt, W_dec_N.safetensors beside W_enc_N.safetensors, ...), as a path relative to the same root as that file's
/// (a local folder, or a hub repo, '/'-separated): any one of <see cref="AnyOf"/> (a repo may spell it either way).
/// <see cref="Required"/> when the format does not load without it. Each format's list is the one that its detection
/// of a local file checks (<see cref="SaeLoader"/>) and that <c>hf:ORG/REPO/PATH</c> of a file downloads.
/// </summary>
public sealed record SaeCompanion(IReadOnlyList<string> AnyOf, bool Required)
{
    /// <summary>A companion the format needs: one of <paramref name="anyOf"/>.</summary>
    internal static SaeCompanion Needs(params string[] anyOf) => new(anyOf, true);

    /// <summary>A companion read when it is there.</summary>
    internal static SaeCompanion May(string path) => new([path], false);

    /// <summary>The companion as an error names it (<c>wandb-config.yaml or wanb-config.yaml</c>).</summary>
    public override string ToString() => string.Join(" or ", AnyOf.Select(NameOf));

    /// <summary>Whether every required companion of <paramref name="companions"/> (null: the file is not the format's)
    /// exists as a local file.</summary>
    internal static bool HasRequired(IReadOnlyList<SaeCompanion>? companions) =>
        companions is not null && companions.All(c => !c.Required || c.AnyOf.Any(File.Exists));

    /// <summary>The file name of <paramref name="path"/> ('/'- or system-separated).</summary>
    internal static string NameOf(string path) => path[(LastSeparator(path) + 1)..];

    /// <summary>The path of <paramref name="name"/> in the folder of <paramref name="file"/>, spelled as it is.</summary>
    internal static string Beside(string file, string name) => file[..(LastSeparator(file) + 1)] + name;

    /// <summary>The path of <paramref name="name"/> in the folder above <paramref name="file"/>'s; null when its folder
    /// is the root (of the repo, or of a relative path).</summary>
    internal static string? Above(string file, string name)
    {
        string folder = file[..Math.Max(LastSeparator(file), 0)];
        return LastSeparator(file) < 0 || folder.Length == 0 ? null : Beside(folder, name);
    }

    /// <summary>The name of the folder holding <paramref name="file"/>; "" at the root.</summary>
    internal static string FolderNameOf(string file) =>
        LastSeparator(file) is int i and > 0 ? NameOf(file[..i]) : "";

    private static int LastSeparator(string path) => Math.Max(path.LastIndexOf('/'), path.LastIndexOf(Path.DirectorySeparatorChar));
}
