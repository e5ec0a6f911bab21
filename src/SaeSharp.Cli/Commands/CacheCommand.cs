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
            string outDir = parse.GetValue(output)!;
            OutputGuard.RefuseReplacingInput("--out", outDir, [ActivationCacheFolder.ManifestName],
                new CommandInput("--model", parse.GetValue(data.Model)!, InputKind.Folder), new CommandInput("--dataset", parse.GetValue(data.Dataset)!, InputKind.Whole));
            long before = 0;
            if (File.Exists(Path.Combine(outDir, ActivationCacheFolder.ManifestName)))
            {
                var earlier = ActivationCacheManifest.Read(outDir);
                before = earlier.TotalRows;
                Console.WriteLine($"resuming the cache in {outDir}: {Cli.Integer(earlier.Shards.Count)} shards ({Cli.Integer(earlier.TotalRows)} rows, {Cli.Integer(earlier.TotalContexts)} contexts) already written");
            }
            var manifest = CliProgress.Run("cache", progress => ModelPipeline.WriteCache(options, parse.GetValue(data.Hook)!, parse.GetValue(output)!,
                data.ReadMode(parse), parse.GetValue(data.TargetHook), parse.GetValue(contextsPerShard), progress: progress,
                onShard: m => { if (!CliProgress.Live) Console.WriteLine($"shard {m.Shards.Count}: {Cli.Integer(m.TotalRows)} rows"); }));
            Console.WriteLine(before > 0 && manifest.TotalRows == before
                ? $"nothing to add: {outDir} already holds the {Cli.Integer(manifest.TotalRows)} rows of {manifest.Hook} (d_in {manifest.DIn}) asked for"
                : $"wrote {Cli.Integer(manifest.TotalRows - before)} rows of {manifest.Hook} (d_in {manifest.DIn}) to {outDir}{(before > 0 ? $", {Cli.Integer(manifest.TotalRows)} in all" : "")}");
            return 0;
        });
        return command;
    }
}
