using System.Text.Json.Nodes;

namespace SaeSharp.Interop;

/// <summary>Typed reads of optional fields from the JSON configs of other libraries, with errors naming the file and key.</summary>
internal static class JsonFields
{
    public static string? Str(JsonObject o, string key, string source) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new SaeSharpException($"{source}: '{key}' should be a string."),
    };

    public static int? Int(JsonObject o, string key, string source) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out int i) => i,
        _ => throw new SaeSharpException($"{source}: '{key}' should be an integer."),
    };
}
