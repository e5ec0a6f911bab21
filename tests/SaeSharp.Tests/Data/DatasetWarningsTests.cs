using SaeSharp.Data;
using SaeSharp.Tests.Cli;

namespace SaeSharp.Tests.Data;

/// <summary>A dataset warning reaches the handler of the run that raised it, not that of a run beside it in the same
/// process (a CLI test's captured stderr once caught two warnings of a library test running at the same time).</summary>
public class DatasetWarningsTests
{
    [Fact]
    public async Task A_warning_goes_to_the_handler_of_its_own_flow_only()
    {
        var seenA = new List<string>();
        using var aSet = new ManualResetEventSlim();
        using var bDone = new ManualResetEventSlim();
        var a = Task.Run(() =>
        {
            DatasetWarnings.Handler = seenA.Add;
            aSet.Set();
            bDone.Wait();                       // b reports while a's handler is set
            DatasetWarnings.Report("from a");
        });
        var b = Task.Run(() =>
        {
            aSet.Wait();
            DatasetWarnings.Report("from b");   // no handler on this flow: dropped
            bDone.Set();
        });
        await Task.WhenAll(a, b);
        Assert.Equal(["from a"], seenA);
        Assert.Null(DatasetWarnings.Handler);   // the test's own flow never set one
    }

    [Fact]
    public void A_cli_run_restores_the_handler_it_found()
    {
        var mine = new List<string>();
        DatasetWarnings.Handler = mine.Add;
        try
        {
            var (exit, _, _) = CliRunner.Run("releases");
            Assert.Equal(0, exit);
            Assert.Same(mine, DatasetWarnings.Handler!.Target);
            DatasetWarnings.Report("after the run");
            Assert.Equal(["after the run"], mine);
        }
        finally { DatasetWarnings.Handler = null; }
    }
}
