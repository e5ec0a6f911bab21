using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace SaeSharp.Interop;

/// <summary>Reads the YAML configs of other libraries (<c>config.yaml</c>, wandb's <c>wandb-config.yaml</c>) with
/// YamlDotNet, with errors naming the file and key.</summary>
internal static class YamlFields
{
    /// <summary>The top-level mapping of the YAML file at <paramref name="path"/>.</summary>
    public static YamlMappingNode Load(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: file not found");
        var stream = new YamlStream();
        try
        {
            using var reader = new StringReader(File.ReadAllText(path));
            stream.Load(reader);
        }
        catch (Exception e) when (e is YamlException or ArgumentException or InvalidOperationException)
        {
            // YamlDotNet reports some malformed documents with other exceptions: a mapping entry with an empty key ("  : 8")
            // with ArgumentException ("The current event is of an unsupported type"), a flow mapping cut off by the end
            // of the file ("tied_weights: {rue\n…da") with InvalidOperationException from its scanner.
            throw new SaeSharpException($"{path}: invalid YAML ({e.Message})", e);
        }
        return stream.Documents.Count > 0 && stream.Documents[0].RootNode is YamlMappingNode m
            ? m
            : throw new SaeSharpException($"{path}: expected a YAML mapping at the top level");
    }

    /// <summary>The scalar at <paramref name="keys"/> (nested mappings), or null when a key is absent.</summary>
    public static string? Str(YamlMappingNode root, string source, params string[] keys)
    {
        YamlNode node = root;
        foreach (var key in keys)
        {
            if (node is not YamlMappingNode m)
                throw new SaeSharpException($"{source}: '{string.Join(".", keys)}': '{key}' is not inside a mapping");
            if (!m.Children.TryGetValue(new YamlScalarNode(key), out var child)) return null;
            node = child;
        }
        return node is YamlScalarNode s
            ? s.Value
            : throw new SaeSharpException($"{source}: '{string.Join(".", keys)}' should be a single value");
    }

    /// <summary>The string at <paramref name="keys"/>; a missing key is an error naming it.</summary>
    public static string RequiredStr(YamlMappingNode root, string source, params string[] keys) =>
        Str(root, source, keys) ?? throw new SaeSharpException($"{source}: missing key '{string.Join(".", keys)}'");

    /// <summary>The integer at <paramref name="keys"/>; a missing key or another value is an error naming it.</summary>
    public static int RequiredInt(YamlMappingNode root, string source, params string[] keys)
    {
        string s = RequiredStr(root, source, keys);
        return int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)
            ? v
            : throw new SaeSharpException($"{source}: '{string.Join(".", keys)}' is '{s}', expected an integer");
    }
}
