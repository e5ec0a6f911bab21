using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;

namespace SaeSharp.Tests.Training;

/// <summary>SAELens's <c>exclude_special_tokens: bool | list[int]</c> in a runner config and in an SAE's cfg.json metadata.</summary>
public class ExcludeTokenIdsConfigTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("exclude-ids-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private static string Cfg(string exclude) =>
        "{\"architecture\": \"standard\", \"d_in\": 4, \"d_sae\": 8, \"metadata\": {\"hook_name\": \"blocks.0.hook_resid_pre\"" + exclude + "}}";

    [Theory]
    [InlineData(", \"exclude_special_tokens\": true", "true")]
    [InlineData(", \"exclude_special_tokens\": false", "false")]
    [InlineData(", \"exclude_special_tokens\": null", "null")]
    [InlineData("", "null")]
    [InlineData(", \"exclude_special_tokens\": [0, 50256]", "[0,50256]")]
    [InlineData(", \"exclude_special_tokens\": []", "[]")]
    public void Metadata_reads_and_writes_the_field_as_saelens_does(string field, string written)
    {
        string path = Path.Combine(_dir, "cfg.json");
        File.WriteAllText(path, Cfg(field));
        var cfg = SaeLensFormat.ReadConfig(path);
        var again = SaeConfig.FromJson(cfg.ToJson());
        Assert.Equal(written, JsonNode.Parse(again.ToJson())!["metadata"]!["exclude_special_tokens"]?.ToJsonString() ?? "null");
        Assert.Equal(cfg.Metadata.ExcludeSpecialTokens, again.Metadata.ExcludeSpecialTokens);
        Assert.Equal(cfg.Metadata.ExcludeTokenIds, again.Metadata.ExcludeTokenIds);
        // A boolean reads as before; a list reads as ids, with no boolean.
        Assert.Equal(written is "true" or "false" ? bool.Parse(written) : null, cfg.Metadata.ExcludeSpecialTokens);
        Assert.Equal(written.StartsWith('[') ? JsonNode.Parse(written)!.AsArray().Select(n => (long)n!).ToArray() : null, cfg.Metadata.ExcludeTokenIds);
    }

    [Theory]
    [InlineData("[\"a\"]")]
    [InlineData("[-1]")]
    [InlineData("[1.5]")]
    [InlineData("[true]")]
    [InlineData("\"yes\"")]
    [InlineData("3")]
    public void Bad_metadata_values_are_one_line_errors_naming_file_key_and_value(string value)
    {
        string path = Path.Combine(_dir, "cfg.json");
        File.WriteAllText(path, Cfg($", \"exclude_special_tokens\": {value}"));
        var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.ReadConfig(path));
        Assert.Equal($"{path}: metadata exclude_special_tokens {JsonNode.Parse(value)!.ToJsonString()}: expected true, false or a list of non-negative token ids, e.g. [0, 50256]", e.Message);
    }

    [Fact]
    public void A_runner_config_list_is_read_as_ids()
    {
        var s = TrainingSettings.FromJson("""{"model_name": "gpt2", "exclude_special_tokens": [50256, 0]}""", "runner.json");
        Assert.Equal(new long[] { 50256L, 0L }, s.ExcludeTokenIds);
        Assert.Null(s.ExcludeSpecialTokens);
        var b = TrainingSettings.FromJson("""{"model_name": "gpt2", "exclude_special_tokens": true}""", "runner.json");
        Assert.Equal((true, (long[]?)null), (b.ExcludeSpecialTokens, b.ExcludeTokenIds));
    }

    [Theory]
    [InlineData("[\"a\"]")]
    [InlineData("[-3]")]
    [InlineData("[2.5]")]
    [InlineData("\"all\"")]
    public void Bad_runner_config_values_are_one_line_errors(string value)
    {
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson($$"""{"model_name": "gpt2", "exclude_special_tokens": {{value}}}""", "runner.json"));
        Assert.Equal($"runner.json: exclude_special_tokens {JsonNode.Parse(value)!.ToJsonString()}: expected true, false or a list of non-negative token ids, e.g. [0, 50256]", e.Message);
    }

    /// <summary>The runner config's list reaches the options and the trained SAE's metadata unchanged; a flag wins over the field.</summary>
    [Fact]
    public void The_list_goes_from_the_config_to_the_metadata_and_flags_win()
    {
        string data = Path.Combine(_dir, "d.txt");
        File.WriteAllText(data, "hello world\n");
        ModelDataOptions Read(string config, params string[] args)
        {
            var cli = new SaeSharp.Cli.Commands.ModelDataOptionsCli();
            var command = new System.CommandLine.Command("t");
            cli.AddTo(command);
            return cli.Read(command.Parse(["--model", "builtin", "--dataset", data, "--hook", "blocks.0.hook_resid_post", .. args]),
                TrainingSettings.FromJson(config, "runner.json"));
        }
        const string listed = """{"exclude_special_tokens": [7, 3]}""", special = """{"exclude_special_tokens": true}""";
        var fromConfig = Read(listed);
        Assert.Equal(new long[] { 7L, 3L }, fromConfig.ExcludeTokenIds);
        var meta = TrainingPlan.MetadataOf(fromConfig, "blocks.0.hook_resid_post");
        var back = SaeConfig.FromJson(new SaeConfig { DIn = 4, DSae = 8, Metadata = meta }.ToJson()).Metadata;
        Assert.Equal(new long[] { 7L, 3L }, back.ExcludeTokenIds);
        Assert.Null(back.ExcludeSpecialTokens);

        var flag = Read(listed, "--exclude-special-tokens");
        Assert.Equal((true, (IReadOnlyList<long>?)null), (flag.ExcludeSpecialTokens, flag.ExcludeTokenIds));
        var ids = Read(special, "--exclude-token-ids", "1, 2");
        Assert.Null(ids.ExcludeSpecialTokens);
        Assert.Equal(new long[] { 1L, 2L }, ids.ExcludeTokenIds);
        Assert.Equal(true, Read(special).ExcludeSpecialTokens);
        Assert.Equal("give --exclude-special-tokens (the tokenizer's special tokens) or --exclude-token-ids (exactly those ids), not both",
            Assert.Throws<SaeSharpException>(() => Read(special, "--exclude-special-tokens", "--exclude-token-ids", "1")).Message);
        Assert.Equal("--exclude-token-ids 1,-2: expected comma-separated non-negative token ids, e.g. 0,50256",
            Assert.Throws<SaeSharpException>(() => Read(special, "--exclude-token-ids", "1,-2")).Message);
    }
}
