namespace SaeSharp.Tests;

public class HostMemoryTests : TempDirTestBase
{
    [Fact]
    public void MemAvailable_is_read_in_bytes_from_a_meminfo_file()
    {
        string path = Path.Combine(_dir, "meminfo");
        File.WriteAllLines(path, ["MemTotal:       16384000 kB", "MemFree:         1000000 kB", "MemAvailable:    8000000 kB"]);
        Assert.Equal(8_000_000L * 1024, HostMemory.MemAvailable(path));
        File.WriteAllLines(path, ["MemTotal:       16384000 kB"]);
        Assert.Null(HostMemory.MemAvailable(path));
        Assert.Null(HostMemory.MemAvailable(Path.Combine(_dir, "missing")));
        Assert.InRange(HostMemory.AvailableBytes(), 1L << 20, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
    }

    [Theory]
    [InlineData(900, "900 B")]
    [InlineData(26_720, "27 kB")]
    [InlineData(3_200_000_000, "3.2 GB")]
    [InlineData(2.8e13, "28 TB")]
    public void Byte_counts_read_in_powers_of_1000(double bytes, string expected) => Assert.Equal(expected, HostMemory.Format(bytes));
}
