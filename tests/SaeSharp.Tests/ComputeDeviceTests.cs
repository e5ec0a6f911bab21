using SaeSharp.Tests.Cli;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary><c>--device</c>: cpu accepted, cuda refused clearly on the CPU backend, unknown names refused with one line.</summary>
public class ComputeDeviceTests
{
    [Fact]
    public void Cpu_is_accepted_and_cuda_needs_the_cuda_backend()
    {
        Assert.Equal(DeviceType.CPU, ComputeDevice.Parse("cpu").type);
        Assert.Equal(DeviceType.CPU, ComputeDevice.Parse(null).type);
        Assert.Contains("expected cpu, cuda or cuda:N", Assert.Throws<SaeSharpException>(() => ComputeDevice.Parse("tpu")).Message);
        Assert.Contains("expected cpu, cuda or cuda:N", Assert.Throws<SaeSharpException>(() => ComputeDevice.Parse("cuda:x")).Message);
        if (!cuda.is_available())
            Assert.Contains("-p:TorchBackend=cuda", Assert.Throws<SaeSharpException>(() => ComputeDevice.Parse("cuda")).Message);
    }

    [Fact]
    public void Cli_device_option_is_parsed_with_the_model_options()
    {
        var dataset = Path.GetTempFileName();
        try
        {
            File.WriteAllText(dataset, "hello world\n");
            var (exit, _, err) = CliRunner.Run("cache", "--model", "builtin", "--hook", "blocks.0.hook_resid_post", "--dataset", dataset,
                "--out", Path.Combine(Path.GetTempPath(), $"dev-{Guid.NewGuid():N}"), "--device", "tpu");
            Assert.NotEqual(0, exit);
            Assert.Contains("--device tpu: expected cpu, cuda or cuda:N", err);
        }
        finally { File.Delete(dataset); }
    }
}
