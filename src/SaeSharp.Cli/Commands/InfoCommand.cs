using System.CommandLine;
using SaeSharp.Hub;
using System.Globalization;
using SaeSharp.Data;
using SaeSharp.Interop;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae info DIR</c>: an SAE's architecture, sizes, hook and provenance.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var path = new Argument<string?>("sae") { Description = "SAE folder or file (SAELens, dictionary_learning, Gemma Scope, Llama Scope, sparsify, OpenAI), RELEASE/SAE_ID (sae releases) or hf:ORG/REPO[/PATH]", Arity = ArgumentArity.ZeroOrOne };
        // The other commands take their SAE as --sae: sae info accepts that form too.
        var saeOption = new Option<string?>("--sae") { Description = "The SAE, as the argument (the form the other commands take)" };
        var arch = SaeCommands.ArchOption();
        var command = new Command("info", "Print an SAE's architecture, sizes, hook and provenance") { path, saeOption, arch };
        command.Validators.Add(result =>
        {
            bool arg = result.GetValue(path) is not null, opt = result.GetValue(saeOption) is not null;
            if (arg == opt) result.AddError(arg ? "give the SAE once: as the argument or as --sae, not both" : "no SAE given: sae info <sae> (or --sae <sae>)");
        });
        Cli.SetAction(command, parse =>
        {
            var p = (parse.GetValue(path) ?? parse.GetValue(saeOption))!;
            if (CrossCoderFormat.IsCrossCoderPath(p)) return CrossCoderCli.Info(p, p);
            var resolved = SaeSource.Resolve(p);
            var format = SaeLoader.DetectFormat(resolved);
            using var sae = SaeLoader.Load(resolved, SaeCommands.LoadOptions(parse, arch));
            var cfg = sae.Cfg;
            Cli.WriteTable(p, new (string, string)[]
            {
                ("format", format ?? "?"),
                ("files", resolved.Path),
                ("architecture", SaeLensFormat.SaeLensArchitecture(cfg) is var saeLens && saeLens != cfg.Architecture ? $"{cfg.Architecture} (SAELens: {saeLens})" : cfg.Architecture),
                ("d_in", cfg.DIn.ToString()),
                ("d_sae", cfg.DSae.ToString()),
                ("d_out", cfg.DOutOrIn.ToString()),
                ("k", cfg.K?.ToString() ?? "-"),
                ("apply_b_dec_to_input", cfg.ApplyBDecToInput.ToString().ToLowerInvariant()),
                ("normalize_activations", cfg.NormalizeActivations),
                ("dtype", cfg.Dtype),
                ("model_name", cfg.Metadata.ModelName ?? "-"),
                ("hook_name", cfg.Metadata.HookName ?? "-"),
                ("hook_name_out", cfg.Metadata.Extra?.GetValueOrDefault("hook_name_out") is { ValueKind: System.Text.Json.JsonValueKind.String } hookOut ? hookOut.GetString()! : "-"),
                ("hook_head_index", cfg.Metadata.HookHeadIndex?.ToString(CultureInfo.InvariantCulture) ?? "-"),
                ("context_size", cfg.Metadata.ContextSize?.ToString() ?? "-"),
                ("prepend_bos", cfg.Metadata.PrependBos ? "true" : "false"),
                ("seqpos_slice", cfg.Metadata.SeqposSlice() is { IsAll: false } slice ? slice.ToString() : "-"),
                ("exclude_special_tokens", cfg.Metadata.ExcludeTokenIds is { } ids ? $"[{string.Join(", ", ids)}]"
                    : cfg.Metadata.ExcludeSpecialTokens is { } excluded ? (excluded ? "true" : "false") : "-"),
                ("disable_concat_sequences", cfg.Metadata.DisableConcatSequences() is { } disable ? (disable ? "true" : "false") : "-"),
                ("sequence_separator_token", cfg.Metadata.SequenceSeparatorToken() is { } separator
                    ? (separator == Data.PretokenizeToken.None ? "none" : separator.ToString()) : "-"),
                ("dataset_path", cfg.Metadata.DatasetPath ?? "-"),
                ("neuronpedia_id", cfg.Metadata.Extra?.GetValueOrDefault("neuronpedia_id").ToString() is { Length: > 0 } np ? np : "-"),
                ("parameters", Cli.Integer(sae.parameters().Sum(t => t.numel()))),
                ("log_feature_sparsity", LogSparsitySummary(sae.LogFeatureSparsity)),
            }.Concat(sae.ArchitectureFields).Concat(cfg.Metadata.Extra?.GetValueOrDefault(SaeLensConversions.NoteKey) is { ValueKind: System.Text.Json.JsonValueKind.String } note
                ? [("note", note.GetString()!)] : Array.Empty<(string, string)>()).ToArray());
            PrintTrainedMetrics(Directory.Exists(resolved.Path) ? resolved.Path : Path.GetDirectoryName(Path.GetFullPath(resolved.Path))!);
            return 0;
        });
        return command;
    }

    /// <summary>The SAE's log10 feature sparsity (SAELens's <c>sparsity.safetensors</c>) in a few words: its min and median
    /// over the finite values, and how many are not finite (log10 of 0); that the folder has none.</summary>
    private static string LogSparsitySummary(IReadOnlyList<float>? log)
    {
        if (log is null) return $"none (no {SaeLensFormat.SparsityFile})";
        var finite = log.Where(float.IsFinite).Select(v => (double)v).ToList();
        string G(double v) => v.ToString("G4", CultureInfo.InvariantCulture);
        string summary = finite.Count == 0 ? "no finite value" : $"min {G(finite.Min())}, median {G(Evaluation.CrossCoderLatentScaling.Median(finite))}";
        int other = log.Count - finite.Count;
        return $"{summary}{(other > 0 ? $", {other} not finite" : "")} ({SaeLensFormat.SparsityFile})";
    }

    /// <summary>A run <c>sae train</c> wrote: its held-out metrics (<c>metrics.json</c>) under the names of README's metrics
    /// table (FVU, MSE, L0, dead share, and from a model % CE loss recovered and KL); nothing when the folder has none.</summary>
    private static void PrintTrainedMetrics(string dir)
    {
        string path = Path.Combine(dir, Pipelines.TrainingRun.MetricsFile);
        if (!File.Exists(path)) return;
        System.Text.Json.Nodes.JsonObject json;
        try
        {
            json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path)) as System.Text.Json.Nodes.JsonObject
                   ?? throw new System.Text.Json.JsonException("not an object");
        }
        catch (System.Text.Json.JsonException e)
        {
            Cli.ErrorLine($"warning: {path}: not readable as sae train's metrics ({e.Message}); its metrics are not shown");
            return;
        }
        double? Number(string key) => json[key] switch
        {
            System.Text.Json.Nodes.JsonValue v when v.TryGetValue(out double d) => d,
            System.Text.Json.Nodes.JsonValue v when v.TryGetValue(out string? text) && double.TryParse(text, CultureInfo.InvariantCulture, out double d) => d, // "NaN"
            _ => null,
        };
        var rows = new List<(string, string)>();
        void Add(string name, string key, Func<double, string> format)
        {
            if (Number(key) is double v) rows.Add((name, format(v)));
        }
        Add("FVU", "fvu", v => v.ToString("G4", CultureInfo.InvariantCulture));
        Add("MSE", "mse", v => v.ToString("G4", CultureInfo.InvariantCulture));
        Add("L0", "l0", v => v.ToString("F2", CultureInfo.InvariantCulture));
        Add("dead share", "dead_fraction", v => Cli.Percent("dead share", v, 1));
        Add("% CE loss recovered", "ce_loss_score", v => Cli.Percent("% CE loss recovered", v, 2));
        Add("KL", "kl_div_with_sae", v => v.ToString("G4", CultureInfo.InvariantCulture));
        if (json["no_rows"] is System.Text.Json.Nodes.JsonValue noRows && noRows.TryGetValue(out string? why)) rows.Add(("no rows", why));
        if (rows.Count == 0) return;
        string over = Number("n_rows") is double n ? $" on {Cli.Integer((long)n)} held-out rows" : " on the held-out rows";
        Cli.WriteTable($"metrics.json{over}", rows);
    }
}
