using System.CommandLine;
using SaeSharp.Data;
using SaeSharp.Hub;
using SaeSharp.Interop;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae convert IN OUT --to saelens</c>: any loadable SAE written in SAELens's layout
/// (<c>cfg.json</c> + <c>sae_weights.safetensors</c>), in its inference form (BatchTopK as JumpReLU, as SAELens v6 saves it);
/// <c>--to dictionary_learning</c>: an SAE whose architecture dictionary_learning has, or a crosscoder, written as
/// dictionary_learning's (or the crosscoder fork's) trainers leave it (<c>ae.pt</c> + <c>config.json</c>).</summary>
internal static class ConvertCommand
{
    private const string SaeLensTarget = "saelens";
    private const string DictionaryLearningTarget = "dictionary_learning";

    public static Command Create()
    {
        var input = new Argument<string>("in") { Description = "SAE folder or file (SAELens, dictionary_learning, Gemma Scope, Llama Scope, sparsify, OpenAI), RELEASE/SAE_ID or hf:ORG/REPO[/PATH]; with --to dictionary_learning also a crosscoder" };
        var output = new Argument<string>("out") { Description = "Output folder" };
        var to = new Option<string>("--to") { Description = "Output format: saelens (cfg.json + sae_weights.safetensors) or dictionary_learning (ae.pt + config.json)", DefaultValueFactory = _ => "saelens" };
        to.AcceptOnlyFromAmong(SaeLensTarget, DictionaryLearningTarget);
        var force = new Option<bool>("--force") { Description = "Write into an output folder that already holds files" };
        var arch = SaeCommands.ArchOption();
        var command = new Command("convert", "Convert an SAE to SAELens's or dictionary_learning's layout") { input, output, to, force, arch };
        Cli.SetAction(command, parse =>
        {
            var src = parse.GetValue(input)!;
            var dst = parse.GetValue(output)!;
            string target = parse.GetValue(to)!;
            if (File.Exists(dst))
                throw new SaeSharpException($"{dst}: output exists and is a file; give a folder.");
            string[] outputs = target == DictionaryLearningTarget
                ? [DictionaryLearning.WeightsFile, DictionaryLearning.ConfigFile]
                : [SaeLensFormat.CfgFile, SaeLensFormat.WeightsFile, SaeLensFormat.SparsityFile];
            OutputGuard.RefuseReplacingInput("OUT", dst, outputs, new CommandInput("IN", src, InputKind.Sae));
            if (Directory.Exists(dst) && Directory.EnumerateFileSystemEntries(dst).Any() && !parse.GetValue(force))
                throw new SaeSharpException($"{dst}: output folder is not empty (use --force to write into it).");
            if (CrossCoderFormat.IsCrossCoderPath(src))
            {
                if (target != DictionaryLearningTarget)
                    throw new SaeSharpException($"{src}: a crosscoder has no SAELens form; convert it --to dictionary_learning (the fork's ae.pt + config.json).");
                using var cc = CrossCoderFormat.Load(src, out var sources);
                CrossCoderFormat.SaveAePt(cc, dst, sources);
                Console.WriteLine($"converted crosscoder ({cc.Cfg.DictClass}, {cc.Cfg.NumLayers} layers, activation_dim={cc.Cfg.ActivationDim}, dict_size={cc.Cfg.DictSize}) to the dictionary_learning fork's ae.pt: {dst}");
                return 0;
            }
            var resolved = SaeSource.Resolve(src);
            var format = SaeLoader.DetectFormat(resolved);
            using var sae = SaeLoader.Load(resolved, SaeCommands.LoadOptions(parse, arch));
            if (target == DictionaryLearningTarget)
            {
                DictionaryLearning.Save(sae, dst);
                Console.WriteLine($"converted {format} SAE ({sae.Cfg.Architecture}, d_in={sae.Cfg.DIn}, d_sae={sae.Cfg.DSae}) to dictionary_learning: {dst}");
                return 0;
            }
            var inference = sae.ToInferenceSae();
            try
            {
                // What SAELens's own cfg.json holds where the source records nothing (null would break its evals).
                inference.Cfg.Metadata.FillSaeLensDefaults();
                SaeLensFormat.Save(inference, dst);
            }
            finally
            {
                if (!ReferenceEquals(inference, sae)) inference.Dispose();
            }
            var cfg = inference.Cfg;
            Console.WriteLine($"converted {format} SAE ({cfg.Architecture}, d_in={cfg.DIn}, d_sae={cfg.DSae}) to SAELens: {dst}");
            return 0;
        });
        return command;
    }
}
