using System.Text.Json.Nodes;
using SaeSharp.Activations;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

public class TensorActivationSourceTests
{
    private static Tensor Data(int n, int d) => TorchScalars.Arange(n, dtype: ScalarType.Float32).unsqueeze(1).expand(n, d).contiguous();

    private static long[] Ids(ActivationBatch b) => b.Input[.., 0].data<float>().Select(v => (long)v).ToArray();

    [Fact]
    public void EachPassIsAPermutationAndBatchesCrossPassBoundaries()
    {
        using var src = new TensorActivationSource(Data(10, 3), loop: true, seed: 7);
        var ids = new List<long>();
        for (int i = 0; i < 10; i++) { using var b = src.Next(3)!; Assert.Equal(3, b.Rows); ids.AddRange(Ids(b)); }
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), ids.Take(10).Order());
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), ids.Skip(10).Take(10).Order());
        Assert.NotEqual(ids.Take(10), ids.Skip(10).Take(10));
    }

    [Fact]
    public void UnshuffledWithoutLoopEndsWithShortBatch()
    {
        using var src = new TensorActivationSource(Data(5, 2), shuffle: false);
        Assert.Equal(new long[] { 0, 1, 2 }, Ids(src.Next(3)!));
        Assert.Equal(new long[] { 3, 4 }, Ids(src.Next(3)!));
        Assert.Null(src.Next(3));
    }

    [Fact]
    public void SavedStateResumesExactly()
    {
        var x = randn(23, 4);
        var y = randn(23, 2);
        using var a = new TensorActivationSource(x, y, loop: true, seed: 1);
        for (int i = 0; i < 9; i++) a.Next(4)!.Dispose();
        var state = JsonNode.Parse(a.SaveState().ToJsonString())!;
        using var b = new TensorActivationSource(x, y, loop: true, seed: 1);
        b.LoadState(state);
        for (int i = 0; i < 15; i++)
        {
            using var p = a.Next(4)!;
            using var q = b.Next(4)!;
            Assert.True(p.Input.equal(q.Input).all().item<bool>());
            Assert.True(p.Target.equal(q.Target).all().item<bool>());
        }
    }

    [Fact]
    public void HugeFiniteValuesAreAccepted()
    {
        var x = full(4, 3, float.MaxValue);
        using var src = new TensorActivationSource(x);
        Assert.Equal(4, src.Rows);
    }

    [Fact]
    public void NaNInMemoryIsReportedWithRow()
    {
        var x = Data(6, 2);
        x[4, 1] = tensor(float.NaN);
        var e = Assert.Throws<SaeSharpException>(() => new TensorActivationSource(x, name: "synthetic"));
        Assert.Contains("synthetic: input: row 4 holds NaN", e.Message);
    }

    [Fact]
    public void Construction_and_dispose_leave_no_live_tensor()
    {
        // detach() made a handle nobody disposed: it kept the caller's input alive until the finalizer ran.
        using var x = randn(8, 3);
        using var y = randn(8, 2);
        Assert.Equal(0, LiveTensors.Leaked(() => new TensorActivationSource(x, y).Dispose()));
    }

    [Fact]
    public void A_source_made_inside_a_dispose_scope_outlives_it()
    {
        using var x = Data(6, 2);
        TensorActivationSource src;
        using (NewDisposeScope()) src = new TensorActivationSource(x, shuffle: false);
        using (src)
        {
            using var b = src.Next(4)!;
            Assert.Equal(new long[] { 0, 1, 2, 3 }, Ids(b));
        }
    }
}

public class ActivationSourceLeakTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("acts-leak-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private static void NoLeak(IActivationSource src, int batch)
    {
        src.Next(batch)!.Dispose(); // warm-up: buffers allocated
        Assert.Equal(0, LiveTensors.Leaked(() => { for (int i = 0; i < 10; i++) src.Next(batch)!.Dispose(); }));
    }

    [Fact]
    public void FileSourceBatchesLeaveNoLiveTensors()
    {
        var path = Path.Combine(_dir, "a.safetensors");
        SaeSharp.IO.SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = randn(40, 3).to(ScalarType.Float16), ["targets"] = randn(40, 2) });
        using var src = new ActivationFileSource(path, new() { TargetName = "targets", ChunkRows = 6, BufferRows = 13, Loop = true });
        NoLeak(src, 7);
        var state = src.SaveState();
        Assert.Equal(0, LiveTensors.Leaked(() => src.LoadState(state)));
    }

    [Fact]
    public void TensorSourceBatchesLeaveNoLiveTensors()
    {
        using var src = new TensorActivationSource(randn(30, 4), loop: true);
        NoLeak(src, 7);
    }
}
