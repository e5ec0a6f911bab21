using SaeSharp.Models;
using SaeSharp.Tokenizers;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary><c>--ablate-head-mode mean --mean-over</c> a text dataset (.txt, .jsonl, as <c>--dataset</c>): tokenized by the
/// model into windows (BOS first, as SAELens's ActivationsStore), up to <c>--mean-tokens</c>; the head's mean z equals the
/// mean computed by hand over those windows; the token-file form is unchanged; bad input is refused naming the flag and file.</summary>
public class MeanOverDatasetTests : ModelTestBase
{
    // One document of more than 17 × 15 GPT-2 tokens.
    private static readonly string Document = string.Join(" ", Enumerable.Repeat(
        "When Mary and John went to the store, John gave a drink to Mary. Then the cat sat on the mat, and the dog ran to the park with a ball.", 8));

    [Fact]
    public void Mean_over_a_text_dataset_is_the_heads_mean_z_over_its_windows_computed_by_hand()
    {
        string dir = TinyModels.WriteGpt2(Sub("m"), seed: 6, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 16);
        AddGpt2Tokenizer(dir);
        using var model = ModelLoader.FromPretrained(dir);
        using var tokens = model.ToTokens("Hello world, the cat");
        string input = Sub("in.safetensors");
        SaeSharp.IO.SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tokens });
        string txt = Sub("data.txt"), jsonl = Sub("data.jsonl");
        File.WriteAllText(txt, Document + "\n");
        File.WriteAllText(jsonl, System.Text.Json.JsonSerializer.Serialize(new { text = Document }) + "\n");

        // By hand: windows of n_ctx = 16 tokens, each BOS then the next 15 of the document; --mean-tokens 280 takes 17 (272
        // tokens), run as 16 windows and 1.
        long bos = model.Tokenizer.BosOrEosTokenId() ?? throw new InvalidOperationException("no BOS");
        var ids = model.Tokenizer.Encode(Document).Select(i => (long)i).ToArray();
        Assert.True(ids.Length >= 17 * 15);
        using var windows = tensor(Enumerable.Range(0, 17).SelectMany(w => ids.Skip(15 * w).Take(15).Prepend(bos)).ToArray(), [17, 16]);
        string z = model.HookPoints.Blocks[1].Z;
        using var refRun = model.RunWithCache(windows, [z]);
        using var mean64 = refRun.Cache[z].select(2, 2).to(ScalarType.Float64).mean([0, 1]);
        using var mean = mean64.to(ScalarType.Float32);
        using var expected = model.RunWithHooks(tokens, (z, t =>
        {
            var y = t.clone();
            y[.., .., 2] = mean;
            return y;
        }));

        foreach (var data in new[] { txt, jsonl })
        {
            string output = Sub($"{Path.GetFileName(data)}.out.safetensors");
            var (exit, stdout, err) = CliRunner.Run("model", "run", "--model", dir, "--input", input, "--out", output,
                "--ablate-head", "1.2", "--ablate-head-mode", "mean", "--mean-over", data, "--mean-tokens", "280");
            Assert.True(exit == 0, err);
            Assert.Contains($"L1H2 mean-ablated (hook_z at every position; mean over {data} (17 windows of 16 tokens: 272 tokens))", stdout.ReplaceLineEndings(" "));
            var saved = SaeSharp.IO.SafeTensors.Load(output);
            Assert.True(saved["logits"].allclose(expected, rtol: 1e-4, atol: 1e-5), data);
            foreach (var t in saved.Values) t.Dispose();
        }

        // The token-file form is unchanged: the same windows as token ids give the same run.
        string ref_ = Sub("ref.safetensors"), fromIds = Sub("ids.out.safetensors");
        SaeSharp.IO.SafeTensors.Save(ref_, new Dictionary<string, Tensor> { ["tokens"] = windows });
        var (idsExit, idsOut, idsErr) = CliRunner.Run("model", "run", "--model", dir, "--input", input, "--out", fromIds,
            "--ablate-head", "1.2", "--ablate-head-mode", "mean", "--mean-over", ref_);
        Assert.True(idsExit == 0, idsErr);
        Assert.Contains($"mean over {ref_})", idsOut);
        var fromIdsSaved = SaeSharp.IO.SafeTensors.Load(fromIds);
        Assert.True(fromIdsSaved["logits"].allclose(expected, rtol: 1e-4, atol: 1e-5));
        foreach (var t in fromIdsSaved.Values) t.Dispose();
    }

    [Fact]
    public void A_bad_mean_over_dataset_or_mean_tokens_is_refused_naming_the_flag_and_file()
    {
        string dir = TinyModels.WriteGpt2(Sub("m"), seed: 6, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 16);
        AddGpt2Tokenizer(dir);
        string shortText = Sub("short.txt"), ids = Sub("ids.safetensors");
        File.WriteAllText(shortText, "the cat\n");
        string empty = Sub("empty.jsonl"), noField = Sub("nofield.jsonl");
        File.WriteAllText(empty, "");
        File.WriteAllText(noField, "{\"body\": \"the cat sat on the mat\"}\n");
        using (var t = tensor(new long[] { 50256, 1000, 2000 }, [1, 3])) SaeSharp.IO.SafeTensors.Save(ids, new Dictionary<string, Tensor> { ["tokens"] = t });
        string[] run = ["model", "run", "--model", dir, "--prompt", "Hello world", "--ablate-head", "0.1", "--ablate-head-mode", "mean"];
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--mean-over", shortText], $"--mean-over {shortText}: fewer tokens than one window of 16"),
            (["--mean-over", empty], $"--mean-over {empty}: "),
            (["--mean-over", noField], $"--mean-over {noField}: {noField}: no 'tokens', 'input_ids', 'text' or 'problem' field in its first row (it has: body); name the text column with --mean-text-field"),
            (["--mean-over", noField, "--mean-text-field", "body"], $"--mean-over {noField}: fewer tokens than one window of 16"),
            (["--mean-over", Sub("nothing.txt")], $"--mean-over {Sub("nothing.txt")}: no such file or folder"),
            (["--mean-over", ids, "--mean-tokens", "100"], "--mean-tokens: how a --mean-over text dataset is read"),
            (["--mean-tokens", "100"], "--mean-tokens: how a --mean-over text dataset is read"),
            (["--mean-over", ids, "--mean-text-field", "text"], "--mean-text-field: how a --mean-over text dataset is read"),
            (["--mean-over", shortText, "--mean-tokens", "0"], "--mean-tokens"),
        })
        {
            var (exit, _, err) = CliRunner.Run([.. run, .. args]);
            Assert.NotEqual(0, exit);
            Assert.Contains(message, err.ReplaceLineEndings(" "));
        }
    }
}
