using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>
/// A trainer checkpoint and its on-disk format: a folder <c>checkpoint_path/step_NNNNNNNNN</c> (zero-padded step) with
/// <c>trainer_state.json</c> (format tag, step, tokens, activation scales, the run's config, per SAE its config, training
/// options, Adam step and firing-window counters, and the activation source's position) and one
/// <c>sae_{i}.safetensors</c> per SAE (its state_dict, <c>adam.*</c> moments, <c>stats.*</c> firing statistics).
/// <see cref="Save"/> builds the folder under a temporary name and renames it into place, so an interrupted write
/// (crash, kill -9, full disk) never leaves a folder that <see cref="Resolve"/> would pick: a checkpoint is complete
/// exactly when its step folder holds trainer_state.json.
/// </summary>
public sealed class TrainerCheckpoint : IDisposable
{
    /// <summary>Checkpoint state file inside a step folder.</summary>
    public const string StateFileName = "trainer_state.json";
    private const string FormatTag = "saesharp.trainer_checkpoint/1";
    private const string StepFolderPrefix = "step_";
    private const string TempPrefix = ".tmp_" + StepFolderPrefix;


    private bool _ownsTensors;

    /// <summary>Optimiser steps completed.</summary>
    public required long Step { get; init; }
    /// <summary>Training rows consumed.</summary>
    public required long Tokens { get; init; }
    /// <summary>Input normalisation scale in effect (1 without normalisation).</summary>
    public required double ScaleIn { get; init; }
    /// <summary>Target normalisation scale in effect (1 without normalisation).</summary>
    public required double ScaleOut { get; init; }
    /// <summary>The run's trainer config.</summary>
    public required TrainerConfig Config { get; init; }
    /// <summary>One entry per SAE of the run, in slot order.</summary>
    public required IReadOnlyList<SaeEntry> Saes { get; init; }
    /// <summary>The activation source's position (<see cref="Activations.IActivationSource.SaveState"/>).</summary>
    public required JsonNode SourceState { get; init; }
    /// <summary>The folder this checkpoint was read from or last written to.</summary>
    public string? Folder { get; private set; }

    /// <summary>One SAE's part of a checkpoint.</summary>
    public sealed class SaeEntry
    {
        /// <summary>The SAE's slot name.</summary>
        public required string Name { get; init; }
        /// <summary>The SAE's SAELens configuration (cfg.json).</summary>
        public required SaeConfig SaeConfig { get; init; }
        /// <summary>The SAE's training options (coefficients, k, bandwidth, ...).</summary>
        public required SaeTrainingOptions Training { get; init; }
        /// <summary>The SAE's own trainer config.</summary>
        public required TrainerConfig Config { get; init; }
        /// <summary>Adam's step count t.</summary>
        public required long AdamStep { get; init; }
        /// <summary>Training rows counted in the current feature-sampling window.</summary>
        public required long WindowRows { get; init; }
        /// <summary>Steps counted in the current feature-sampling window.</summary>
        public required int WindowSteps { get; init; }
        /// <summary>state_dict keys, <c>adam.*</c> and <c>stats.*</c> tensors.</summary>
        public required IReadOnlyDictionary<string, Tensor> Tensors { get; init; }

        /// <summary>The tensor <paramref name="key"/>, checked against <paramref name="shape"/>.</summary>
        public Tensor Get(string key, long[] shape, string file)
        {
            if (!Tensors.TryGetValue(key, out var t)) throw new SaeSharpException($"{file}: missing tensor '{key}'");
            if (!t.shape.SequenceEqual(shape))
                throw new SaeSharpException($"{file}: tensor '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}]");
            return t;
        }
    }

    private static string SlotFile(int index) => $"sae_{index}.safetensors";

    /// <summary>The folder <see cref="Save"/> writes for <paramref name="step"/> under <paramref name="root"/> (full path).</summary>
    public static string FolderOf(string root, long step) => Path.Combine(Path.GetFullPath(root), $"{StepFolderPrefix}{step:D9}");

    /// <summary>Writes the checkpoint as <c>root/step_NNNNNNNNN</c> (replacing one of the same step), then deletes
    /// complete checkpoints beyond the newest <paramref name="keep"/> and temporary folders left by interrupted writes.
    /// Returns the folder.</summary>
    public string Save(string root, int keep)
    {
        Folder = WriteStepFolder(root, Step, keep, tmp =>
        {
            var saes = new JsonArray();
            for (int i = 0; i < Saes.Count; i++)
            {
                var e = Saes[i];
                SafeTensors.Save(Path.Combine(tmp, SlotFile(i)), e.Tensors.ToList());
                saes.Add(new JsonObject
                {
                    ["name"] = e.Name,
                    ["file"] = SlotFile(i),
                    ["sae_cfg"] = JsonNode.Parse(e.SaeConfig.ToJson()),
                    ["sae_training"] = JsonSerializer.SerializeToNode(e.Training, SaeTrainingOptions.JsonOptions),
                    ["config"] = JsonSerializer.SerializeToNode(e.Config, TrainerConfig.JsonOptions),
                    ["adam_step"] = e.AdamStep,
                    ["window_rows"] = e.WindowRows,
                    ["window_steps"] = e.WindowSteps,
                });
            }
            var state = new JsonObject
            {
                ["format"] = FormatTag,
                ["step"] = Step,
                ["tokens"] = Tokens,
                ["scale_in"] = ScaleIn,
                ["scale_out"] = ScaleOut,
                ["config"] = JsonSerializer.SerializeToNode(Config, TrainerConfig.JsonOptions),
                ["saes"] = saes,
                ["source_state"] = SourceState.DeepClone(),
            };
            // The state file is written last: a step folder is complete exactly when it holds one.
            AtomicFile.WriteAllText(Path.Combine(tmp, StateFileName), state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
        return Folder;
    }

    /// <summary>The checkpoint layout shared by every trainer (SAE and crosscoder): <paramref name="write"/> fills a
    /// temporary folder, writing <see cref="StateFileName"/> last; the folder is then renamed to <c>root/step_NNNNNNNNN</c>
    /// (replacing one of the same step), checkpoints beyond the newest <paramref name="keep"/> are deleted, and the full
    /// path of the step folder is returned. A failed write leaves the earlier checkpoints as they were.</summary>
    internal static string WriteStepFolder(string root, long step, int keep, Action<string> write)
    {
        root = Path.GetFullPath(root);
        Directory.CreateDirectory(root);
        var final = FolderOf(root, step);
        var tmp = Path.Combine(root, $"{TempPrefix}{step:D9}_{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            write(tmp);
            if (!File.Exists(Path.Combine(tmp, StateFileName))) throw new InvalidOperationException($"a checkpoint writer wrote no {StateFileName}");
            if (Directory.Exists(final)) Retire(root, final);
            Directory.Move(tmp, final);
        }
        catch (Exception e)
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            if ((e as IOException ?? e.InnerException as IOException) is { } io)
                throw new SaeSharpException($"could not write the checkpoint of step {step} in {root}: {io.Message}; the earlier checkpoints are intact", io);
            throw;
        }
        Prune(root, keep);
        return final;
    }

    private static void Prune(string root, int keep)
    {
        // An old checkpoint is first renamed to a temporary name (atomic), so that a kill during the recursive delete
        // never leaves a step folder that still looks complete but lacks some of its files.
        foreach (var d in CompleteCheckpoints(root).OrderByDescending(d => d, StringComparer.Ordinal).Skip(keep).ToList())
            Retire(root, d);
        RemoveInterruptedWrites(root);
    }

    /// <summary>Deletes the temporary folders that interrupted writes (a kill during <see cref="Save"/> or its pruning)
    /// left under the checkpoint root <paramref name="root"/>. <see cref="Save"/> does it after each write; a resume
    /// does it first, since a run resumed at its last step writes nothing new.</summary>
    public static void RemoveInterruptedWrites(string root)
    {
        if (!Directory.Exists(root)) return;
        foreach (var d in Directory.EnumerateDirectories(root, TempPrefix + "*").ToList())
        {
            try { Directory.Delete(d, recursive: true); } catch (IOException) { }
        }
    }

    private static void Retire(string root, string dir)
    {
        try { Directory.Move(dir, Path.Combine(root, TempPrefix + "old_" + Path.GetFileName(dir) + "_" + Guid.NewGuid().ToString("N"))); }
        catch (IOException) { }
    }

    private static IEnumerable<string> CompleteCheckpoints(string root) =>
        Directory.EnumerateDirectories(root, StepFolderPrefix + "*")
            .Where(d => File.Exists(Path.Combine(d, StateFileName)))
            .OrderBy(d => d, StringComparer.Ordinal);

    /// <summary>The checkpoint folder to resume from: <paramref name="path"/> itself if it holds trainer_state.json,
    /// else its latest complete <c>step_*</c> sub-folder.</summary>
    public static string Resolve(string path)
    {
        if (File.Exists(Path.Combine(path, StateFileName))) return Path.GetFullPath(path);
        if (!Directory.Exists(path)) throw new SaeSharpException($"checkpoint folder {path} does not exist");
        return CompleteCheckpoints(path).LastOrDefault()
            ?? throw new SaeSharpException($"{path}: no {StateFileName} and no complete {StepFolderPrefix}* checkpoint inside");
    }

    /// <summary>The JSON of a checkpoint's <see cref="StateFileName"/>; an empty or invalid file is an error naming it.</summary>
    internal static JsonNode ReadStateFile(string statePath)
    {
        try { return JsonNode.Parse(File.ReadAllText(statePath)) ?? throw new SaeSharpException($"{statePath}: empty"); }
        catch (JsonException e) { throw new SaeSharpException($"{statePath}: invalid JSON ({e.Message})", e); }
    }

    /// <summary>Copies the checkpoint tensor <paramref name="key"/> of <paramref name="file"/> into <paramref name="dst"/>;
    /// a missing key or another shape is an error naming both.</summary>
    internal static void CopyTensor(IReadOnlyDictionary<string, Tensor> tensors, string key, Tensor dst, string file)
    {
        if (!tensors.TryGetValue(key, out var src)) throw new SaeSharpException($"{file}: missing tensor '{key}'");
        if (!src.shape.SequenceEqual(dst.shape))
            throw new SaeSharpException($"{file}: tensor '{key}' has shape [{string.Join(", ", src.shape)}], expected [{string.Join(", ", dst.shape)}]");
        dst.copy_(src);
    }

    /// <summary>Reads the checkpoint at <paramref name="path"/> (a step folder, or the checkpoint_path holding them: its
    /// latest complete one), tensors included; dispose it to free them.</summary>
    public static TrainerCheckpoint Load(string path)
    {
        var dir = Resolve(path);
        var statePath = Path.Combine(dir, StateFileName);
        var state = ReadStateFile(statePath);
        if (state["format"]?.GetValue<string>() != FormatTag)
            throw new SaeSharpException($"{statePath}: format is '{state["format"]}', expected '{FormatTag}'");
        var cfg = state["config"].Deserialize<TrainerConfig>(TrainerConfig.JsonOptions)
            ?? throw new SaeSharpException($"{statePath}: missing 'config'");
        var entries = state["saes"]?.AsArray() ?? throw new SaeSharpException($"{statePath}: missing 'saes'");
        var saes = new List<SaeEntry>();
        try
        {
            foreach (var e in entries)
            {
                var name = e!["name"]!.GetValue<string>();
                var file = Path.Combine(dir, e["file"]!.GetValue<string>());
                saes.Add(new SaeEntry
                {
                    Name = name,
                    SaeConfig = SaeConfig.FromJson(e["sae_cfg"]!.ToJsonString(), $"{statePath} sae '{name}'"),
                    Training = ReadTrainingOptions(e["sae_training"]),
                    Config = e["config"].Deserialize<TrainerConfig>(TrainerConfig.JsonOptions)
                        ?? throw new SaeSharpException($"{statePath}: SAE '{name}' has no 'config'"),
                    AdamStep = e["adam_step"]!.GetValue<long>(),
                    WindowRows = e["window_rows"]!.GetValue<long>(),
                    WindowSteps = e["window_steps"]!.GetValue<int>(),
                    Tensors = SafeTensors.Load(file),
                });
            }
        }
        catch
        {
            foreach (var s in saes) foreach (var t in s.Tensors.Values) t.Dispose();
            throw;
        }
        return new TrainerCheckpoint
        {
            Step = state["step"]!.GetValue<long>(),
            Tokens = state["tokens"]!.GetValue<long>(),
            ScaleIn = state["scale_in"]!.GetValue<double>(),
            ScaleOut = state["scale_out"]!.GetValue<double>(),
            Config = cfg,
            Saes = saes,
            SourceState = state["source_state"] ?? throw new SaeSharpException($"{dir}: missing 'source_state'"),
            Folder = dir,
            _ownsTensors = true,
        };
    }

    /// <summary>The SAE's training options; checkpoints written before the snake_case names (PascalCase property names)
    /// still read.</summary>
    private static SaeTrainingOptions ReadTrainingOptions(JsonNode? node)
    {
        if (node is not JsonObject o) return new SaeTrainingOptions();
        var renamed = new JsonObject();
        foreach (var (key, value) in o)
            renamed[LegacyTrainingNames.GetValueOrDefault(key, key)] = value?.DeepClone();
        return renamed.Deserialize<SaeTrainingOptions>(SaeTrainingOptions.JsonOptions) ?? new SaeTrainingOptions();
    }

    /// <summary>CLR property name (the old key) → the snake_case key, for every property of <see cref="SaeTrainingOptions"/>.</summary>
    private static readonly Dictionary<string, string> LegacyTrainingNames = typeof(SaeTrainingOptions).GetProperties()
        .ToDictionary(p => p.Name, p => p.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false) is [JsonPropertyNameAttribute a, ..]
            ? a.Name : JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name), StringComparer.Ordinal);

    /// <summary>The file of SAE <paramref name="index"/> in <see cref="Folder"/> (for error messages).</summary>
    public string FileOf(int index) => Path.Combine(Folder ?? "", SlotFile(index));

    /// <summary>Frees the tensors of a loaded checkpoint (a checkpoint built for <see cref="Save"/> borrows them).</summary>
    public void Dispose()
    {
        if (!_ownsTensors) return;
        _ownsTensors = false;
        foreach (var s in Saes) foreach (var t in s.Tensors.Values) t.Dispose();
    }
}
