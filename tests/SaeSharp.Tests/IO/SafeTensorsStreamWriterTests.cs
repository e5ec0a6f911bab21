using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.IO;

public sealed class SafeTensorsStreamWriterTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-stw-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Rows_of_the_second_tensor_land_after_the_first_tensor_in_the_data_section()
    {
        string path = Path.Combine(_dir, "two.safetensors");
        using (var w = new SafeTensorsStreamWriter(path, [("a", ScalarType.Float32, [2L, 2L]), ("b", ScalarType.Int32, [3L, 1L])]))
        {
            // Written out of order and interleaved, as `sae encode` does with its two outputs.
            using (var b12 = tensor(new int[] { 20, 30 }).reshape(2, 1)) w.WriteRows("b", 1, b12);
            using (var a1 = tensor(new float[] { 3, 4 }).reshape(1, 2)) w.WriteRows("a", 1, a1);
            using (var b0 = tensor(new int[] { 10 }).reshape(1, 1)) w.WriteRows("b", 0, b0);
            using (var a0 = tensor(new float[] { 1, 2 }).reshape(1, 2)) w.WriteRows("a", 0, a0);
            w.Commit();
        }

        // The safetensors layout, read by hand: u64 little-endian header length N, N bytes of JSON, then the data
        // section, where each tensor's data_offsets are relative to its start. 'a' is 2·2·4 = 16 bytes at [0, 16),
        // 'b' 3·4 = 12 bytes at [16, 28).
        byte[] bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, (8 + n) % 8);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n))!.AsObject();
        Assert.Equal("[0,16]", header["a"]!["data_offsets"]!.ToJsonString());
        Assert.Equal("[16,28]", header["b"]!["data_offsets"]!.ToJsonString());
        Assert.Equal(8 + n + 28, bytes.Length);
        int data = (int)(8 + n);
        Assert.Equal(new[] { 1f, 2f, 3f, 4f }, Enumerable.Range(0, 4).Select(i => BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(data + 4 * i))));
        Assert.Equal(new[] { 10, 20, 30 }, Enumerable.Range(0, 3).Select(i => BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(data + 16 + 4 * i))));
    }
}
