using SaeSharp.Kernels;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>Checkpoints, resume and the log of a <see cref="CrossCoderTrainer"/> run (as <c>checkpoint_path</c>,
/// <c>n_checkpoints</c> and the log folder of an SAE run).</summary>
public sealed record CrossCoderCheckpointing
{
    /// <summary>Folder of the <c>step_NNNNNNNNN</c> checkpoints (the layout of <see cref="TrainerCheckpoint"/>).</summary>
    public required string Path { get; init; }
    /// <summary>Write a checkpoint after every this many steps (0: only when the run ends or is cancelled).</summary>
    public long EverySteps { get; init; }
    /// <summary>Complete checkpoints kept (older ones are deleted); default the newest two, as an SAE run's
    /// <see cref="TrainerConfig.KeepCheckpoints"/>.</summary>
    public int Keep { get; init; } = 2;
    /// <summary>Continue from the latest complete checkpoint in <see cref="Path"/> instead of starting at step 0.</summary>
    public bool Resume { get; init; }
    /// <summary>Folder of <c>train_log.jsonl</c>; null writes no log.</summary>
    public string? LogFolder { get; init; }
    /// <summary>Log every this many steps (and the last step).</summary>
    public long LogEverySteps { get; init; } = 100;
}

/// <summary>
/// One crosscoder checkpoint in a step folder written by <see cref="TrainerCheckpoint.WriteStepFolder"/>:
/// <c>crosscoder.safetensors</c> (the state_dict under <c>model.*</c>, Adam's moments under <c>adam.*</c>, BatchTopK's
/// tokens-since-fired counter) and <c>trainer_state.json</c> (format tag, step, tokens, Adam's step count, the crosscoder's
/// shape and the options it trains with, and the data's position).
/// </summary>
internal static class CrossCoderCheckpoint
{
    private const string FormatTag = "saesharp.crosscoder_checkpoint/1";
    private const string TensorFile = "crosscoder.safetensors";
    private const string ModelPrefix = "model.";
    private const string AdamPrefix = "adam.";
    private const string TokensSinceFiredKey = "trainer.tokens_since_fired";

    /// <summary>What a checkpoint says besides the tensors it loads into the crosscoder and trainer.</summary>
    internal sealed record State(long Step, long Tokens, JsonNode Data, string Folder);

    public static string Save(CrossCoderCheckpointing c, CrossCoder cc, CrossCoderTrainerOptions options, AdamOptimizer adam, Tensor? tokensSinceFired,
        long step, long tokens, JsonNode data)
    {
        using (no_grad())
            foreach (var (name, p) in cc.named_parameters())
                if (!isfinite(p).all().item<bool>())
                    throw new SaeSharpException($"crosscoder training step {step}: the weights ({name}) hold NaN or infinite values; no checkpoint was written");
        return TrainerCheckpoint.WriteStepFolder(c.Path, step, c.Keep, tmp =>
        {
            var tensors = new List<KeyValuePair<string, Tensor>>();
            foreach (var (k, t) in cc.state_dict()) tensors.Add(new(ModelPrefix + k, t));
            foreach (var (k, t) in adam.StateTensors()) tensors.Add(new(AdamPrefix + k, t));
            if (tokensSinceFired is not null) tensors.Add(new(TokensSinceFiredKey, tokensSinceFired));
            SafeTensors.Save(System.IO.Path.Combine(tmp, TensorFile), tensors);
            var state = new JsonObject
            {
                ["format"] = FormatTag,
                ["step"] = step,
                ["tokens"] = tokens,
                ["adam_step"] = adam.StepCount,
                ["shape"] = Shape(cc.Cfg),
                ["options"] = JsonSerializer.SerializeToNode(options),
                ["data"] = data.DeepClone(),
            };
            AtomicFile.WriteAllText(System.IO.Path.Combine(tmp, TrainerCheckpoint.StateFileName), state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
    }

    /// <summary>Loads the latest complete checkpoint under <see cref="CrossCoderCheckpointing.Path"/> into
    /// <paramref name="cc"/>, <paramref name="adam"/> and <paramref name="tokensSinceFired"/>; throws naming what differs
    /// when the checkpoint is of another crosscoder shape or other training options.</summary>
    public static State Load(CrossCoderCheckpointing c, CrossCoder cc, CrossCoderTrainerOptions options, AdamOptimizer adam, Tensor? tokensSinceFired)
    {
        if (!Directory.Exists(c.Path)) throw new SaeSharpException($"resume: no checkpoints in {c.Path}");
        var dir = TrainerCheckpoint.Resolve(c.Path);
        TrainerCheckpoint.RemoveInterruptedWrites(c.Path);
        var statePath = System.IO.Path.Combine(dir, TrainerCheckpoint.StateFileName);
        var state = TrainerCheckpoint.ReadStateFile(statePath);
        if (state["format"]?.GetValue<string>() != FormatTag)
            throw new SaeSharpException($"{statePath}: format is '{state["format"]}', expected '{FormatTag}' (a crosscoder checkpoint)");
        var shape = Shape(cc.Cfg);
        if (!JsonNode.DeepEquals(state["shape"], shape))
            throw new SaeSharpException($"{statePath}: the checkpoint is of a crosscoder {state["shape"]?.ToJsonString()}, this run trains {shape.ToJsonString()}");
        var opts = JsonSerializer.SerializeToNode(options);
        if (!JsonNode.DeepEquals(state["options"], opts))
            throw new SaeSharpException($"{statePath}: the checkpoint's training options {state["options"]?.ToJsonString()} differ from this run's {opts?.ToJsonString()}");
        var file = System.IO.Path.Combine(dir, TensorFile);
        var tensors = SafeTensors.Load(file);
        try
        {
            using var _ = no_grad();
            foreach (var (k, dst) in cc.state_dict())
                TrainerCheckpoint.CopyTensor(tensors, ModelPrefix + k, dst, file);
            adam.LoadStateTensors(tensors.Where(kv => kv.Key.StartsWith(AdamPrefix, StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key[AdamPrefix.Length..], kv => kv.Value), file);
            if (tokensSinceFired is not null) TrainerCheckpoint.CopyTensor(tensors, TokensSinceFiredKey, tokensSinceFired, file);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        adam.StepCount = state["adam_step"]!.GetValue<long>();
        return new State(state["step"]!.GetValue<long>(), state["tokens"]!.GetValue<long>(),
            state["data"] ?? throw new SaeSharpException($"{statePath}: missing 'data'"), dir);
    }

    private static JsonObject Shape(CrossCoderConfig cfg)
    {
        var shape = new JsonObject
        {
            ["num_layers"] = cfg.NumLayers,
            ["activation_dim"] = cfg.ActivationDim,
            ["dict_size"] = cfg.DictSize,
            ["k"] = cfg.K,
            ["code_normalization"] = cfg.CodeNormalization.ToString(),
        };
        // Only when set, so that checkpoints written before these options still compare equal.
        if (cfg.EncoderLayers is { } el) shape["encoder_layers"] = new JsonArray(el.Select(i => (JsonNode?)i).ToArray());
        if (cfg.NumDecoderLayers is { } ndl) shape["num_decoder_layers"] = ndl;
        if (cfg.NormalizerBuffers)
        {
            shape["activation_normalizer"] = true;
            shape["target_rms"] = cfg.TargetRms;
        }
        return shape;
    }
}
