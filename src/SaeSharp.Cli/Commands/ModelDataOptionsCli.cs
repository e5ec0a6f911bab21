using System.CommandLine;
using SaeSharp.Activations;
using SaeSharp.Models;
using SaeSharp.Pipelines;

namespace SaeSharp.Cli.Commands;

/// <summary>The options that point a command at a language model and a text dataset (<c>--model --hook --dataset --tokens</c>).</summary>
internal sealed class ModelDataOptionsCli
{
    public readonly Option<string?> Model = new("--model") { Description = "builtin (the shipped model), Hugging Face model id or local model folder (activations from text)" };
    public readonly Option<string?> Hook = new("--hook") { Description = "TransformerLens hook name or module path, e.g. blocks.3.hook_mlp_out" };
    public readonly Option<string?> Dataset = new("--dataset") { Description = ".txt, .jsonl, .parquet (or a folder of them), or a hub dataset hf:ORG/NAME[:SPLIT]; pre-tokenized jsonl/parquet detected" };
    public readonly Option<long?> Tokens = new Option<long?>("--tokens") { Description = "Token budget" }.Positive();
    public readonly Option<int?> ContextSize = new Option<int?>("--context-size") { Description = "Tokens per context window (default 128; eval: each SAE's context_size)" }.Positive();
    public readonly Option<bool> NoBos = new("--no-prepend-bos") { Description = "Do not start every window with BOS" };
    public readonly Option<bool> ExcludeSpecial = new("--exclude-special-tokens") { Description = "Leave BOS/EOS/pad positions out of the activations" };
    public readonly Option<string> Mode = new("--mode") { Description = "out | in | in_to_out (transcoders: module input → output)", DefaultValueFactory = _ => "out" };
    public readonly Option<string?> TargetHook = new("--target-hook") { Description = "Reconstruction target hook for --mode in_to_out" };
    public readonly Option<bool> FoldLn = new("--fold-ln") { Description = "TransformerLens fold_ln" };
    public readonly Option<bool> CenterWriting = new("--center-writing-weights") { Description = "TransformerLens center_writing_weights" };
    public readonly Option<string?> TextField = new("--text-field") { Description = "jsonl field / parquet column holding the text (default: as SAELens, tokens/input_ids, else text, else problem)" };
    public readonly Option<string> Dtype = ModelSource.DtypeOption();
    public readonly Option<string?> Device = new("--device")
    {
        Description = "cpu (default) or cuda[:N] (needs a build with -p:TorchBackend=cuda): where the model runs, and for sae train where the SAEs train",
    };

    /// <summary>Adds the options to <paramref name="command"/>; without <paramref name="harvestModes"/> (<c>sae eval</c>, which
    /// reads each SAE's hooks from its cfg) <c>--mode</c> and <c>--target-hook</c> are left out.</summary>
    public void AddTo(Command command, bool harvestModes = true)
    {
        foreach (var o in new Option[] { Model, Hook, Dataset, Tokens, ContextSize, NoBos, ExcludeSpecial, Mode, TargetHook, FoldLn, CenterWriting, TextField, Dtype, Device })
            if (harvestModes || (o != Mode && o != TargetHook)) command.Options.Add(o);
    }

    public bool Given(ParseResult parse) => parse.GetValue(Model) is not null;

    public ModelDataOptions Read(ParseResult parse, bool hookRequired = true)
    {
        var model = parse.GetValue(Model) ?? throw new SaeSharpException("give --model");
        var dataset = parse.GetValue(Dataset) ?? throw new SaeSharpException("give --dataset with --model");
        if (hookRequired && parse.GetValue(Hook) is null) throw new SaeSharpException("give --hook with --model");
        if (!Data.TextDataset.Exists(dataset)) throw new SaeSharpException($"--dataset {dataset}: no such file or folder");
        var folder = ModelSource.Resolve(model);
        return new ModelDataOptions
        {
            ModelPath = folder,
            ModelDtype = parse.GetResult(Dtype) is { Implicit: false } ? ModelLoader.ParseDtype(parse.GetValue(Dtype)!, folder) : null,
            Device = ComputeDevice.Parse(parse.GetValue(Device)),
            DatasetPath = dataset,
            Tokens = parse.GetValue(Tokens),
            ContextSize = parse.GetValue(ContextSize),
            PrependBos = parse.GetValue(NoBos) ? false : null,
            ExcludeSpecialTokens = parse.GetValue(ExcludeSpecial) ? true : null,
            TextField = parse.GetValue(TextField),
            Processing = new WeightProcessingOptions { FoldLn = parse.GetValue(FoldLn), CenterWritingWeights = parse.GetValue(CenterWriting) },
        };
    }

    public HarvestMode ReadMode(ParseResult parse) => parse.GetValue(Mode) switch
    {
        "out" => HarvestMode.Out,
        "in" => HarvestMode.In,
        "in_to_out" => HarvestMode.InToOut,
        var m => throw new SaeSharpException($"--mode {m}: expected out, in or in_to_out"),
    };
}
