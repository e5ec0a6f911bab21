using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>A transcoder set folder given to <c>--sae</c> where a whole CLT goes: <c>sae graph</c>, <c>sae attribute</c> and
/// <c>sae eval</c> give what the same weights as a CLT with zero off-diagonal decoders give.</summary>
public class TranscoderSetCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-tset-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void Graph_and_attribute_of_a_set_folder_equal_the_clts()
    {
        var model = TinyModels.WriteGpt2(P("m"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64);
        var r = CltReference.Random(2, 12, 16, 5, threshold: true, skip: true).ZeroOffDiagonal();
        r.ScaleThresholds(0.2);
        r.WriteTranscoderSet(P("set"), threshold: true);
        r.WriteCircuitTracerLn2(P("clt"));
        using (var row = tensor(new long[] { 5, 9, 2, 7, 7, 3 }).reshape(1, 6))
            SafeTensors.Save(P("one.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = row });

        foreach (var which in new[] { "set", "clt" })
        {
            var (exit, _, err) = CliRunner.Run("graph", "--model", model, "--sae", P(which), "--input", P("one.safetensors"), "--out", P($"{which}/g.json"),
                "--max-logits", "3", "--node-threshold", "0.9", "--edge-threshold", "0.95");
            Assert.True(exit == 0, err);
            (exit, _, err) = CliRunner.Run("attribute", "--model", model, "--sae", P(which), "--input", P("one.safetensors"), "--metric", "logit-diff:5,9",
                "--top", "4", "--out", P($"{which}/a.safetensors"));
            Assert.True(exit == 0, err);
        }
        var links = JsonNode.Parse(File.ReadAllText(P("set/g.json")))!["links"]!.AsArray();
        var expected = JsonNode.Parse(File.ReadAllText(P("clt/g.json")))!["links"]!.AsArray();
        Assert.NotEmpty(links);
        Assert.Equal(expected.Count, links.Count);
        for (int i = 0; i < links.Count; i++)
        {
            Assert.Equal((string?)expected[i]!["source"], (string?)links[i]!["source"]);
            Assert.Equal((string?)expected[i]!["target"], (string?)links[i]!["target"]);
            Assert.Equal((double)expected[i]!["weight"]!, (double)links[i]!["weight"]!, 5);
        }
        var a = SafeTensors.Load(P("set/a.safetensors"));
        var b = SafeTensors.Load(P("clt/a.safetensors"));
        Assert.Equal(b.Keys.Order(), a.Keys.Order());
        foreach (var k in a.Keys) Assert.True(a[k].allclose(b[k], rtol: 1e-5, atol: 1e-6), k);
        Assert.True(CrossLayerTranscoderLoader.IsCrossLayerTranscoder(P("set"), null));
    }
}
