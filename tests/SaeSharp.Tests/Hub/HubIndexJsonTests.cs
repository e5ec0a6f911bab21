using SaeSharp.Hub;

namespace SaeSharp.Tests.Hub;

/// <summary>A <c>model.safetensors.index.json</c> whose root is not an object (fuzz finding, seed 1DeWqwVcsiP1).</summary>
public sealed class HubIndexJsonTests
{
    [Theory]
    [InlineData("\"model-00001-of-00002.safetensors\"")]
    [InlineData("[1, 2]")]
    [InlineData("7")]
    public void Index_whose_root_is_not_an_object_fails_naming_weight_map(string json)
    {
        string p = Path.Combine(Directory.CreateTempSubdirectory("saesharp-index-").FullName, "model.safetensors.index.json");
        File.WriteAllText(p, json);
        var e = Assert.Throws<SaeSharpException>(() => HfHubClient.ShardsOf(p));
        Assert.Contains("missing object 'weight_map'", e.Message);
        Directory.Delete(Path.GetDirectoryName(p)!, recursive: true);
    }
}
