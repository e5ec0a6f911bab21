using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// <c>sae eval --sae mwhanna-qwen3-0.6b-transcoders-lowl0/layer_1</c> offline from a hub cache laid out as huggingface_hub
/// writes it (the mwhanna fixture of tests/data/saelens_conversions: layer_1.safetensors, wandb-config.yaml, config.yaml)
/// on the tiny Qwen 3 checkpoint (d_model 32, as the fixture's wandb d_model).
/// </summary>
public class QwenTranscoderCommandTests : TinyGpt2CliTestBase
{
    [Fact]
    public void Eval_of_an_mwhanna_release_names_the_hook_it_reads_and_the_hook_it_replaces()
    {
        string model = P("qwen3");
        Directory.CreateDirectory(model);
        foreach (var f in new[] { "config.json", "generation_config.json", "model.safetensors" })
            File.Copy(TestPaths.Data("hf_models", "qwen3", f), Path.Combine(model, f));
        SentencePieceTokenizerTests.WriteTokenizer(model);
        string commit = new('c', 40), repo = P("hub", "models--mwhanna--qwen3-0.6b-transcoders-lowl0");
        string snapshot = Path.Combine(repo, "snapshots", commit);
        Directory.CreateDirectory(snapshot);
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), commit);
        foreach (var f in new[] { "layer_1.safetensors", "wandb-config.yaml", "config.yaml" })
            File.Copy(TestPaths.Data("saelens_conversions", "mwhanna", f), Path.Combine(snapshot, f));
        var rng = new Random(5);
        string[] words = ["a", "b", "ab", "ba", "aab", "abb"];
        File.WriteAllLines(P("text.txt"), Enumerable.Range(0, 60).Select(_ => string.Join(" ", Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)]))));
        var env = new Dictionary<string, string> { ["HF_HUB_CACHE"] = P("hub"), ["HF_HUB_OFFLINE"] = "1" };
        var r = CliRunner.RunWithEnvironment(env, "eval", "--model", model, "--sae", "mwhanna-qwen3-0.6b-transcoders-lowl0/layer_1",
            "--dataset", P("text.txt"), "--tokens", "64", "--context-size", "16");
        Ok(r);
        // SAELens's get_mwhanna_transcoder_config_from_hf: hook_name blocks.1.mlp.hook_in (TransformerLens 3's MLP input,
        // ln2.hook_normalized here), hook_name_out blocks.1.hook_mlp_out.
        Assert.Contains("hook\tblocks.1.ln2.hook_normalized", r.Out);
        Assert.Contains("hook_out (replaced)\tblocks.1.hook_mlp_out", r.Out);
    }
}
