using System.CommandLine;
using SaeSharp.Corpus;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae corpus</c>: writes the labelled story corpus (.jsonl) the built-in model is trained on.</summary>
internal static class CorpusCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Output .jsonl file", Required = true };
        var docs = new Option<int>("--docs") { Description = "Number of stories", DefaultValueFactory = _ => 10_000 }.Positive();
        var seed = new Option<ulong>("--seed") { Description = "Seed (the same seed gives the same corpus)", DefaultValueFactory = _ => 0UL };
        var command = new Command("corpus", "Write the labelled story corpus (text, words, per-token labels) as .jsonl") { output, docs, seed };
        Cli.SetAction(command, parse =>
        {
            string path = parse.GetValue(output)!;
            long tokens = LabelledCorpus.Write(path, parse.GetValue(seed), parse.GetValue(docs));
            Console.WriteLine($"wrote {Cli.Integer(parse.GetValue(docs))} stories, {Cli.Integer(tokens)} tokens: {path}");
            return 0;
        });
        return command;
    }
}
