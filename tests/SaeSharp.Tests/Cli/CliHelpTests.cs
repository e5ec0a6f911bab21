using System.CommandLine;
using SaeSharp.Cli.Commands;

namespace SaeSharp.Tests.Cli;

/// <summary>What the commands' help says, against the README's command table and each other.</summary>
public class CliHelpTests
{
    private static readonly RootCommand Root = SaeSharp.Cli.Cli.Build();

    private static IEnumerable<Command> All(Command c) => c.Subcommands.SelectMany(All).Prepend(c);

    [Fact]
    public void Every_command_has_a_row_in_the_readme_command_table()
    {
        var rows = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "readme", "README.md"))
            .SkipWhile(l => l != "| command | what it does |").Skip(2).TakeWhile(l => l.StartsWith('|')).ToList();
        Assert.NotEmpty(rows);
        foreach (var c in Root.Subcommands)
            Assert.True(rows.Any(r => r.StartsWith($"| `sae {c.Name}", StringComparison.Ordinal)), $"no README row for sae {c.Name}");
    }

    /// <summary>Every <c>--model</c> that names a model to load says <c>builtin</c> works (<c>sae releases --model</c> is a
    /// filter over release names, not a model).</summary>
    [Fact]
    public void Every_model_option_mentions_builtin()
    {
        var options = All(Root).Where(c => c.Name != "releases")
            .SelectMany(c => c.Options.Where(o => o.Name == "--model").Select(o => (c.Name, o.Description ?? ""))).ToList();
        Assert.Contains(options, o => o.Item1 == "features");
        Assert.Contains(options, o => o.Item1 == "inspect");
        foreach (var (command, description) in options) Assert.True(description.Contains("builtin", StringComparison.Ordinal), $"sae {command} --model: {description}");
    }

    /// <summary><c>sae train --arch</c> lists every architecture it trains, the crosscoders included.</summary>
    [Fact]
    public void Train_arch_help_lists_the_crosscoders_too()
    {
        var train = Root.Subcommands.Single(c => c.Name == "train");
        string description = train.Options.Single(o => o.Name == "--arch").Description ?? "";
        foreach (var name in SaeSharp.Training.SaeRecipes.AcceptedNames.Append("crosscoder").Append("batchtopk_crosscoder"))
            Assert.Contains(name, description.Split(['|', ',', ' ', ':', ';']));
    }

    /// <summary><c>sae corpus</c>'s help names fields its lines have (<c>words</c>, not <c>tokens</c>).</summary>
    [Fact]
    public void Corpus_help_names_the_fields_it_writes()
    {
        string path = Path.Combine(Directory.CreateTempSubdirectory("corpus-help-").FullName, "c.jsonl");
        try
        {
            SaeSharp.Corpus.LabelledCorpus.Write(path, seed: 1, documents: 1);
            var fields = System.Text.Json.Nodes.JsonNode.Parse(File.ReadLines(path).First())!.AsObject().Select(f => f.Key).ToList();
            string help = Root.Subcommands.Single(c => c.Name == "corpus").Description!;
            var named = help[(help.IndexOf('(') + 1)..help.IndexOf(')')].Split(", ").Select(f => f.Replace("per-token ", "")).ToList();
            Assert.All(named, f => Assert.Contains(f, fields));
        }
        finally { Directory.Delete(Path.GetDirectoryName(path)!, true); }
    }

    /// <summary>score-labels loads its SAE with the loader every command uses, so its help is the shared one.</summary>
    [Fact]
    public void Score_labels_sae_help_is_the_shared_one()
    {
        var scoreLabels = Root.Subcommands.Single(c => c.Name == "score-labels");
        Assert.Equal(SaeCommands.SaeOption().Description, scoreLabels.Options.Single(o => o.Name == "--sae").Description);
        Assert.Contains("ae.pt", SaeCommands.SaeOption().Description);
    }
}
