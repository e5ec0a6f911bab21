using System.CommandLine;
using System.Text.Json;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae model run|generate|tokenize|info</c>: the hooked language models on their own.</summary>
internal static class ModelCommands
{
    public static Option<string> ModelOption(bool required = true) => new("--model")
    {
        Description = "builtin (the model SaeSharp ships), a Hugging Face model id (downloaded to the hub cache) or a local model folder",
        Required = required,
    };

    public static Command Create()
    {
        var command = new Command("model", "Run, inspect and sample from a hooked transformer language model");
        command.Subcommands.Add(Run());
        command.Subcommands.Add(Generate());
        command.Subcommands.Add(Tokenize());
        command.Subcommands.Add(Info());
        return command;
    }

    private static Command Run()
    {
        var model = ModelOption();
        var input = new Option<string?>("--input") { Description = "safetensors file holding an int64 tensor 'tokens' [batch, seq]" };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text instead of --input: run on its tokens [1, seq] (BOS first when the tokenizer has one, as TransformerLens's run_with_cache(text)); they are saved as 'tokens'" };
        var noBos = InterventionCommands.NoBosOption();
        var output = new Option<string>("--out") { Description = "Output safetensors: 'logits' and each requested hook", Required = true };
        var hooks = new Option<string?>("--hooks") { Description = "'all' or a comma-separated list of hook names" };
        var dtype = ModelSource.DtypeOption();
        var diffModel = new Option<string?>("--diff-model") { Description = "A model-diffing crosscoder (--sae): the second (chat) model, run clean on the same tokens to encode (same tokenizer)" };
        var slot = new Option<int?>("--slot") { Description = "A crosscoder (--sae): the slot whose model is run, spliced at every hook of its slots (default: the last slot)" };
        var generate = new Option<int>("--generate")
        {
            Description = "With --sae (SAEs or a crosscoder): also continue the prompt greedily up to this many tokens (stopping at EOS), clean and with the splice and edits, side by side (KV-cached)",
        }.NonNegative();
        var command = new Command("run", "Run the model on token ids (or a --prompt) and save logits and hook activations, with SAEs (or a crosscoder) spliced and interventions applied")
        {
            model, input, prompt, noBos, output, hooks, dtype, diffModel, slot, generate,
        };
        var edits = new InterventionCommands.RunEdits();
        edits.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            edits.RefuseUnqualified(parse);
            using var scope = NewDisposeScope();   // the cache, logits and SAE hooks' tensors (Conventions: no temporary outside a scope)
            var text = parse.GetValue(prompt);
            if (text is not null) Cli.RefuseGiven(parse, "the tokens come from --prompt; give one of --prompt and --input", input);
            else if (parse.GetValue(input) is null) throw new SaeSharpException("give --input (a safetensors file of token ids) or --prompt (text)");
            else Cli.RefuseGiven(parse, "for a --prompt's tokens; --input's token ids are used as they are", noBos);
            using var tokens = text is null ? InterventionCommands.ReadTokens(parse.GetValue(input)!)
                : InterventionCommands.PromptTokens(Tokenizer.FromFolder(ModelSource.Resolve(parse.GetValue(model)!)), text, !parse.GetValue(noBos));
            var hookArg = parse.GetValue(hooks);
            if (parse.GetValue(edits.Sae)?.FirstOrDefault(SaeSharp.Interop.CrossCoderFormat.IsCrossCoderPath) is string ccPath)
                return CrossCoderCli.ModelRun(parse, edits, ccPath, ModelSource.Resolve(parse.GetValue(model)!),
                    parse.GetValue(diffModel) is { } dm ? ModelSource.Resolve(dm) : null, parse.GetValue(slot), parse.GetValue(dtype)!,
                    tokens, text is not null, hookArg, parse.GetValue(output)!, parse.GetValue(generate));
            Cli.RefuseGiven(parse, "for a crosscoder (--sae CROSSCODER)", diffModel, slot);
            int newTokens = parse.GetValue(generate);
            ITextTokenizer? generationTokenizer = null;
            if (newTokens > 0)
            {
                if ((parse.GetValue(edits.Sae)?.Length ?? 0) == 0)
                    throw new SaeSharpException("--generate continues the prompt clean and with --sae spliced, side by side: give --sae (a plain continuation: sae model generate)");
                if (tokens.shape[0] != 1)
                    throw new SaeSharpException($"--generate continues one prompt, but the input 'tokens' has {tokens.shape[0]} rows");
                // Before anything is written: the continuations are shown as text.
                generationTokenizer = Tokenizer.FromFolder(ModelSource.Resolve(parse.GetValue(model)!));
            }
            var saes = new List<SaeSharp.Saes.Sae>();
            try
            {
                var paths = parse.GetValue(edits.Sae) ?? [];
                foreach (var p in paths) saes.Add(InterventionCommands.LoadSae(p));
                // With --sae, the model as the SAEs' cfgs record it (weight processing, and dtype unless --dtype is given), as sae eval --model runs it.
                var folder = ModelSource.Resolve(parse.GetValue(model)!);
                using var pm = ModelForSae.Load(folder, ModelForSae.SharedOptions(saes.Select(s => s.Cfg)),
                    saes.Count == 0 || parse.GetResult(dtype) is { Implicit: false } ? ModelLoader.ParseDtype(parse.GetValue(dtype)!, folder)
                        : ModelForSae.SharedDtype(saes, paths));
                var m = pm.Model;
                IReadOnlyList<string> names;
                Tensor? logits;
                SaeSharp.Hooks.ActivationCache cache;
                string[][]? continuations = null;
                var notes = new List<string>();
                string? spliced = null;
                if (edits.Given(parse))
                {
                    var (hooked, list) = edits.Build(parse, m, tokens, saes, pm.Hooks, newTokens);
                    names = hookArg is null ? [] : hooked.SelectHooks(hookArg);
                    // The saved run covers the prompt only: steering at positions of new tokens steers the continuation alone.
                    (logits, cache) = hooked.RunWithCache(tokens, names, PromptEdits(list, tokens.shape[1]));
                    // The continuations before the file is written, so that a failing generation (beyond the context length) writes nothing.
                    if (newTokens > 0)
                        try { (continuations, spliced) = Continuations(hooked, list, parse.GetValue(edits.ErrorTerm), generationTokenizer!, tokens, newTokens, notes); }
                        catch { cache.Dispose(); logits?.Dispose(); throw; }
                }
                else
                {
                    names = hookArg is null ? [] : m.HookPoints.Select(hookArg);
                    (logits, cache) = m.RunWithCache(tokens, names);
                }
                if (spliced is not null) Console.WriteLine($"{spliced} of {ModelLoader.NameOf(folder)}");
                using (cache) SaveRun(parse.GetValue(output)!, logits!, text is null ? null : tokens, names, cache);
                logits!.Dispose();
                if (continuations is not null)
                {
                    Cli.WriteColumns($"greedy continuation (up to {newTokens} tokens, to EOS) of {ModelLoader.NameOf(folder)}", ["run", "continuation"], continuations);
                }
                foreach (var note in notes) Cli.ErrorLine($"note: {note}");
            }
            finally
            {
                foreach (var s in saes) s.Dispose();
            }
            return 0;
        });
        return command;
    }

    /// <summary><paramref name="edits"/> for a run of the prompt alone (<paramref name="promptLength"/> tokens): steering at
    /// positions keeps those inside the prompt, and steering only at new tokens' positions is left out.</summary>
    private static List<SaeSharp.Interventions.Intervention> PromptEdits(List<SaeSharp.Interventions.Intervention> edits, long promptLength) =>
        edits.Select(e => e is SaeSharp.Interventions.Steering { Positions: { } at } st && at.Any(q => q >= promptLength)
                ? at.Any(q => q < promptLength)
                    ? new SaeSharp.Interventions.Steering(st.Sae, st.Feature, st.Scale, st.Hook) { Positions = at.Where(q => q < promptLength).ToArray() }
                    : null
                : e).OfType<SaeSharp.Interventions.Intervention>().ToList();

    /// <summary><c>sae model run --sae SAE --generate N</c>: the greedy continuations (to EOS) of the prompt, clean (the model
    /// with its processing hooks) and with the SAEs of <paramref name="hooked"/> spliced and <paramref name="edits"/> applied
    /// (KV-cached: <see cref="SaeSharp.Interventions.HookedSaeTransformer.Generate"/>), as rows of run and text; and the line
    /// saying what is spliced.</summary>
    private static (string[][] Rows, string Spliced) Continuations(SaeSharp.Interventions.HookedSaeTransformer hooked,
        List<SaeSharp.Interventions.Intervention> edits, bool errorTerm, ITextTokenizer tok, Tensor tokens, int newTokens, List<string> notes)
    {
        var options = new GenerationOptions { EosTokenId = tok.EosTokenId };
        using var plain = hooked.Model.Generate(tokens, newTokens, options with { Hooks = hooked.ModelHooks });
        using var edited = hooked.Generate(tokens, newTokens, options, edits);
        long n = tokens.shape[1];
        string Continuation(Tensor t) => DecodeShowingUnknownIds(tok, t[0].narrow(0, n, t.shape[1] - n).data<long>().Select(v => (int)v).ToList());
        string label = edits.Count > 0 ? "edited" : "spliced";
        var positions = edits.OfType<SaeSharp.Interventions.Steering>().SelectMany(st => st.Positions ?? []).Distinct().ToList();
        if (InterventionCommands.GenerationNote(plain, 0, null) is string cleanNote) notes.Add($"clean: {cleanNote}");
        if (InterventionCommands.GenerationNote(edited, 0, positions.Count == 0 ? null : positions) is string note) notes.Add($"{label}: {note}");
        string sites = hooked.Saes.Count == 0 ? "no SAE spliced (steering adds to the raw activation)"
            : (hooked.Saes.Count == 1 ? "SAE spliced at " : "SAEs spliced at ") + string.Join(", ", hooked.Saes.Select(a => a.IsTranscoder ? $"{a.Hook} → {a.WriteHook}" : a.Hook));
        return ([["clean", Continuation(plain.Tokens)], [label, Continuation(edited.Tokens)]],
            $"{sites}{(errorTerm && hooked.Saes.Count > 0 ? " (error term kept)" : "")}");
    }

    /// <summary><c>sae model run</c>'s output file: 'logits', 'tokens' (of a --prompt) and each hook of <paramref name="names"/>.</summary>
    internal static void SaveRun(string path, Tensor logits, Tensor? tokens, IReadOnlyList<string> names, SaeSharp.Hooks.ActivationCache? cache)
    {
        var outputs = new List<KeyValuePair<string, Tensor>> { new("logits", logits) };
        if (tokens is not null) outputs.Add(new("tokens", tokens));
        foreach (var n in names) outputs.Add(new(n, cache![n]));
        SafeTensors.Save(path, outputs);
        Console.WriteLine($"wrote {path}: logits [{string.Join(", ", logits.shape)}]" +
            (tokens is null ? "" : $", tokens [{string.Join(", ", tokens.shape)}]") +
            (names.Count == 0 ? "" : $" and {names.Count} hook tensor{(names.Count == 1 ? "" : "s")}"));
    }

    /// <summary>The text of <paramref name="ids"/>, an id beyond the tokenizer's vocabulary written <c>&lt;id N&gt;</c> (a model's
    /// embedding is often padded past its tokenizer's vocabulary, and an untrained model can sample those rows).</summary>
    internal static string DecodeShowingUnknownIds(ITextTokenizer tok, IReadOnlyList<int> ids)
    {
        var text = new System.Text.StringBuilder();
        var run = new List<int>();
        foreach (int id in ids)
        {
            if (id >= 0 && id < tok.VocabSize) { run.Add(id); continue; }
            text.Append(tok.Decode(run)).Append($"<id {id}>");
            run.Clear();
        }
        return text.Append(tok.Decode(run)).ToString();
    }

    private static Command Generate()
    {
        var model = ModelOption();
        var prompt = new Option<string>("--prompt") { Description = "Prompt text", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 32 }.NonNegative();
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
        var topK = new Option<int?>("--top-k") { Description = "Sample from the k most likely tokens" }.Positive();
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling mass" };
        var seed = new Option<ulong?>("--seed") { Description = "Sampling seed" };
        var dtype = ModelSource.DtypeOption();
        var sae = new Option<string[]>("--sae") { Description = "Not here: continuations with SAEs spliced (and --clamp, --ablate, --steer) are sae model run --sae SAE --prompt TEXT --generate N" };
        var command = new Command("generate", "Continue a prompt (greedy or sampled, with a KV cache); with SAEs spliced: sae model run --sae SAE --generate N")
        {
            model, prompt, maxNew, temperature, topK, topP, seed, dtype, sae,
        };
        Cli.SetAction(command, parse =>
        {
            Cli.RefuseGiven(parse, "sae model generate runs the model alone; to continue a prompt clean and with SAEs spliced (--error-term, --clamp, " +
                "--ablate, --steer, --positions), side by side: sae model run --model M --sae SAE --prompt TEXT --generate N --out run.safetensors", sae);
            if (parse.GetValue(temperature) == 0)
                Cli.RefuseGiven(parse, "sampling options; --temperature 0 (the default) is greedy decoding, which they do not change (give --temperature > 0 to sample)",
                    topK, topP, seed);
            var folder = ModelSource.Resolve(parse.GetValue(model)!);
            using var m = ModelLoader.FromPretrained(folder, ModelLoader.ParseDtype(parse.GetValue(dtype)!, folder));
            var tok = Tokenizer.FromFolder(folder);
            var text = parse.GetValue(prompt)!;
            var ids = tok.EncodeWithSpecialTokens(text);
            int newTokens = parse.GetValue(maxNew), promptTokens = ids.Length;
            if (promptTokens + newTokens > m.Config.NCtx)
                throw new SaeSharpException($"--max-new-tokens {newTokens}: the prompt's {promptTokens} tokens and {newTokens} new ones exceed " +
                                            $"the context of {m.Config.NCtx} tokens of {m.Config.ModelName}; ask for at most {Math.Max(0, m.Config.NCtx - promptTokens)}");
            using var scope = NewDisposeScope();
            using var tokens = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
            using var result = m.Generate(tokens, newTokens, new GenerationOptions
            {
                Temperature = parse.GetValue(temperature),
                TopK = parse.GetValue(topK),
                TopP = parse.GetValue(topP),
                Seed = parse.GetValue(seed),
                EosTokenId = tok.EosTokenId,
            });
            var all = result.Tokens[0].data<long>().Select(v => (int)v).ToArray();
            Console.WriteLine(DecodeShowingUnknownIds(tok, all));
            if (InterventionCommands.GenerationNote(result, 0, null) is string note) Cli.ErrorLine($"note: {note}");
            return 0;
        });
        return command;
    }

    private static Command Tokenize()
    {
        var model = ModelOption();
        var text = new Option<string?>("--text") { Description = "Text to tokenize (or ids as a JSON array with --decode)" };
        var file = new Option<string?>("--file") { Description = "Read the text from a file" };
        var decode = new Option<bool>("--decode") { Description = "Decode a JSON array of ids to text" };
        var raw = new Option<bool>("--no-special-tokens") { Description = "Leave out the BOS/EOS the tokenizer adds (Hugging Face add_special_tokens=False)" };
        var command = new Command("tokenize", "Print token ids as a JSON array, as Hugging Face tokenizer(text) gives them (with the BOS a Llama-style tokenizer adds), or decode ids with --decode")
            { model, text, file, decode, raw };
        Cli.SetAction(command, parse =>
        {
            if (parse.GetValue(text) is not null) Cli.RefuseGiven(parse, "the text comes from --text; give one of --text and --file", file);
            if (parse.GetValue(decode)) Cli.RefuseGiven(parse, "for encoding text; --decode turns ids into text", raw);
            var tok = Tokenizer.FromFolder(ModelSource.Resolve(parse.GetValue(model)!));
            var input = parse.GetValue(text) ?? (parse.GetValue(file) is string f ? File.ReadAllText(f)
                : throw new SaeSharpException("give --text or --file"));
            if (parse.GetValue(decode))
            {
                int[] ids;
                try { ids = JsonSerializer.Deserialize<int[]>(input) ?? []; }
                catch (JsonException) { throw new SaeSharpException("--decode expects a JSON array of token ids, e.g. [464, 3290]"); }
                foreach (int id in ids)
                    if (tok.IdToToken(id) is null)
                        throw new SaeSharpException($"--decode: id {id} is not in the vocabulary (vocabulary size {tok.VocabSize}: ids 0..{tok.VocabSize - 1})");
                Console.WriteLine(tok.Decode(ids));
            }
            else Console.WriteLine(JsonSerializer.Serialize(parse.GetValue(raw) ? tok.Encode(input) : tok.EncodeWithSpecialTokens(input)));
            return 0;
        });
        return command;
    }

    private static Command Info()
    {
        var model = ModelOption();
        var dtype = ModelSource.DtypeOption();
        var command = new Command("info", "Print a model's architecture, sizes and hook points") { model, dtype };
        Cli.SetAction(command, parse =>
        {
            using var m = ModelSource.LoadModel(parse.GetValue(model)!, parse.GetValue(dtype)!);
            Cli.WriteIndented(Spectre.Console.Markup.Escape(m.Config.ToString()), 0); // wrapped at spaces on a terminal
            Console.WriteLine($"parameters: {Cli.Integer(m.parameters().Sum(p => p.numel()))}");
            Console.WriteLine("hook points:");
            foreach (var h in HookListing(m.HookNames)) Console.WriteLine($"  {h}");
            return 0;
        });
        return command;
    }

    /// <summary>The hook names, each expert hook of an MoE block once for all experts (<c>blocks.3.mlp.experts.{0..127}.hook_post</c>,
    /// where the model has one line per expert: 18k lines for a 48-layer, 128-expert model).</summary>
    internal static IEnumerable<string> HookListing(IEnumerable<string> names)
    {
        var list = names.ToList();
        var experts = new Dictionary<(string Block, string Hook), int>();
        foreach (var n in list)
            if (ExpertHook.Match(n) is { Success: true } e)
                experts[(e.Groups[1].Value, e.Groups[3].Value)] = Math.Max(experts.GetValueOrDefault((e.Groups[1].Value, e.Groups[3].Value)), int.Parse(e.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
        foreach (var n in list)
        {
            if (ExpertHook.Match(n) is not { Success: true } e) yield return n;
            else if (e.Groups[2].Value == "0")
            {
                int last = experts[(e.Groups[1].Value, e.Groups[3].Value)];
                yield return $"{e.Groups[1].Value}.mlp.experts.{(last == 0 ? "0" : $"{{0..{last}}}")}.{e.Groups[3].Value}";
            }
        }
    }

    private static readonly System.Text.RegularExpressions.Regex ExpertHook = new(@"^(blocks\.\d+)\.mlp\.experts\.(\d+)\.(hook_\w+)$");
}
