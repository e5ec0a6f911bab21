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
            }.Concat(sae.ArchitectureFields).Concat(cfg.Metadata.Extra?.GetValueOrDefault(SaeLensConversions.NoteKey) is { ValueKind: System.Text.Json.JsonValueKind.String } note
                ? [("note", note.GetString()!)] : Array.Empty<(string, string)>()).ToArray());
            return 0;
        });
        return command;
    }
}
