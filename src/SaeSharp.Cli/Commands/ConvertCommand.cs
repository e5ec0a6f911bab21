using System.CommandLine;
using SaeSharp.Hub;
using SaeSharp.Interop;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae convert IN --to saelens OUT</c>: any loadable SAE written in SAELens's layout
/// (<c>cfg.json</c> + <c>sae_weights.safetensors</c>), in its inference form (BatchTopK as JumpReLU, as SAELens v6 saves it).</summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("in") { Description = "SAE folder or file (SAELens, dictionary_learning, Gemma Scope, Llama Scope, sparsify, OpenAI), RELEASE/SAE_ID or hf:ORG/REPO[/PATH]" };
        var output = new Argument<string>("out") { Description = "Output folder" };
        var to = new Option<string>("--to") { Description = "Output format", DefaultValueFactory = _ => "saelens" };
        to.AcceptOnlyFromAmong("saelens");
        var force = new Option<bool>("--force") { Description = "Write into an output folder that already holds files" };
        var arch = SaeCommands.ArchOption();
        var command = new Command("convert", "Convert an SAE to SAELens's layout") { input, output, to, force, arch };
        Cli.SetAction(command, parse =>
        {
            var src = parse.GetValue(input)!;
            var dst = parse.GetValue(output)!;
            if (File.Exists(dst))
                throw new SaeSharpException($"{dst}: output exists and is a file; give a folder.");
            OutputGuard.RefuseReplacingInput("OUT", dst, [SaeLensFormat.CfgFile, SaeLensFormat.WeightsFile, SaeLensFormat.SparsityFile],
                new CommandInput("IN", src, InputKind.Sae));
            if (Directory.Exists(dst) && Directory.EnumerateFileSystemEntries(dst).Any() && !parse.GetValue(force))
                throw new SaeSharpException($"{dst}: output folder is not empty (use --force to write into it).");
            var resolved = SaeSource.Resolve(src);
            var format = SaeLoader.DetectFormat(resolved);
            using var sae = SaeLoader.Load(resolved, SaeCommands.LoadOptions(parse, arch));
            var inference = sae.ToInferenceSae();
            try
            {
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
