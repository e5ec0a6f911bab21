using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Tests.Cli;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>Held-out rows when the user does not choose them: small files hold out a share instead of being refused.</summary>
public sealed class ActivationSplitTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-split-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string File(long rows, int d = 4)
    {
        string path = Path.Combine(_dir, $"a{rows}.safetensors");
        using var data = TorchScalars.Arange(rows * d, dtype: ScalarType.Float32).reshape(rows, d);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = data });
        return path;
    }

    [Theory]
    [InlineData(2, 1)]
    [InlineData(9, 1)]
    [InlineData(200, 20)]
    [InlineData(100_000, 10_000)]
    [InlineData(1_000_000, 16_384)]
    public void The_default_holds_out_a_tenth_capped_at_16384(long total, long expected) =>
        Assert.Equal(expected, ActivationSplit.DefaultEvalRowsFor(total));

    [Fact]
    public void A_small_file_splits_into_its_first_rows_for_training_and_its_last_tenth_held_out()
    {
        var (train, eval) = ActivationSplit.HoldOut([File(200)], evalRows: null, new ActivationFileSourceOptions { Loop = false });
        using (train)
        using (eval)
        {
            Assert.Equal(180, train.Rows);
            Assert.Equal(20, eval.Rows);
            using var first = eval.Next(100)!;
            Assert.Equal(20, first.Rows);
            Assert.Equal(180 * 4f, first.Input[0, 0].item<float>()); // row 180 is the first held-out row
            Assert.Null(eval.Next(1));
            // Training reads rows 0..179 (in some order) and none of the held-out ones: row r starts with the value 4r.
            var seen = new List<float>();
            while (train.Next(64) is { } batch)
                using (batch) seen.AddRange(batch.Input[.., 0].data<float>().ToArray());
            Assert.Equal(Enumerable.Range(0, 180).Select(r => r * 4f), seen.Order());
        }
    }

    [Fact]
    public void An_explicit_count_that_leaves_nothing_to_train_on_is_an_error_that_says_what_to_do()
    {
        var e = Assert.Throws<SaeSharpException>(() => ActivationSplit.HoldOut([File(200)], evalRows: 16384));
        Assert.Contains("between 1 and 199", e.Message);
        Assert.Contains("leave it out", e.Message);
        var one = Assert.Throws<SaeSharpException>(() => ActivationSplit.HoldOut([File(1)], evalRows: null));
        Assert.Contains("at least 2", one.Message);
    }

    [Fact]
    public void Sae_train_on_a_500_row_file_without_eval_rows_trains_and_evaluates_the_last_50_rows()
    {
        string data = File(500, d: 8);
        var r = CliRunner.Run("train", "--activations", data, "--arch", "topk", "--k", "2", "--dict-size", "16",
            "--steps", "3", "--batch-size", "32", "--out", Path.Combine(_dir, "run"));
        Assert.True(r.Exit == 0, r.Err);
        string metrics = System.IO.File.ReadAllText(Path.Combine(_dir, "run", "metrics.json"));
        Assert.Contains("\"n_rows\": 50", metrics);
    }
    [Fact]
    public void NaN_in_the_held_out_rows_is_an_error_naming_the_row_before_training_writes_anything()
    {
        // 500 rows hold out the last 50 (rows 450..499): the NaN at row 497 is only read by the end-of-run evaluation.
        string path = Path.Combine(_dir, "nan.safetensors");
        using (var data = TorchScalars.Arange(500 * 8, dtype: ScalarType.Float32).reshape(500, 8))
        {
            data[497, 3] = tensor(float.NaN);
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = data });
        }
        var e = Assert.Throws<SaeSharpException>(() => ActivationSplit.HoldOut([path], evalRows: null));
        Assert.Contains($"{path}: tensor 'activations': row 497 holds NaN (column 3)", e.Message);

        string run = Path.Combine(_dir, "run");
        var r = CliRunner.Run("train", "--activations", path, "--arch", "topk", "--k", "2", "--dict-size", "16",
            "--steps", "3", "--batch-size", "32", "--out", run);
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("row 497 holds NaN", r.Err);
        Assert.False(Directory.Exists(run), "nothing is written: no checkpoints, no log");
    }

    [Fact]
    public void The_held_out_rows_read_in_order_after_the_up_front_check()
    {
        var (train, eval) = ActivationSplit.HoldOutLastRows([File(40)], 7, new ActivationFileSourceOptions { ChunkRows = 3, BufferRows = 3 });
        using (train)
        using (eval)
        {
            var seen = new List<float>();
            while (eval.Next(2) is { } batch)
                using (batch) seen.AddRange(batch.Input[.., 0].data<float>().ToArray());
            Assert.Equal(Enumerable.Range(33, 7).Select(r => r * 4f), seen); // rows 33..39, each starting with 4r
        }
    }
}
