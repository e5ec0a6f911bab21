using System.CommandLine;
using SaeSharp.Hub;
using SaeSharp.Interop;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae releases [RELEASE] [--model M] [--search TEXT]</c>: the pretrained SAE releases that <c>--sae RELEASE/SAE_ID</c>
/// accepts, or one release's SAEs (with a transcoder's output hook, hook_out); a release in a format SaeSharp does not load
/// (<see cref="SaeLensConversions.Unsupported"/>, empty since the temporal SAEs load) is listed with its format marked
/// "(not supported)". A Spectre table on a terminal; in a pipe,
/// tab-separated lines with a header (the title on stderr).</summary>
internal static class ReleasesCommand
{
    public static Command Create()
    {
        var release = new Argument<string?>("release") { Description = "List this release's SAEs (ids, hooks, paths, Neuronpedia ids)", Arity = ArgumentArity.ZeroOrOne };
        var model = new Option<string?>("--model") { Description = "Only releases whose model contains this (e.g. gpt2-small, gemma-2-2b)" };
        var search = new Option<string?>("--search") { Description = "Only releases (or, with RELEASE, SAEs) whose name, repo, model, id or hook contains this" };
        var command = new Command("releases", "List the pretrained SAE releases that --sae RELEASE/SAE_ID accepts (SAELens's table)") { release, model, search };
        Cli.SetAction(command, parse =>
        {
            string? name = parse.GetValue(release), text = parse.GetValue(search);
            if (name is not null)
            {
                Cli.RefuseGiven(parse, $"filters the list of releases; with RELEASE ({name}) --search filters its SAEs", model);
                var r = SaeReleases.Find(name) ?? throw new SaeSharpException(
                    $"no release '{name}'{SaeReleases.Suggest(name)}; `sae releases` lists them");
                var saes = r.Saes.Select(s => (Sae: s, Hooks: SaeLensConversions.ReleaseHooks(r, s))).Where(x => text is null
                    || x.Sae.Id.Contains(text, StringComparison.OrdinalIgnoreCase)
                    || (x.Hooks.In ?? "").Contains(text, StringComparison.OrdinalIgnoreCase)
                    || (x.Hooks.Out ?? "").Contains(text, StringComparison.OrdinalIgnoreCase)
                    || (x.Sae.Neuronpedia ?? "").Contains(text, StringComparison.OrdinalIgnoreCase)).ToList();
                string title = $"{r.Release}: {r.RepoId} ({r.Model}, {Format(r)} format"
                               + (r.Conversion == SaeLensConversions.MntssCltLayerTranscoder ? $"; {SaeLensConversions.CltHooksSource})" : ")");
                if (SaeLensConversions.Transcoders.Contains(r.Conversion) || saes.Any(x => x.Hooks.Out is not null))
                    Write(title, ["sae_id", "hook", "hook_out", "path", "neuronpedia", "l0"],
                        saes.Select(x => new[] { x.Sae.Id, x.Hooks.In ?? "-", x.Hooks.Out ?? "-", x.Sae.Path, x.Sae.Neuronpedia ?? "-", L0(x.Sae) }));
                else
                    Write(title, ["sae_id", "hook", "path", "neuronpedia", "l0"],
                        saes.Select(x => new[] { x.Sae.Id, x.Hooks.In ?? "-", x.Sae.Path, x.Sae.Neuronpedia ?? "-", L0(x.Sae) }));
                return 0;
            }
            var rows = SaeReleases.Filter(parse.GetValue(model), text).ToList();
            if (parse.GetValue(model) is { } m && !SaeReleases.Filter(m).Any())
            {
                var models = SaeReleases.All.Select(r => r.Model).Distinct().Order(StringComparer.Ordinal).ToList();
                // The filter matches a part of a name: suggest from the names and their leading parts ("pythia-70m" of
                // "pythia-70m-deduped").
                var parts = models.SelectMany(n => n.Select((c, i) => c == '-' ? n[..i] : null).OfType<string>().Append(n)).Distinct();
                throw new SaeSharpException($"--model {m}: no release is of a model whose name contains it{NameSuggestion.For(m, parts)}; " +
                    $"the table's models: {string.Join(", ", models)}");
            }
            Write($"{rows.Count} releases (from {SaeReleases.Source})",
                ["release", "repo", "model", "format", "saes"],
                rows.Select(r => new[] { r.Release, r.RepoId, r.Model, Format(r), r.Saes.Count.ToString() }));
            return 0;
        });
        return command;
    }

    /// <summary>The release's format: SAELens's <c>conversion_func</c> (saelens for its own), marked when SaeSharp does not
    /// load it (<see cref="SaeLensConversions.Unsupported"/>).</summary>
    private static string Format(SaeRelease r) =>
        r.Conversion is { } c && SaeLensConversions.Unsupported.ContainsKey(c) ? $"{c} (not supported)" : r.Conversion ?? "saelens";

    private static string L0(PretrainedSae s) => s.L0?.ToString("0.#") ?? "-";

    /// <summary>The table: the first two columns and hook_out are names a user copies (release, sae_id / repo, hooks),
    /// never broken across lines on a terminal (a terminal too narrow for the table gets a block per row); in a pipe the
    /// title goes to stderr and stdout is a TSV file.</summary>
    private static void Write(string title, string[] columns, IEnumerable<string[]> rows) =>
        Cli.WriteColumns(title, columns.Select((c, i) => new Column(c, NoWrap: i < 2 || c == "hook_out")).ToList(), rows, titleOnStderr: true,
            recordsWhenNarrow: true);
}
