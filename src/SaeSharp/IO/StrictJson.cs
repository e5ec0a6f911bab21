using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.IO;

/// <summary>
/// Parses JSON that comes from outside (file headers, configs, hub answers) with repeated property names refused at
/// parse time as a <see cref="JsonException"/>. <see cref="JsonNode.Parse(string, JsonNodeOptions?, JsonDocumentOptions)"/>
/// otherwise accepts them and throws <see cref="ArgumentException"/> later, at the first read of the object, where the
/// readers' error handling does not expect it (a fuzzed safetensors header did this).
/// </summary>
internal static class StrictJson
{
    private static readonly JsonDocumentOptions Options = new() { AllowDuplicateProperties = false };

    /// <summary>The JSON value of <paramref name="text"/>; invalid JSON and repeated keys throw <see cref="JsonException"/>.</summary>
    public static JsonNode? Parse(string text) => JsonNode.Parse(text, documentOptions: Options);
}
