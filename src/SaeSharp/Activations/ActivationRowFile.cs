using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>
/// One activation file seen as rows: an input tensor [N, d_in] and optionally a target tensor [N, d_out].
/// Only the header is read when it is opened; rows are read on demand, converted to float32 and checked for NaN/Inf.
/// </summary>
internal abstract class ActivationRowFile : IDisposable
{
    public abstract string Path { get; }
    public abstract long Rows { get; }
    public abstract int InputWidth { get; }
    /// <summary>Width of the target tensor, or null when the file has none.</summary>
    public abstract int? TargetWidth { get; }
    public abstract string InputName { get; }
    public abstract string? TargetName { get; }

    protected abstract Tensor ReadInputRaw(long start, long count);
    protected abstract Tensor ReadTargetRaw(long start, long count);

    /// <summary>Rows [start, start+count) of the input, float32, checked to be finite.</summary>
    public Tensor ReadInput(long start, long count) => CheckedFloat32(ReadInputRaw(start, count), InputName, start);

    /// <summary>Rows [start, start+count) of the target, float32, checked to be finite.</summary>
    public Tensor ReadTarget(long start, long count)
    {
        if (TargetName is null) throw new InvalidOperationException($"{Path} has no target tensor");
        return CheckedFloat32(ReadTargetRaw(start, count), TargetName, start);
    }

    /// <summary>True when the file stores a token id per row (a cache's <c>token_ids</c>), so rows can be dropped by token.</summary>
    public virtual bool HasTokenIds => false;

    /// <summary>The token ids of rows [start, start+count) (<see cref="HasTokenIds"/> files only).</summary>
    public virtual long[] ReadTokenIds(long start, long count) => throw new InvalidOperationException($"{Path} has no token ids");

    /// <summary>How error messages name a tensor of this file.</summary>
    public virtual string Describe(string tensorName) => $"{Path}: tensor '{tensorName}'";

    private Tensor CheckedFloat32(Tensor raw, string name, long start)
    {
        Tensor t = raw;
        if (t.dtype != ScalarType.Float32)
        {
            t = raw.to(ScalarType.Float32);
            raw.Dispose();
        }
        try
        {
            CheckFinite(t, Describe(name), start);
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    /// <summary>Throws a <see cref="SaeSharpException"/> naming the first row of <paramref name="t"/> that holds NaN or
    /// Inf; <paramref name="firstRow"/> is the row number of t[0] in the file.</summary>
    internal static void CheckFinite(Tensor t, string what, long firstRow)
    {
        if (FirstNonFinite(t) is var (row, col, v))
            throw new SaeSharpException($"{what}: row {firstRow + row} holds {Describe(v)} (column {col}); activations must be finite");
    }

    /// <summary>The first row of <paramref name="t"/> [rows, ...] holding NaN or ±Inf, its first such column (flattened)
    /// and that value; null when every value is finite.</summary>
    internal static (long Row, long Column, float Value)? FirstNonFinite(Tensor t)
    {
        using var scope = NewDisposeScope();
        // Fast path: a finite sum means no NaN and no ±Inf (a sum that overflows falls through to the exact check).
        if (double.IsFinite(t.sum(type: ScalarType.Float64).item<double>())) return null;
        var bad = t.isfinite().logical_not();
        if (!bad.any().item<bool>()) return null;
        var rows = bad.reshape(t.shape[0], -1).any(1).nonzero();
        long row = rows[0, 0].item<long>();
        var values = t[row].reshape(-1);
        var badInRow = bad[row].reshape(-1).nonzero();
        long col = badInRow[0, 0].item<long>();
        return (row, col, values[col].to(ScalarType.Float32).item<float>());
    }

    /// <summary>"NaN", "+Inf" or "-Inf".</summary>
    internal static string Describe(float v) => float.IsNaN(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";

    public abstract void Dispose();

    /// <summary>Opens a <c>.safetensors</c> or <c>.npy</c> activation file, or an <c>.arrow</c> shard of a SAELens
    /// activation cache (its column <paramref name="hookName"/>, or the only one; shape and dtype from the folder's
    /// dataset_info.json).</summary>
    public static ActivationRowFile Open(string path, string? inputName, string? targetName, string? hookName = null)
    {
        string ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
        return ext switch
        {
            ".safetensors" => new SafeTensorsRowFile(path, inputName, targetName, hookName),
            ".npy" => new NpyRowFile(path, targetName),
            ".arrow" => OpenArrow(path, targetName, hookName),
            _ => throw new SaeSharpException($"{path}: unsupported activation file type '{ext}' (expected .safetensors or .npy, or a SAELens activation cache folder)"),
        };
    }

    private static ArrowActivationRowFile OpenArrow(string path, string? targetName, string? hookName)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        if (!SaeLensActivationCache.IsCache(dir))
            throw new SaeSharpException($"{path}: an .arrow shard is read as part of its SAELens activation cache: give the folder holding it with state.json and dataset_info.json");
        if (targetName is not null)
            throw new SaeSharpException($"{dir}: a SAELens activation cache has no target activations ('{targetName}'); transcoders train from a model or from safetensors files");
        return new ArrowActivationRowFile(path, SaeLensActivationCache.Open(dir).Column(hookName));
    }
}

/// <summary>A <c>.safetensors</c> activation file: a single tensor, or one named <c>activations</c> (or the given name, or
/// the given hook's name, as <c>sae model run --hooks</c> saves it), plus an optional target tensor with the same number
/// of rows. A tensor [batch, seq, d] is read as [batch·seq, d] rows. A name the file lacks is read from <c>name.0</c>,
/// <c>name.1</c>, ... one after another (<c>sae model run</c> with several prompts writes those); a <c>sae model run</c> file
/// with a single hook is read from that hook without a name.</summary>
internal sealed class SafeTensorsRowFile : ActivationRowFile
{
    /// <summary>The input tensor's name when a file holds more than one tensor and none is given.</summary>
    public const string DefaultInputName = "activations";

    private static readonly string[] SupportedDtypes = ["F32", "F16", "BF16"];
    private readonly SafeTensorsFile _file;

    public SafeTensorsRowFile(string path, string? inputName, string? targetName, string? hookName = null)
    {
        _file = SafeTensorsFile.Open(path);
        try
        {
            string[] input;
            if (inputName is not null) input = PartsOf(inputName) ?? [_file.Info(inputName).Name];
            else if (_file.Contains(DefaultInputName)) input = [DefaultInputName];
            else if (hookName is not null && PartsOf(hookName) is { } hookParts) input = hookParts;
            else if (_file.Names.Count == 1 && targetName is null) input = [_file.Names[0]];
            else if (hookName is null && targetName is null && ModelRunHook() is { } runHook) input = PartsOf(runHook)!;
            else
                throw new SaeSharpException($"{path}: cannot tell which tensor holds the activations: no tensor named '{DefaultInputName}'" +
                    (hookName is null ? "" : $" or '{hookName}' (or '{hookName}.0', '{hookName}.1', ...)") + $" (has: {string.Join(", ", _file.Names)}); save it as '{DefaultInputName}' " +
                    "(sae encode --tensor NAME, or from C# ActivationFileSourceOptions.InputName, names it)");
            (_input, _inputStarts) = Rowed(input);
            InputName = input.Length == 1 ? input[0] : $"{input[0]}..{input[^1]}";
            Rows = _inputStarts[^1];
            InputWidth = checked((int)_file.Info(input[0]).Shape[^1]);
            if (targetName is not null)
            {
                var target = PartsOf(targetName) ?? [_file.Info(targetName).Name];
                (_target, _targetStarts) = Rowed(target);
                TargetName = target.Length == 1 ? target[0] : $"{target[0]}..{target[^1]}";
                if (_targetStarts[^1] != Rows)
                    throw new SaeSharpException($"{path}: target tensor '{TargetName}' has {_targetStarts[^1]} rows but input tensor '{InputName}' has {Rows}");
                TargetWidth = checked((int)_file.Info(target[0]).Shape[^1]);
            }
        }
        catch
        {
            _file.Dispose();
            throw;
        }
    }

    /// <summary>The tensor <paramref name="name"/>, or when the file has none of that name, <c>name.0</c>, <c>name.1</c>, ...
    /// (<c>sae model run</c> with several prompts saves each prompt's activations so), in order; null when neither exists.</summary>
    private string[]? PartsOf(string name)
    {
        if (_file.Contains(name)) return [name];
        var parts = new List<string>();
        while (_file.Contains($"{name}.{parts.Count}")) parts.Add($"{name}.{parts.Count}");
        return parts.Count == 0 ? null : [.. parts];
    }

    /// <summary>The one hook of a <c>sae model run</c> file (it has <c>logits</c> or <c>logits.0</c>), beside its logits, tokens and
    /// generations, with or without the prompts' <c>.0</c>, <c>.1</c>, ...; null when it holds no hook or several.</summary>
    private string? ModelRunHook()
    {
        bool perPrompt = _file.Contains("logits.0");
        if (!perPrompt && !_file.Contains("logits")) return null;
        var hooks = _file.Names.Select(n => perPrompt && RunIndex.Match(n) is { Success: true } m ? m.Groups[1].Value : n)
            .Where(n => n is not ("logits" or "tokens" or "generated_clean" or "generated_edited")).Distinct().ToList();
        return hooks.Count == 1 ? hooks[0] : null;
    }

    private static readonly System.Text.RegularExpressions.Regex RunIndex = new(@"^(.+)\.[0-9]+$");

    /// <summary>Checks the tensors as activation matrices of one width and returns them with the first row of each
    /// (and the total rows last).</summary>
    private (string[] Names, long[] Starts) Rowed(string[] names)
    {
        var starts = new long[names.Length + 1];
        long width = -1;
        for (int i = 0; i < names.Length; i++)
        {
            var info = CheckMatrix(_file.Info(names[i]));
            if (width >= 0 && info.Shape[^1] != width)
                throw new SaeSharpException($"{Path}: tensor '{names[i]}' has width {info.Shape[^1]} but '{names[0]}' has width {width}");
            width = info.Shape[^1];
            starts[i + 1] = starts[i] + RowsOf(info);
        }
        return (names, starts);
    }

    /// <summary>Rows [start, start+count) across <paramref name="names"/> read one after another.</summary>
    private Tensor ReadParts(string[] names, long[] starts, long start, long count)
    {
        if (names.Length == 1) return _file.ReadMatrixRows(names[0], start, count);
        using var scope = NewDisposeScope();
        var pieces = new List<Tensor>();
        for (int i = 0; i < names.Length && count > 0; i++)
        {
            if (start >= starts[i + 1]) continue;
            long n = Math.Min(count, starts[i + 1] - start);
            pieces.Add(_file.ReadMatrixRows(names[i], start - starts[i], n));
            start += n;
            count -= n;
        }
        return cat(pieces, 0).MoveToOuterDisposeScope();
    }

    private readonly string[] _input = [];
    private readonly long[] _inputStarts = [0];
    private readonly string[] _target = [];
    private readonly long[] _targetStarts = [0];

    private SafeTensorInfo CheckMatrix(SafeTensorInfo info)
    {
        if (info.Shape.Length is not (2 or 3))
            throw new SaeSharpException($"{Path}: tensor '{info.Name}' has shape [{string.Join(", ", info.Shape)}]; expected [N, d] or [batch, seq, d] activations");
        if (!SupportedDtypes.Contains(info.Dtype))
            throw new SaeSharpException($"{Path}: tensor '{info.Name}' has dtype {info.Dtype}; expected F32, F16 or BF16");
        return info;
    }

    /// <summary>The tensor of a row's token id (SaeSharp cache shards write it).</summary>
    public const string TokenIdsName = "token_ids";
    private static readonly string[] TokenIdDtypes = ["I64", "I32"];

    public override string Path => _file.Path;
    public override long Rows { get; }

    public override bool HasTokenIds
    {
        get
        {
            if (!_file.Contains(TokenIdsName)) return false;
            var info = _file.Info(TokenIdsName);
            if (info.Shape.Length != 1 || info.Shape[0] != Rows || !TokenIdDtypes.Contains(info.Dtype))
                throw new SaeSharpException($"{Path}: tensor '{TokenIdsName}' has shape [{string.Join(", ", info.Shape)}] and dtype {info.Dtype}; expected [{Rows}] (a token id per row), I64 or I32");
            return true;
        }
    }

    public override long[] ReadTokenIds(long start, long count)
    {
        _ = HasTokenIds;
        using var t = _file.ReadRows(TokenIdsName, start, count, ScalarType.Int64);
        return t.data<long>().ToArray();
    }
    public override int InputWidth { get; }
    public override int? TargetWidth { get; }
    public override string InputName { get; }
    public override string? TargetName { get; }

    /// <summary>Rows of an [N, d] tensor, or of a [batch, seq, d] one read position by position (batch·seq rows).</summary>
    private static long RowsOf(SafeTensorInfo info) => info.Shape[..^1].Aggregate(1L, (a, b) => a * b);

    protected override Tensor ReadInputRaw(long start, long count) => ReadParts(_input, _inputStarts, start, count);
    protected override Tensor ReadTargetRaw(long start, long count) => ReadParts(_target, _targetStarts, start, count);

    public override void Dispose() => _file.Dispose();
}

/// <summary>A <c>.npy</c> activation file: one float32 or float16 array [N, d_in] in C order (no target tensor).</summary>
internal sealed class NpyRowFile : ActivationRowFile
{
    private readonly NpyReader _reader;

    public NpyRowFile(string path, string? targetName)
    {
        if (targetName is not null)
            throw new SaeSharpException($"{path}: a .npy file holds a single array, so it cannot provide the target tensor '{targetName}'; use .safetensors files for transcoder data");
        _reader = NpyReader.Open(path);
        try
        {
            var h = _reader.Header;
            if (h.Shape.Length != 2)
                throw new SaeSharpException($"{path}: array has shape ({string.Join(", ", h.Shape)}); expected [N, d] activations");
            if (h.DType is not (ScalarType.Float32 or ScalarType.Float16))
                throw new SaeSharpException($"{path}: array has dtype {h.Descr}; expected float32 (<f4) or float16 (<f2)");
            Path = path;
            Rows = h.Shape[0];
            InputWidth = checked((int)h.Shape[1]);
        }
        catch
        {
            _reader.Dispose();
            throw;
        }
    }

    public override string Path { get; }
    public override long Rows { get; }
    public override int InputWidth { get; }
    public override int? TargetWidth => null;
    public override string InputName => "array";
    public override string? TargetName => null;

    public override string Describe(string tensorName) => Path;
    protected override Tensor ReadInputRaw(long start, long count) => _reader.ReadRows(start, count);
    protected override Tensor ReadTargetRaw(long start, long count) => throw new InvalidOperationException($"{Path} has no target tensor");

    public override void Dispose() => _reader.Dispose();
}
