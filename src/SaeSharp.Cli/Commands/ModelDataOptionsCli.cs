using System.CommandLine;
using SaeSharp.Saes;
using SaeSharp.Activations;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Training;

namespace SaeSharp.Cli.Commands;

/// <summary>The options that point a command at a language model and a text dataset (<c>--model --hook --dataset --tokens</c>).</summary>
internal sealed class ModelDataOptionsCli
{
    public readonly Option<string?> Model = ModelSource.AtRevision<string?>(new("--model") { Description = "builtin (the shipped model), Hugging Face model id or local model folder (activations from text)" });
    public readonly Option<string?> Hook = new("--hook") { Description = "TransformerLens hook name or module path, e.g. blocks.3.hook_mlp_out" };
    public readonly Option<string?> Dataset = new("--dataset") { Description = ".txt, .jsonl, .parquet, .arrow (or a folder of them, or a datasets save_to_disk folder such as sae pretokenize writes), or a hub dataset hf:ORG/NAME[:SPLIT]; pre-tokenized data detected" };
    public readonly Option<long?> Tokens = new Option<long?>("--tokens") { Description = "Token budget" }.Positive();
    public readonly Option<int?> ContextSize = new Option<int?>("--context-size") { Description = "Tokens per context window (default 128; eval: each SAE's context_size)" }.Positive();
    public readonly Option<bool> NoBos = new("--no-prepend-bos") { Description = "Do not start every window with BOS" };
    public readonly Option<bool> ExcludeSpecial = new("--exclude-special-tokens") { Description = "Leave BOS/EOS/pad positions out of the activations" };
    public readonly Option<string?> ExcludeIds = new("--exclude-token-ids") { Description = "Leave the positions of these token ids out of the activations, e.g. 0,50256 (SAELens exclude_special_tokens as a list)" };
    public readonly Option<string?> SeqposSlice = new("--seqpos-slice")
    {
        Description = "Positions of each window used, as a Python slice START:STOP[:STEP], e.g. 1: skips position 0 (SAELens seqpos_slice; eval: each SAE's)",
    };
    public readonly Option<bool> DisableConcat = new("--disable-concat-sequences") { Description = "One window per document, its first tokens; shorter documents dropped (SAELens disable_concat_sequences)" };
    public readonly Option<string?> Separator = new("--sequence-separator-token") { Description = "Token between documents packed into a window: bos (default), eos, sep, an id, or none (SAELens sequence_separator_token)" };
    public readonly Option<string> Mode = new("--mode") { Description = "out | in | in_to_out (transcoders: module input → output)", DefaultValueFactory = _ => "out" };
    public readonly Option<string?> TargetHook = new("--target-hook") { Description = "Reconstruction target hook for --mode in_to_out" };
    public readonly Option<bool> FoldLn = new("--fold-ln") { Description = "TransformerLens fold_ln" };
    public readonly Option<bool> CenterWriting = new("--center-writing-weights") { Description = "TransformerLens center_writing_weights" };
    public readonly Option<string?> TextField = new("--text-field") { Description = "jsonl field / parquet column holding the text (default: as SAELens, tokens/input_ids, else text, else problem)" };
    public readonly Option<string> Dtype = ModelSource.DtypeOption();
    /// <summary><c>sae train</c> only (<see cref="AddTo"/> leaves it out): SAELens's n_batches_in_buffer.</summary>
    public readonly Option<int?> BufferBatches = new Option<int?>("--buffer-batches")
    {
        Description = "Shuffle buffer of a run from a model, in model runs: it holds N × store_batch_size_prompts context windows (SAELens n_batches_in_buffer; default: 64 windows)",
    }.Positive();
    /// <summary><c>sae train</c> only: SAELens 6.37's activations_mixing_fraction.</summary>
    public readonly Option<double?> MixingFraction = new("--activations-mixing-fraction")
    {
        Description = "Fraction of the shuffle buffer kept back each round to mix with new activations, in [0, 1] (SAELens activations_mixing_fraction; default 0.5; 0: in order)",
    };
    public readonly Option<string?> Device = new("--device")
    {
        Description = "cpu (default) or cuda[:N] (needs a build with -p:TorchBackend=cuda): where the model runs, and for sae train where the SAEs train",
    };

    /// <summary>Adds the options to <paramref name="command"/>; without <paramref name="harvestModes"/> (<c>sae eval</c>, which
    /// reads each SAE's hooks from its cfg) <c>--mode</c> and <c>--target-hook</c> are left out.</summary>
    public void AddTo(Command command, bool harvestModes = true)
    {
        foreach (var o in new Option[] { Model, Hook, Dataset, Tokens, ContextSize, NoBos, ExcludeSpecial, ExcludeIds, SeqposSlice, DisableConcat, Separator, Mode, TargetHook, FoldLn, CenterWriting, TextField, Dtype, Device })
            if (harvestModes || (o != Mode && o != TargetHook)) command.Options.Add(o);
    }

    public bool Given(ParseResult parse) => parse.GetValue(Model) is not null;

    /// <summary>The options that only describe a run from a model (all but --model, --tokens, --device and the shuffle's
    /// --activations-mixing-fraction), for commands that also read activation files, where the files fix the hook and
    /// contexts: given there, <see cref="Cli.RefuseGiven"/> refuses them.</summary>
    public Option[] ModelOnly => [Hook, Dataset, ContextSize, NoBos, ExcludeSpecial, ExcludeIds, SeqposSlice, DisableConcat, Separator, Mode, TargetHook, FoldLn, CenterWriting, TextField, Dtype, BufferBatches];

    /// <summary><c>--model</c>, or the config's model_name.</summary>
    public bool Given(ParseResult parse, TrainingSettings config) => Given(parse) || config.ModelName is not null;

    public ModelDataOptions Read(ParseResult parse, bool hookRequired = true) => Read(parse, null, hookRequired);

    /// <summary><see cref="Read(ParseResult, bool)"/> for a command on SAEs (<c>sae eval --model</c>): without
    /// <c>--dataset</c>, the dataset the SAEs' cfg.json records (<paramref name="recordedDataset"/>, called only then); without
    /// <c>--revision</c>, a hub model at the revision the SAEs record (<paramref name="recordedRevision"/>: the revision and
    /// the SAE that records it), and with a different <c>--revision</c> a warning naming both.</summary>
    public ModelDataOptions Read(ParseResult parse, Func<string?> recordedDataset, Func<(string Revision, string Sae)?>? recordedRevision = null) =>
        Read(parse, null, hookRequired: false, recordedDataset, recordedRevision);

    /// <summary>The flags over the model and data fields of a <c>--config</c> file (<paramref name="config"/>; SAELens's
    /// model_name, hook_name, dataset_path, context_size, prepend_bos, exclude_special_tokens, store_batch_size_prompts,
    /// model_from_pretrained_kwargs): a flag given wins over its field.</summary>
    public ModelDataOptions Read(ParseResult parse, TrainingSettings? config, bool hookRequired = true, Func<string?>? recordedDataset = null,
        Func<(string Revision, string Sae)?>? recordedRevision = null)
    {
        string src = config?.Source ?? "--config";
        var modelFlag = parse.GetValue(Model);   // with --revision: already the folder of that revision (ModelSource.AtRevision)
        string? revision = ModelSource.RevisionOf(parse);
        string folder;
        if (modelFlag is null && config?.ModelName is { } name)
        {
            revision ??= SaeMetadata.RevisionOf(config.ModelFromPretrainedKwargs, src);
            try
            {
                folder = ModelSource.Resolve(name, revision);
            }
            catch (SaeSharpException e)
            {
                throw new SaeSharpException($"{src}: model_name '{name}' cannot be resolved ({e.Message}). Give model_name (or --model) a local " +
                                            "model folder (config.json, model.safetensors, tokenizer files), 'builtin', or a Hugging Face id whose files " +
                                            "are in the hub cache (HF_HOME) or can be downloaded, or a TransformerLens name of a supported family (gpt2-small, " +
                                            "pythia-70m, gemma-2-2b)");
            }
        }
        else if (revision is null && !IsLocal(modelFlag ?? throw new SaeSharpException("give --model")) && recordedRevision?.Invoke() is { } recorded)
        {
            // An SAE trained on a checkpoint is evaluated on that checkpoint unless --revision says otherwise.
            revision = recorded.Revision;
            try
            {
                folder = ModelSource.Resolve(modelFlag, revision);
            }
            catch (SaeSharpException e)
            {
                throw new SaeSharpException($"{e.Message} (the revision {recorded.Sae} records in model_from_pretrained_kwargs; give --revision to evaluate on another)");
            }
        }
        else
        {
            folder = ModelSource.Resolve(modelFlag!);
            if (revision is not null && recordedRevision?.Invoke() is { } recorded2 && recorded2.Revision != revision)
                CliProgress.Warn($"warning: --revision {revision}: {recorded2.Sae} was trained on revision {recorded2.Revision} of the model (model_from_pretrained_kwargs); evaluating on {revision}");
        }
        var dataset = parse.GetValue(Dataset) ?? (config?.DatasetPath is { } d ? TrainingSettings.DatasetSpec(d) : null) ?? recordedDataset?.Invoke()
                      ?? throw new SaeSharpException(config is not null ? "give --dataset (or dataset_path in --config) with --model"
                          : recordedDataset is not null ? "give --dataset with --model (the SAE's cfg.json records no dataset_path)" : "give --dataset with --model");
        if (hookRequired && (parse.GetValue(Hook) ?? config?.HookName) is null)
            throw new SaeSharpException(config is null ? "give --hook with --model" : "give --hook (or hook_name in --config) with --model");
        if (!Data.TextDataset.Exists(dataset))
            throw new SaeSharpException(parse.GetValue(Dataset) is null && config is not null ? $"{src}: dataset_path {config!.DatasetPath}: no such file or folder (a Hugging Face dataset is named ORG/NAME)" : $"--dataset {dataset}: no such file or folder");
        var kwargs = WeightProcessingOptions.FromKwargs(config?.ModelFromPretrainedKwargs, out _);
        var (excludeFlag, excludeIds) = ReadExclusion(parse);
        string? kwargsDtype = config?.ModelFromPretrainedKwargs is { } kw && kw.TryGetValue("dtype", out var dt) && dt.ValueKind == System.Text.Json.JsonValueKind.String ? dt.GetString() : null;
        return new ModelDataOptions
        {
            ModelPath = folder,
            Revision = revision is null or "main" ? null : revision,
            ModelDtype = parse.GetResult(Dtype) is { Implicit: false } ? ModelLoader.ParseDtype(parse.GetValue(Dtype)!, folder)
                : kwargsDtype is not null ? ModelLoader.ParseDtype(kwargsDtype, folder) : null,
            Device = ComputeDevice.Parse(parse.GetValue(Device)),
            DatasetPath = dataset,
            Tokens = parse.GetValue(Tokens),
            ContextSize = parse.GetValue(ContextSize) ?? config?.ContextSize,
            PrependBos = parse.GetValue(NoBos) ? false : config?.PrependBos,
            ExcludeSpecialTokens = excludeFlag ? true : excludeIds is null ? config?.ExcludeSpecialTokens : null,
            ExcludeTokenIds = excludeIds ?? (excludeFlag ? null : config?.ExcludeTokenIds),
            SeqposSlice = parse.GetValue(SeqposSlice) is { } slice ? Saes.SeqposSlice.Parse(slice) : config?.SeqposSlice,
            DisableConcatSequences = parse.GetValue(DisableConcat) ? true : config?.DisableConcatSequences,
            SequenceSeparatorToken = parse.GetValue(Separator) is { } sep
                ? Data.PretokenizeToken.Parse(sep, "--sequence-separator-token") ?? Data.PretokenizeToken.None : config?.SequenceSeparatorToken,
            TextField = parse.GetValue(TextField),
            BatchSizePrompts = config?.StoreBatchSizePrompts ?? new ModelDataOptions { ModelPath = "", DatasetPath = "" }.BatchSizePrompts,
            BufferBatches = parse.CommandResult.Command.Options.Contains(BufferBatches) ? parse.GetValue(BufferBatches) : null, // else the config's n_batches_in_buffer (TrainingPlan.ForModel)
            ActivationsMixingFraction = parse.CommandResult.Command.Options.Contains(MixingFraction) ? parse.GetValue(MixingFraction) : null, // else the config's activations_mixing_fraction
            Processing = kwargs with { FoldLn = parse.GetValue(FoldLn) || kwargs.FoldLn, CenterWritingWeights = parse.GetValue(CenterWriting) || kwargs.CenterWritingWeights },
        };
    }

    /// <summary><c>--exclude-special-tokens</c> and the ids of <c>--exclude-token-ids</c> (one of the two: SAELens's
    /// exclude_special_tokens is a boolean or a list).</summary>
    public (bool Special, long[]? Ids) ReadExclusion(ParseResult parse) => ReadExclusion(parse, ExcludeSpecial, ExcludeIds);

    /// <summary><see cref="ReadExclusion(ParseResult)"/> for a command's own two options.</summary>
    public static (bool Special, long[]? Ids) ReadExclusion(ParseResult parse, Option<bool> excludeSpecial, Option<string?> excludeIds)
    {
        ArgumentNullException.ThrowIfNull(parse);
        bool special = parse.GetValue(excludeSpecial);
        var ids = parse.GetValue(excludeIds) is { } text ? Tokenizers.ExcludedTokens.Parse(text, "--exclude-token-ids") : null;
        if (special && ids is not null)
            throw new SaeSharpException("give --exclude-special-tokens (the tokenizer's special tokens) or --exclude-token-ids (exactly those ids), not both");
        return (special, ids);
    }

    /// <summary>The builtin model or a local folder: no hub revision applies.</summary>
    private static bool IsLocal(string model) => LanguageModels.BuiltinModel.IsBuiltin(model) || Directory.Exists(model);

    /// <summary>The hook: <c>--hook</c>, else the config's hook_name.</summary>
    public string? HookOf(ParseResult parse, TrainingSettings? config) => parse.GetValue(Hook) ?? config?.HookName;

    public HarvestMode ReadMode(ParseResult parse) => parse.GetValue(Mode) switch
    {
        "out" => HarvestMode.Out,
        "in" => HarvestMode.In,
        "in_to_out" => HarvestMode.InToOut,
        var m => throw new SaeSharpException($"--mode {m}: expected out, in or in_to_out"),
    };
}
