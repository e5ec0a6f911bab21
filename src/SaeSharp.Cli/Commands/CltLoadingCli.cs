using System.CommandLine;
using SaeSharp.Hub;
using SaeSharp.Interop;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>--lazy</c> / <c>--no-lazy</c> of a command that may load a whole CLT or transcoder set (<c>sae eval</c>,
/// <c>features</c>, <c>inspect</c>, <c>attribute</c>, <c>graph</c>). Neither: circuit-tracer's defaults (decoders read from the
/// files on demand, encoders in memory).</summary>
internal sealed class CltLoadingCli
{
    public Option<bool> Lazy { get; } = new("--lazy")
    {
        Description = "A whole CLT or transcoder set: read its encoders from the files too, one layer at a time (circuit-tracer's lazy_encoder; " +
            "default: only the decoders, the active features' rows)",
    };

    public Option<bool> NoLazy { get; } = new("--no-lazy")
    {
        Description = "A whole CLT or transcoder set: load every weight into memory (circuit-tracer's lazy_decoder=False; default: decoders stay in the files)",
    };

    /// <summary>Refuses <paramref name="saePath"/> unless it is a whole CLT or transcoder set: a path that does not exist
    /// is named as such, anything else gets <paramref name="why"/> (what the command needs, and where single SAEs go).</summary>
    public static void RequireWhole(string saePath, string why)
    {
        if (!saePath.StartsWith(SaeSource.HubPrefix, StringComparison.Ordinal) && !Directory.Exists(saePath) && !File.Exists(saePath))
            throw new SaeSharpException($"--sae '{saePath}': no such folder");
        if (!CrossLayerTranscoderLoader.IsCrossLayerTranscoder(saePath, null)) throw new SaeSharpException($"--sae '{saePath}': {why}");
    }

    public void AddTo(Command command)
    {
        command.Options.Add(Lazy);
        command.Options.Add(NoLazy);
    }

    /// <summary>Refuses --lazy / --no-lazy when <paramref name="sae"/> is not a whole CLT or transcoder set.</summary>
    public void RefuseForSae(ParseResult parse, string sae) =>
        Cli.RefuseGiven(parse, $"only for a whole cross-layer transcoder or transcoder set; {sae} is a single SAE (loaded whole)", Lazy, NoLazy);

    /// <summary>The load options the command line gives, the CLT's weights in the dtype beside a model in <paramref name="modelDtype"/>.</summary>
    public CrossLayerTranscoderLoadOptions Read(ParseResult parse, ScalarType? modelDtype)
    {
        bool lazy = parse.GetValue(Lazy), eager = parse.GetValue(NoLazy);
        if (lazy && eager) throw new SaeSharpException("--lazy and --no-lazy: give one (--lazy also reads the encoders on demand; --no-lazy loads every weight)");
        var dtype = CrossLayerTranscoderLoader.ForModel(modelDtype);
        return eager ? CrossLayerTranscoderLoadOptions.Eager(dtype) : new CrossLayerTranscoderLoadOptions { Dtype = dtype, LazyEncoder = lazy };
    }
}
