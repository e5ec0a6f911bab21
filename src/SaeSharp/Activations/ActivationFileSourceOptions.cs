namespace SaeSharp.Activations;

/// <summary>How an <see cref="ActivationFileSource"/> reads, shuffles and splits its files.</summary>
public sealed record ActivationFileSourceOptions
{
    /// <summary>Name of the input tensor; null picks the tensor named <c>activations</c>, or the file's only tensor.</summary>
    public string? InputName { get; init; }
    /// <summary>Name of a second tensor used as the reconstruction target (transcoders), e.g. <c>targets</c>; null for none.</summary>
    public string? TargetName { get; init; }
    /// <summary>The hook whose column a SAELens activation cache (a <c>datasets</c> folder) is read from; null: its only
    /// activation column. A <c>.safetensors</c> file without an <c>activations</c> tensor (and no <see cref="InputName"/>)
    /// is read from the tensor of this name, as <c>sae model run --hooks</c> saves it. Other files ignore it.</summary>
    public string? HookName { get; init; }
    /// <summary>Expected input width; a file of another width is an error naming it.</summary>
    public int? ExpectedDIn { get; init; }
    /// <summary>Expected target width (when <see cref="TargetName"/> is set).</summary>
    public int? ExpectedDOut { get; init; }

    /// <summary>Rows read from disk at a time (one chunk).</summary>
    public int ChunkRows { get; init; } = 4096;
    /// <summary>Rows held in the shuffle buffer (raised to <see cref="ChunkRows"/> if smaller). Chunks are read in a random
    /// order into it whenever it is less than half full, and batches are drawn from it at random.</summary>
    public int BufferRows { get; init; } = 32768;
    /// <summary>Shuffle rows (random chunk order + random draws from the buffer); false reads rows in file order.</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>Passes over the data before <see cref="ActivationFileSource.Next"/> returns null; each new pass is a
    /// new shuffle. 1 (default): the data once; 0: no limit.</summary>
    public int Epochs
    {
        get => _epochs;
        init => _epochs = value >= 0 ? value : throw new SaeSharpException($"epochs must be 0 (no limit) or positive, got {value}");
    }
    private readonly int _epochs = 1;
    /// <summary>True: start a new pass whenever the data are used up, without limit (<see cref="Epochs"/> = 0).</summary>
    public bool Loop { get => _epochs == 0; init => _epochs = value ? 0 : 1; }
    /// <summary>Seed of the chunk order and of the draws from the buffer; the same seed gives the same batches.</summary>
    public ulong Seed { get; init; }

    /// <summary>Token ids whose rows are dropped as they are read (SAELens's <c>exclude_special_tokens</c> on a cache's
    /// <c>token_ids</c>); every file must then store a token id per row. Null or empty: every row is used. Row numbers
    /// (<see cref="RowStart"/>, <see cref="RowCount"/>) then count the kept rows only.</summary>
    public IReadOnlyCollection<long>? ExcludeTokenIds { get; init; }

    /// <summary>First row, in the concatenation of all files, that this source uses.</summary>
    public long RowStart { get; init; }
    /// <summary>Number of rows used from <see cref="RowStart"/>; null for all remaining rows.</summary>
    public long? RowCount { get; init; }
}
