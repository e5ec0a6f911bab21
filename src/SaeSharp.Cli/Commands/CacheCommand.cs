using System.CommandLine;
using SaeSharp.Activations;
using SaeSharp.Pipelines;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae cache</c>: a language model's activations on a text dataset, written as sharded safetensors.</summary>
internal static class CacheCommand
{
    public static Command Create()
    {
        var data = new ModelDataOptionsCli();
        var output = new Option<string>("--out") { Description = "Cache folder (shard_NNNNN.safetensors + manifest.json); rerun to resume", Required = true };
        var contextsPerShard = new Option<int>("--contexts-per-shard") { Description = "Context windows per shard", DefaultValueFactory = _ => 64 }.Positive();
        var command = new Command("cache", "Harvest activations from text and write them as sharded safetensors with a manifest") { output, contextsPerShard };
        data.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            var options = data.Read(parse);
            var manifest = CliProgress.Run("cache", progress => ModelPipeline.WriteCache(options, parse.GetValue(data.Hook)!, parse.GetValue(output)!,
                data.ReadMode(parse), parse.GetValue(data.TargetHook), parse.GetValue(contextsPerShard), progress: progress,
                onShard: m => { if (!CliProgress.Live) Console.WriteLine($"shard {m.Shards.Count}: {m.TotalRows:N0} rows"); }));
            Console.WriteLine($"wrote {manifest.TotalRows:N0} rows of {manifest.Hook} (d_in {manifest.DIn}) to {parse.GetValue(output)}");
            return 0;
        });
        return command;
    }
}
