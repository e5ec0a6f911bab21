using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.LanguageModels;

/// <summary>
/// The resumable checkpoint of <c>sae lm train</c>: <c>OUT/checkpoints/step_NNNNNNNNN</c> (the step-folder layout of
/// <see cref="TrainerCheckpoint.WriteStepFolder"/>, renamed into place when complete) with <c>lm.safetensors</c> (the
/// state_dict under <c>model.*</c>, AdamW's moments under <c>adam.*</c>, the window order under <c>data.order</c>) and
/// <c>trainer_state.json</c> (format tag, step, tokens, AdamW's step count, the window RNG's state and cursor, the loss
/// statistics, and the settings and data fingerprints a resume must match).
/// </summary>
internal static class LmCheckpoint
{
    /// <summary>Sub-folder of the model folder holding the checkpoints.</summary>
    public const string FolderName = "checkpoints";
    private const string FormatTag = "saesharp.lm_checkpoint/1";
    private const string TensorFile = "lm.safetensors";
    private const string ModelPrefix = "model.";
    private const string AdamPrefix = "adam.";
    private const string OrderKey = "data.order";

    /// <summary>The position of a run after <see cref="Step"/> steps: everything the next step depends on besides the
    /// weights and AdamW's moments.</summary>
    internal sealed record Position(long Step, long TrainTokens, long AdamStep, ulong[] Rng, long[] Order, long Cursor,
        double FirstLoss, double Ema, double Seconds);

    /// <summary>A checkpoint read and checked against a run, its tensors not yet copied (<see cref="Apply"/>).</summary>
    internal sealed class Loaded(Position position, Dictionary<string, Tensor> tensors, string folder) : IDisposable
    {
        public Position Position { get; } = position;
        public string Folder { get; } = folder;

        /// <summary>Copies the weights and moments into <paramref name="model"/> and <paramref name="adam"/>.</summary>
        public void Apply(nn.Module model, AdamOptimizer adam)
        {
            var file = Path.Combine(Folder, TensorFile);
            using (no_grad())
                foreach (var (k, dst) in model.state_dict()) TrainerCheckpoint.CopyTensor(tensors, ModelPrefix + k, dst, file);
            adam.LoadStateTensors(tensors.Where(kv => kv.Key.StartsWith(AdamPrefix, StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key[AdamPrefix.Length..], kv => kv.Value), file);
            adam.StepCount = Position.AdamStep;
        }

        public void Dispose()
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>The checkpoint root of the model folder <paramref name="outDir"/>.</summary>
    public static string Root(string outDir) => Path.Combine(outDir, FolderName);

    /// <summary>The settings that decide the weights a run reaches (a resume must match them all), keyed as the
    /// <c>sae lm train</c> flags are named, with fingerprints of the training and validation windows.</summary>
    public static JsonObject Run(LmTrainingOptions o, LmTrainer.Packed train, LmTrainer.Packed val) => new()
    {
        ["d_model"] = o.DModel, ["n_layers"] = o.NLayers, ["n_heads"] = o.NHeads, ["d_mlp"] = o.DMlp,
        ["context_size"] = o.ContextSize, ["batch_size"] = o.BatchSize, ["steps"] = o.Steps, ["lr"] = o.Lr,
        ["warm_up_steps"] = o.WarmUpSteps, ["weight_decay"] = o.WeightDecay, ["grad_clip"] = o.GradClip, ["seed"] = o.Seed,
        ["corpus"] = Fingerprint(train), ["validation"] = Fingerprint(val),
    };

    /// <summary>SHA-256 (first 16 hex digits) of the packed windows' token ids.</summary>
    private static string Fingerprint(LmTrainer.Packed p)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var w in p.Ids) hash.AppendData(MemoryMarshal.AsBytes(w.AsSpan()));
        return Convert.ToHexStringLower(hash.GetHashAndReset())[..16];
    }

    /// <summary>Writes the checkpoint of <paramref name="at"/> under <see cref="Root"/> (replacing the previous one) and
    /// returns its folder.</summary>
    public static string Save(string outDir, nn.Module model, AdamOptimizer adam, JsonObject run, Position at)
    {
        return TrainerCheckpoint.WriteStepFolder(Root(outDir), at.Step, keep: 1, tmp =>
        {
            using var scope = NewDisposeScope();
            var tensors = new List<KeyValuePair<string, Tensor>>();
            foreach (var (k, t) in model.state_dict()) tensors.Add(new(ModelPrefix + k, t.detach().contiguous()));
            foreach (var (k, t) in adam.StateTensors()) tensors.Add(new(AdamPrefix + k, t));
            tensors.Add(new(OrderKey, tensor(at.Order)));
            SafeTensors.Save(Path.Combine(tmp, TensorFile), tensors);
            var state = new JsonObject
            {
                ["format"] = FormatTag,
                ["step"] = at.Step,
                ["train_tokens"] = at.TrainTokens,
                ["adam_step"] = at.AdamStep,
                ["rng"] = new JsonArray(at.Rng.Select(s => (JsonNode?)s.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray()),
                ["cursor"] = at.Cursor,
                ["first_loss"] = at.FirstLoss,
                ["ema_loss"] = at.Ema,
                ["seconds"] = at.Seconds,
                ["run"] = run.DeepClone(),
            };
            AtomicFile.WriteAllText(Path.Combine(tmp, TrainerCheckpoint.StateFileName), state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
    }

    /// <summary>Reads the latest complete checkpoint of <paramref name="outDir"/> and checks it against this run's
    /// <paramref name="run"/>: throws naming the folder, the file or the settings that differ. Nothing is written.</summary>
    public static Loaded Load(string outDir, JsonObject run)
    {
        var root = Root(outDir);
        if (!Directory.Exists(root)) throw new SaeSharpException($"--resume: no checkpoints in {root} (a run stopped by Ctrl-C or SIGTERM, or saved by --checkpoint-every, leaves them)");
        var dir = TrainerCheckpoint.Resolve(root);
        var statePath = Path.Combine(dir, TrainerCheckpoint.StateFileName);
        var state = TrainerCheckpoint.ReadStateFile(statePath);
        if (state["format"]?.GetValueKind() != JsonValueKind.String || state["format"]!.GetValue<string>() != FormatTag)
            throw new SaeSharpException($"{statePath}: format is '{state["format"]}', expected '{FormatTag}' (an lm train checkpoint)");
        var had = state["run"] as JsonObject ?? throw new SaeSharpException($"{statePath}: missing 'run'");
        var differ = run.Where(kv => !JsonNode.DeepEquals(kv.Value, had[kv.Key]))
            .Select(kv => kv.Key is "corpus" or "validation"
                ? $"the {(kv.Key == "corpus" ? "training" : "validation")} stories (their windows' fingerprint {kv.Value}; the checkpoint's run: {had[kv.Key]})"
                : $"--{kv.Key.Replace('_', '-')} {kv.Value?.ToJsonString()} (the checkpoint's run: {had[kv.Key]?.ToJsonString() ?? "none"})")
            .ToList();
        if (differ.Count > 0)
            throw new SaeSharpException($"--resume continues the run of {dir} as it was configured; these differ from it: {string.Join("; ", differ)}. " +
                "Give the settings of that run, or start a new run with --force or another --out");
        Position position;
        try
        {
            position = new Position(state["step"]!.GetValue<long>(), state["train_tokens"]!.GetValue<long>(), state["adam_step"]!.GetValue<long>(),
                state["rng"]!.AsArray().Select(s => ulong.Parse(s!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture)).ToArray(),
                [], state["cursor"]!.GetValue<long>(), state["first_loss"]!.GetValue<double>(), state["ema_loss"]!.GetValue<double>(),
                state["seconds"]!.GetValue<double>());
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException or OverflowException)
        {
            throw new SaeSharpException($"{statePath}: a field of step, train_tokens, adam_step, rng, cursor, first_loss, ema_loss or seconds is missing or malformed", e);
        }
        var file = Path.Combine(dir, TensorFile);
        if (!File.Exists(file)) throw new SaeSharpException($"{file}: missing (the checkpoint {dir} is incomplete)");
        var tensors = SafeTensors.Load(file);
        if (!tensors.TryGetValue(OrderKey, out var order) || order.dtype != ScalarType.Int64)
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw new SaeSharpException($"{file}: missing int64 tensor '{OrderKey}'");
        }
        position = position with { Order = order.data<long>().ToArray() };
        if (position.Rng.Length != 4 || position.Cursor < 0 || position.Cursor > position.Order.Length)
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw new SaeSharpException($"{statePath}: rng or cursor out of range");
        }
        return new Loaded(position, tensors, dir);
    }

    /// <summary>Deletes the checkpoints of <paramref name="outDir"/> (a run that ended, or one <c>--force</c> replaces).</summary>
    public static void Delete(string outDir)
    {
        var root = Root(outDir);
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }
}
