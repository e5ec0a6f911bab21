using System.CommandLine;
using SaeSharp.Activations;
using SaeSharp.Pipelines;
using Data = SaeSharp.Data;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae cache</c>: a language model's activations on a text dataset, written as sharded safetensors, or as
/// SAELens's activation cache (<c>--format saelens</c>).</summary>
internal static class CacheCommand
{
    public static Command Create()
    {
        var data = new ModelDataOptionsCli();
        var output = new Option<string?>("--out") { Description = "Cache folder (shard_NNNNN.safetensors + manifest.json; rerun to resume), or with --format saelens a new or empty folder (with --config: its new_cached_activations_path)" };
        var contextsPerShard = new Option<int>("--contexts-per-shard") { Description = "Context windows per shard", DefaultValueFactory = _ => 64 }.Positive();
        var format = new Option<string?>("--format") { Description = "saesharp: safetensors shards + manifest.json (the default); saelens: SAELens's CacheActivationsRunner folder (datasets Arrow shards), for use_cached_activations (the default with --config)" };
        format.AcceptOnlyFromAmong("saesharp", "saelens");
        var bufferSizeGb = new Option<double?>("--buffer-size-gb") { Description = "With --format saelens: activation GB per shard (SAELens buffer_size_gb; default 2, or the --config file's)" };
        var config = new Option<string?>("--config") { Description = "JSON file of SAELens CacheActivationsRunnerConfig fields (README); flags given win over them" };
        var command = new Command("cache", "Harvest activations from text and write them as sharded safetensors with a manifest, or as SAELens's activation cache") { output, contextsPerShard, format, bufferSizeGb, config };
        data.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            var cfg = parse.GetValue(config) is { } cfgPath ? CacheActivationsSettings.FromJson(cfgPath) : null;
            foreach (var note in cfg?.Notes ?? []) Cli.ErrorLine($"note: {cfg!.Source}: {note}");
            var training = cfg?.ToTrainingSettings();
            // SAELens's default folder is named after the run's dataset, model and hook (flags given win, as everywhere).
            string outDir = parse.GetValue(output) ?? cfg?.NewCachedActivationsPath
                            ?? ((parse.GetValue(data.Dataset) ?? cfg?.DatasetPath, parse.GetValue(data.Model) ?? cfg?.ModelName, data.HookOf(parse, training)) is ({ } d, { } m, { } h) && cfg is not null
                                ? CacheActivationsSettings.DefaultOutputPath(Data.HubDataset.RecordedPath(d), m, h)
                                : throw new SaeSharpException(cfg is null ? "give --out" : "give --out (or new_cached_activations_path in --config)"));
            var options = data.Read(parse, training);
            if (cfg is not null)
                options = options with
                {
                    // SAELens's context_size -1: the length of the pre-tokenized dataset's rows.
                    ContextSize = options.ContextSize ?? Data.TokenWindows.PretokenizedRowLength(options.DatasetPath, options.TextField)
                                  ?? throw new SaeSharpException($"{cfg.Source}: context_size -1: {options.DatasetPath} is not tokenized; give context_size " +
                                                                 "(or --context-size), as SAELens requires"),
                    Tokens = options.Tokens ?? cfg.TrainingTokens,
                    Device = parse.GetValue(data.Device) is null ? ComputeDevice.Parse(cfg.Device, $"{cfg.Source}: device") : options.Device,
                };
            string hook = data.HookOf(parse, training)!;
            Action<int, string>? checkDIn = training is null ? null : training.CheckDIn;
            var dtype = cfg?.StoredDtype;
            bool saeLens = parse.GetValue(format) is { } f ? f == "saelens" : cfg is not null;
            if (saeLens)
            {
                if (parse.GetResult(contextsPerShard) is { Implicit: false })
                    throw new SaeSharpException("--contexts-per-shard sizes SaeSharp's shards; with --format saelens, --buffer-size-gb does (SAELens buffer_size_gb)");
                OutputGuard.RefuseReplacingInput("--out", outDir, [Data.HfDiskDataset.StateFile, Data.HfDiskDataset.InfoFile],
                    new CommandInput("--model", options.ModelPath, InputKind.Folder), new CommandInput("--dataset", options.DatasetPath, InputKind.Whole));
                double buffer = parse.GetValue(bufferSizeGb) ?? cfg?.BufferSizeGb ?? 2.0;
                var cache = CliProgress.Run("cache", progress => ModelPipeline.WriteSaeLensCache(options, hook, outDir,
                    data.ReadMode(parse), parse.GetValue(data.TargetHook), buffer, dtype, progress: progress, checkDIn: checkDIn));
                var column = cache.Columns[0];
                var files = cache.DataFiles();
                long windows = ActivationFileSource.CountRows([outDir], new ActivationFileSourceOptions { HookName = column.Name }) / column.ContextSize;
                Console.WriteLine($"wrote {Cli.Integer(windows * column.ContextSize)} rows of {column.Name} (d_in {column.DIn}, {Cli.Integer(windows)} windows of {column.ContextSize}) " +
                                  $"to {outDir} as a SAELens activation cache ({Cli.Integer(files.Count)} shard{(files.Count == 1 ? "" : "s")})");
                return 0;
            }
            if (parse.GetValue(bufferSizeGb) is not null)
                throw new SaeSharpException("--buffer-size-gb sizes the shards of --format saelens; SaeSharp's cache takes --contexts-per-shard");
            OutputGuard.RefuseReplacingInput("--out", outDir, [ActivationCacheFolder.ManifestName],
                new CommandInput("--model", options.ModelPath, InputKind.Folder), new CommandInput("--dataset", options.DatasetPath, InputKind.Whole));
            long before = 0;
            if (File.Exists(Path.Combine(outDir, ActivationCacheFolder.ManifestName)))
            {
                var earlier = ActivationCacheManifest.Read(outDir);
                before = earlier.TotalRows;
                Console.WriteLine($"resuming the cache in {outDir}: {Cli.Integer(earlier.Shards.Count)} shards ({Cli.Integer(earlier.TotalRows)} rows, {Cli.Integer(earlier.TotalContexts)} contexts) already written");
            }
            var manifest = CliProgress.Run("cache", progress => ModelPipeline.WriteCache(options, hook, outDir,
                data.ReadMode(parse), parse.GetValue(data.TargetHook), parse.GetValue(contextsPerShard), dtype, progress: progress, checkDIn: checkDIn,
                onShard: m => { if (!CliProgress.Live) Console.WriteLine($"shard {m.Shards.Count} ({m.Shards[^1].File}): {Cli.Integer(m.Shards[^1].Rows)} rows, {Cli.Integer(m.TotalRows)} in all"); }));
            Console.WriteLine(before > 0 && manifest.TotalRows == before
                ? $"nothing to add: {outDir} already holds the {Cli.Integer(manifest.TotalRows)} rows of {manifest.Hook} (d_in {manifest.DIn}) asked for"
                : $"wrote {Cli.Integer(manifest.TotalRows - before)} rows of {manifest.Hook} (d_in {manifest.DIn}) to {outDir}{(before > 0 ? $", {Cli.Integer(manifest.TotalRows)} in all" : "")}");
            return 0;
        });
        return command;
    }
}
