using System.CommandLine;
using SaeSharp.LanguageModels;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae lm train</c>: trains a small GPT-NeoX-layout language model on a corpus (how the built-in model is made).</summary>
internal static class LmCommand
{
    public static Command Create()
    {
        var lm = new Command("lm", "Language models trained by SaeSharp");
        lm.Subcommands.Add(Train());
        lm.Subcommands.Add(Eval());
        return lm;
    }

    private static Command Eval()
    {
        var model = ModelCommands.ModelOption();
        var corpus = new Option<string>("--corpus") { Description = "Corpus .jsonl (choice_nats gives the entropy floor)", Required = true };
        var docs = new Option<int>("--docs") { Description = "Score only the corpus's last N stories (0: all)", DefaultValueFactory = _ => 0 }.NonNegative();
        var ctx = new Option<int?>("--context-size") { Description = "Window length (default: the model's n_ctx)" }.Positive();
        var command = new Command("eval", "Validation loss of a language model on a corpus, against the corpus's entropy floor") { model, corpus, docs, ctx };
        Cli.SetAction(command, parse =>
        {
            string folder = ModelSource.Resolve(parse.GetValue(model)!);
            using var m = Models.ModelLoader.FromPretrained(folder);
            var tok = Tokenizers.Tokenizer.FromFolder(folder);
            var notes = new List<string>();
            var (loss, floor) = CliProgress.Run("lm eval", progress =>
                LmTrainer.Validate(m, tok, parse.GetValue(corpus)!, parse.GetValue(docs), parse.GetValue(ctx) ?? m.Config.NCtx, progress, notes));
            foreach (var note in notes) Cli.ErrorLine($"note: {note}");
            Console.WriteLine(Summary(new LmTrainingResult(folder, 0, 0, 0, loss, floor, double.NaN, double.NaN)));
            return 0;
        });
        return command;
    }

    private static Command Train()
    {
        var corpus = new Option<string>("--corpus") { Description = "Corpus .jsonl (field text; choice_nats gives the entropy floor), e.g. from `sae corpus`", Required = true };
        var output = new Option<string>("--out") { Description = "Output model folder (Hugging Face GPT-NeoX layout)", Required = true };
        var d = new LmTrainingOptions { CorpusPath = "", OutDir = "" };
        var steps = new Option<long>("--steps") { DefaultValueFactory = _ => d.Steps }.Positive();
        var batch = new Option<int>("--batch-size") { Description = "Windows per step", DefaultValueFactory = _ => d.BatchSize }.Positive();
        var ctx = new Option<int>("--context-size") { DefaultValueFactory = _ => d.ContextSize }.Positive();
        var lr = new Option<double>("--lr") { Description = "Peak AdamW learning rate (warm-up, then cosine to 10%)", DefaultValueFactory = _ => d.Lr }.Positive();
        var decay = new Option<double>("--weight-decay") { Description = "AdamW's decoupled weight decay on the matrices (not biases, norms or the embedding)", DefaultValueFactory = _ => d.WeightDecay }.NonNegative();
        var warm = new Option<long>("--warm-up-steps") { DefaultValueFactory = _ => d.WarmUpSteps }.NonNegative();
        var dModel = new Option<int>("--d-model") { DefaultValueFactory = _ => d.DModel }.Positive();
        var layers = new Option<int>("--n-layers") { DefaultValueFactory = _ => d.NLayers }.Positive();
        var heads = new Option<int>("--n-heads") { DefaultValueFactory = _ => d.NHeads }.Positive();
        var dMlp = new Option<int>("--d-mlp") { DefaultValueFactory = _ => d.DMlp }.Positive();
        var val = new Option<int>("--val-docs") { Description = "Stories held out (the corpus's last) for the validation loss", DefaultValueFactory = _ => d.ValidationDocuments }.NonNegative();
        var valCorpus = new Option<string?>("--val-corpus") { Description = "Separate validation corpus .jsonl (then nothing is held out)" };
        var valSeed = new Option<ulong?>("--val-seed") { Description = "Validate on --val-docs stories generated from this seed (then nothing is held out)" };
        var ckpt = new Option<long>("--checkpoint-every") { Description = "Save the model folder every N steps", DefaultValueFactory = _ => d.CheckpointEverySteps }.NonNegative();
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 0UL };
        var force = new Option<bool>("--force") { Description = "Replace a model already in --out; without it such a folder is an error" };
        var resume = new Option<bool>("--resume") { Description = "Continue the run stopped in --out (OUT/checkpoints) with the same flags: the weights of an uninterrupted run" };
        var command = new Command("train", "Train a small GPT-NeoX-layout causal LM (AdamW, cosine schedule) on a .jsonl corpus")
            { corpus, output, steps, batch, ctx, lr, decay, warm, dModel, layers, heads, dMlp, val, valCorpus, valSeed, ckpt, seed, force, resume };
        Cli.SetAction(command, parse =>
        {
            if (parse.GetValue(valSeed) is not null)
                Cli.RefuseGiven(parse, "--val-seed validates on generated stories; give one of --val-seed and --val-corpus", valCorpus);
            else if (parse.GetValue(valCorpus) is not null)
                Cli.RefuseGiven(parse, "the stories held out (or, with --val-seed, generated); --val-corpus validates on the whole of that corpus", val);
            var o = new LmTrainingOptions
            {
                CorpusPath = parse.GetValue(corpus)!, OutDir = parse.GetValue(output)!, Steps = parse.GetValue(steps), BatchSize = parse.GetValue(batch),
                ContextSize = parse.GetValue(ctx), Lr = parse.GetValue(lr), WeightDecay = parse.GetValue(decay), WarmUpSteps = parse.GetValue(warm), DModel = parse.GetValue(dModel),
                NLayers = parse.GetValue(layers), NHeads = parse.GetValue(heads), DMlp = parse.GetValue(dMlp),
                ValidationDocuments = parse.GetValue(val), ValidationCorpusPath = parse.GetValue(valCorpus), ValidationSeed = parse.GetValue(valSeed), CheckpointEverySteps = parse.GetValue(ckpt), Seed = parse.GetValue(seed),
                Overwrite = parse.GetValue(force), Resume = parse.GetValue(resume),
            };
            var (r, stopExitCode) = TrainWithProgress(o);
            if (r.StoppedCheckpoint is { } checkpoint)
            {
                Console.WriteLine(StoppedLine(r, checkpoint, Environment.GetCommandLineArgs().Skip(1), Cli.Launcher));
                return stopExitCode;
            }
            Console.WriteLine($"wrote {r.OutDir} ({r.Steps} steps, {Cli.Integer(r.TrainTokens)} tokens, {r.Seconds:F0} s)");
            Console.WriteLine(Summary(r));
            return 0;
        });
        return command;
    }

    internal static string Summary(LmTrainingResult r) =>
        $"validation loss {r.ValidationLoss:F4} nats/token" +
        (r.EntropyFloor is double f ? $" (entropy floor {f:F4}; gap {r.ValidationLoss - f:F4})" : "");

    /// <summary>"stopped at step N; wrote WEIGHTS and the checkpoint DIR ...", then on a line of its own "continue with:
    /// ./sae lm train ... --resume" (<paramref name="launcher"/>, then the command line <paramref name="args"/> without
    /// --force, with --resume).</summary>
    internal static string StoppedLine(LmTrainingResult r, string checkpoint, IEnumerable<string> args, string launcher = "sae")
    {
        static string Quoted(string a) => a.Length > 0 && a.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@".Contains(c)) ? a : "'" + a.Replace("'", "'\\''") + "'";
        var again = args.Where(a => a != "--force").Select(Quoted).ToList();
        if (!again.Contains("--resume")) again.Add("--resume");
        return $"stopped at step {r.Steps}; wrote {Path.Combine(r.OutDir, "model.safetensors")} and the checkpoint {checkpoint} " +
               $"(no training.json: the run did not end)\ncontinue with: {Quoted(launcher)} {string.Join(' ', again)}";
    }

    /// <summary>Runs <see cref="LmTrainer.Train"/> with the progress bar and the <see cref="StopSignals"/> of <c>sae train</c>:
    /// Ctrl-C or SIGTERM stops after the current step with a checkpoint, and <c>StopExitCode</c> is then the exit code.</summary>
    internal static (LmTrainingResult Result, int StopExitCode) TrainWithProgress(LmTrainingOptions o)
    {
        static string Line(LmProgress p) =>
            $"step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} lr {p.Lr:G3} {p.TokensPerSecond:N0} tok/s" + (p.Eta is TimeSpan t ? $" ETA {t:hh\\:mm\\:ss}" : "");
        using var stop = new StopSignals();
        var result = CliProgress.Run<LmProgress, LmTrainingResult>("training", o.Steps, progress => LmTrainer.Train(o, progress, stop.Token),
            p => (p.Step, p.TotalSteps, Line(p)), p => p.Step % 100 == 0 || p.Step == p.TotalSteps ? Line(p) : null);
        return (result, stop.ExitCode);
    }
}
