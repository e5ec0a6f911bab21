using SaeSharp.Saes;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Pipelines;

/// <summary>Model and text options shared by <c>sae cache</c>, <c>sae train --model</c> and <c>sae eval</c>.</summary>
public sealed record ModelDataOptions
{
    /// <summary>Hugging Face model folder (config.json + safetensors); <c>builtin</c> stands for the shipped model's folder
    /// (<see cref="LanguageModels.BuiltinModel.Folder"/>), as <c>--model builtin</c> does. A hub id is not downloaded
    /// here: <see cref="ModelPipeline.ResolveModelFolder"/> gives its folder.</summary>
    public required string ModelPath
    {
        get => _modelPath;
        init => _modelPath = LanguageModels.BuiltinModel.Resolve(value);
    }

    private readonly string _modelPath = "";
    /// <summary>The hub revision (branch, tag or commit) <see cref="ModelPath"/> is the snapshot of, when not main: recorded
    /// in the SAEs' and caches' <c>model_from_pretrained_kwargs</c> as <c>{"revision": ...}</c> (as SAELens passes it to
    /// TransformerLens's from_pretrained). It does not choose the folder: <see cref="ModelPipeline.ResolveModelFolder"/> does.</summary>
    public string? Revision { get; init; }
    /// <summary>Dataset file or folder (.txt, .jsonl, .parquet; text or pre-tokenized).</summary>
    public required string DatasetPath { get; init; }
    /// <summary>Tokenizer folder; null: the model folder.</summary>
    public string? TokenizerPath { get; init; }
    /// <summary>Tokens per context window; null: the SAE's <c>context_size</c> (eval) or 128.</summary>
    public int? ContextSize { get; init; }
    /// <summary>Start each window with BOS and separate documents with it (SAELens <c>prepend_bos</c>); null: the SAE's setting or true.</summary>
    public bool? PrependBos { get; init; }
    /// <summary>SAELens's <c>seqpos_slice</c>: the positions of each window whose activations are used (trained on, cached,
    /// evaluated); null: the SAE's <c>seqpos_slice</c> (eval) or every position. A token budget counts these positions.</summary>
    public Saes.SeqposSlice? SeqposSlice { get; init; }
    /// <summary>SAELens's <c>disable_concat_sequences</c>: one window per document of a text dataset (BOS-prefixed with
    /// prepend_bos), the rest of it and shorter documents dropped; null: the SAE's setting (eval) or false.</summary>
    public bool? DisableConcatSequences { get; init; }
    /// <summary>SAELens's <c>sequence_separator_token</c> between the documents packed into a window of a text dataset
    /// (<see cref="Data.TokenWindows.SequenceSeparatorId"/>); <see cref="Data.PretokenizeToken.None"/>: none; null: the
    /// SAE's setting (eval) or "bos".</summary>
    public Data.PretokenizeToken? SequenceSeparatorToken { get; init; }
    /// <summary>JSONL/parquet field holding the text; null: as SAELens, "tokens"/"input_ids" (pre-tokenized), else
    /// "text", else "problem" (<see cref="Data.TextDataset.ChooseColumn(IEnumerable{string}, string?)"/>).</summary>
    public string? TextField { get; init; }
    /// <summary>Token budget N (⌈N / positions kept per window⌉ windows, <see cref="SeqposSlice"/>); null: the whole dataset (times <see cref="Epochs"/>).</summary>
    public long? Tokens { get; init; }
    /// <summary>Passes over the dataset a training source makes (<see cref="Activations.ModelActivationSourceOptions.Epochs"/>):
    /// 1 reads it once, 0 repeats it until the token budget is reached.</summary>
    public int Epochs { get; init; } = 1;
    /// <summary>Leave out BOS/EOS/PAD and other special-token positions; null: the SAE's <c>exclude_special_tokens</c> or false.</summary>
    public bool? ExcludeSpecialTokens { get; init; }
    /// <summary>SAELens's <c>exclude_special_tokens</c> as a list: leave out the positions of exactly these token ids (no
    /// BOS etc. added); set with <see cref="ExcludeSpecialTokens"/> null. Null: <see cref="ExcludeSpecialTokens"/> decides.</summary>
    public IReadOnlyList<long>? ExcludeTokenIds { get; init; }
    /// <summary>Weight processing of the model (training and caching; evaluation takes it from the SAEs' cfg).</summary>
    public WeightProcessingOptions Processing { get; init; } = new();
    /// <summary>dtype the model runs in (bfloat16 or float16 halve its memory); null: float32, and for evaluation the
    /// dtype the SAEs were trained with (their <c>model_from_pretrained_kwargs</c> <c>dtype</c>).</summary>
    public ScalarType? ModelDtype { get; init; }
    /// <summary>Where the model runs (<see cref="ComputeDevice.Parse"/>): harvesting (<c>sae cache</c>, <c>sae train --model</c>) and
    /// evaluation run the model there; evaluation runs the SAEs there too, while <c>SaeTrainer</c> trains on the CPU.</summary>
    public Device Device { get; init; } = CPU;
    /// <summary>Windows per model run.</summary>
    public int BatchSizePrompts { get; init; } = 8;
    /// <summary>Capacity of a training source's shuffle buffer in model runs (SAELens <c>n_batches_in_buffer</c>,
    /// <c>--buffer-batches</c>): it holds <see cref="BufferBatches"/> × <see cref="BatchSizePrompts"/> context windows, as
    /// SAELens's holds n_batches_in_buffer × store_batch_size_prompts × context_size tokens. Null:
    /// <see cref="DefaultBufferContexts"/> windows.</summary>
    public int? BufferBatches
    {
        get => _bufferBatches;
        init => _bufferBatches = value is null or > 0 ? value : throw new SaeSharpException($"n_batches_in_buffer (--buffer-batches) must be positive, got {value}");
    }
    private readonly int? _bufferBatches;
    /// <summary>Shuffle-buffer capacity in context windows without <see cref="BufferBatches"/>.</summary>
    public const int DefaultBufferContexts = 64;
    /// <summary>Shuffle-buffer capacity in context windows: <see cref="BufferBatches"/> × <see cref="BatchSizePrompts"/>,
    /// else <see cref="DefaultBufferContexts"/> (at least one model run).</summary>
    public int BufferContexts => Math.Max(BatchSizePrompts, BufferBatches is int n ? checked(n * BatchSizePrompts) : DefaultBufferContexts);
    /// <summary>SAELens 6.37's <c>activations_mixing_fraction</c> (<c>--activations-mixing-fraction</c>): the fraction of a
    /// training source's shuffle buffer kept back for the next round
    /// (<see cref="Activations.ModelActivationSourceOptions.MixingFraction"/>). Null: 0.5, SAELens's default.</summary>
    public double? ActivationsMixingFraction
    {
        get => _mixingFraction;
        init => _mixingFraction = value is null or (>= 0 and <= 1) ? value : throw new SaeSharpException($"activations_mixing_fraction (--activations-mixing-fraction) must be in [0, 1], got {value}");
    }
    private readonly double? _mixingFraction;

    /// <summary>
    /// The dataset an SAE's cfg.json records (<c>metadata.dataset_path</c>), as <c>--dataset</c> takes it (a Hugging Face
    /// id <c>ORG/NAME</c> as <c>hf:ORG/NAME</c>), for a run on a model given no dataset; null when none is recorded.
    /// (SAELens's evals take a dataset argument instead, default <c>Skylion007/openwebtext</c>.) A recorded path that holds
    /// activations rather than text (an SAE trained on activation files or a cache records those) is an error naming
    /// <paramref name="sae"/>, the path and <paramref name="option"/>.
    /// </summary>
    public static string? RecordedDataset(SaeMetadata metadata, string sae, string option = "--dataset")
    {
        ArgumentNullException.ThrowIfNull(metadata);
        if (string.IsNullOrEmpty(metadata.DatasetPath)) return null;
        string spec = Training.TrainingSettings.DatasetSpec(metadata.DatasetPath);
        if (!Data.TextDataset.Exists(spec) && !Path.IsPathRooted(spec) && !spec.StartsWith(Data.HubDataset.Prefix, StringComparison.Ordinal))
        {
            // A relative path (SaeSharp before it recorded absolute ones) read from elsewhere: try it beside the SAE's
            // folder and each folder above it, where the training run most likely ran.
            var tried = SaeFolderChain(sae).Select(d => Path.Combine(d, spec)).ToList();
            spec = tried.FirstOrDefault(Data.TextDataset.Exists)
                ?? throw new SaeSharpException($"{sae}: cfg.json dataset_path {metadata.DatasetPath}: not found from the current folder " +
                    $"({Path.GetFullPath(spec)}){(tried.Count == 0 ? "" : $" nor beside the SAE's folders ({string.Join(", ", tried)})")}; give {option}");
        }
        bool activations = File.Exists(spec) ? Data.TextDataset.KindOf(spec) == Data.TextDataset.FileKind.Unknown
            : Directory.Exists(spec) && (File.Exists(Path.Combine(spec, Activations.ActivationCacheFolder.ManifestName)) || Activations.SaeLensActivationCache.IsCache(spec));
        if (activations)
            throw new SaeSharpException($"{sae}: cfg.json dataset_path {metadata.DatasetPath} holds activations, not text (the SAE was trained on them); give {option}");
        if (!Data.TextDataset.Exists(spec))
            throw new SaeSharpException($"{sae}: cfg.json dataset_path {metadata.DatasetPath}: no such file or folder (a Hugging Face dataset is named ORG/NAME); give {option}");
        return spec;
    }

    /// <summary>The folder of a local SAE (its folder, or the folder of its file) and every folder above it; empty for a
    /// release or hub id.</summary>
    private static IEnumerable<string> SaeFolderChain(string sae)
    {
        string? dir = Directory.Exists(sae) ? Path.GetFullPath(sae) : File.Exists(sae) ? Path.GetDirectoryName(Path.GetFullPath(sae)) : null;
        for (; dir is not null; dir = Path.GetDirectoryName(dir)) yield return dir;
    }
}
