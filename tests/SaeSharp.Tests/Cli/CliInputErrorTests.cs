using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.LanguageModels;
using SaeSharp.Tests.Analysis;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// Bad input on the command line is one line on stderr naming the flag and the value (exit code 1), found before the
/// model runs: an SAE that does not fit a hook, a hook <c>sae eval</c> does not evaluate at, counts that are not
/// positive, token strings outside the vocabulary, ids and positions out of range.
/// </summary>
public class CliInputErrorTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    private string P(string name) => Path.Combine(_fx.Dir, name);

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");

    /// <summary>Exit code 1 and one line "error: ..." (no libtorch frames, no .NET stack), returned.</summary>
    private static string OneLineError((int Exit, string Out, string Err) r)
    {
        Assert.True(r.Exit == 1, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");
        string err = r.Err.Trim();
        Assert.StartsWith("error: ", err);
        Assert.DoesNotContain('\n', err);
        Assert.DoesNotContain("frame #", err);
        return err;
    }

    /// <summary>The fixture's SAE (d_in 16, trained at hook_embed) with its cfg hook_name changed to <paramref name="hook"/>.</summary>
    private string SaeClaimingHook(string name, string? hook)
    {
        using var sae = SaeLoader.Load(_fx.SaeDir);
        sae.Cfg.Metadata.HookName = hook;
        SaeLensFormat.Save(sae, P(name));
        return P(name);
    }

    [Fact]
    public void EvalRefusesTheFlagsOfTheOtherEvaluation()
    {
        // With --model the rows come from --dataset: --activations, --max-rows and --ground-truth would be ignored.
        string inModel = OneLineError(CliRunner.Run("eval", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath,
            "--activations", P("rows.safetensors"), "--max-rows", "10"));
        Assert.Contains("--activations, --max-rows: evaluation on activation files", inModel);
        // On activation files --tokens and --context-size would be ignored (--max-rows limits the rows).
        string onFiles = OneLineError(CliRunner.Run("eval", "--sae", _fx.SaeDir, "--activations", P("rows.safetensors"), "--tokens", "100",
            "--context-size", "8"));
        Assert.Contains("--context-size, --tokens: evaluation inside a model (--model)", onFiles);
        Assert.Contains("--max-rows", onFiles);
        // --device places the model (and in sae train the SAEs being trained): on activation files it would be ignored.
        Assert.Contains("--device: evaluation inside a model (--model)", OneLineError(CliRunner.Run("eval", "--sae", _fx.SaeDir, "--activations",
            P("rows.safetensors"), "--device", "cpu")));
    }

    [Fact]
    public void InterventionCommandsRefuseAnSaeThatDoesNotFitTheHookBeforeRunning()
    {
        // steer at an MLP hook (d_mlp 64) with an SAE of d_in 16 trained at hook_embed: was a libtorch view error and stack.
        string steer = OneLineError(CliRunner.Run("steer", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--feature", "3", "--scale", "5",
            "--prompt", "the cat", "--hook", "blocks.0.mlp.hook_post", "--max-new-tokens", "2", "--runs", "1"));
        Assert.Contains("'blocks.0.mlp.hook_post'", steer);
        Assert.Contains("d_in=16", steer);
        Assert.Contains("64 values per token", steer);
        Assert.Contains("'hook_embed'", steer);
        // ablate says the same through the same check.
        string ablate = OneLineError(CliRunner.Run("ablate", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--features", "3",
            "--prompt", "the cat", "--hook", "blocks.0.mlp.hook_post"));
        Assert.Equal(steer, ablate);

        // An SAE whose cfg names a hook it does not fit: model run (steering the raw activation, and clamping), attribute, inspect.
        string misfit = SaeClaimingHook("misfit", "blocks.0.mlp.hook_post");
        var input = P("in.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tensor(new long[] { 0, 5, 9, 2 }).reshape(1, 4) });
        foreach (var args in new[]
                 {
                     new[] { "model", "run", "--model", _fx.ModelDir, "--input", input, "--out", P("o.safetensors"), "--sae", misfit, "--steer", "1:2" },
                     new[] { "model", "run", "--model", _fx.ModelDir, "--input", input, "--out", P("o.safetensors"), "--sae", misfit, "--clamp", "1:2" },
                     new[] { "attribute", "--model", _fx.ModelDir, "--sae", misfit, "--input", input, "--metric", "loss" },
                     new[] { "inspect", "--model", _fx.ModelDir, "--sae", misfit, "--prompt", "the cat" },
                 })
        {
            string err = OneLineError(CliRunner.Run(args));
            Assert.Contains("SAE at 'blocks.0.mlp.hook_post' has d_in=16 but the hook gives 64 values per token", err);
        }
        Assert.False(File.Exists(P("o.safetensors")));
    }

    /// <summary>A <c>sae cache</c> folder records its hook: an SAE of the same width trained at another hook is refused on
    /// it (naming both hooks, nothing written), the SAE of that hook and one whose cfg names no hook are evaluated.</summary>
    [Fact]
    public void EvalOnACacheOfAnotherHookIsRefusedNamingBothHooks()
    {
        string cache = P("embed-cache");
        var made = CliRunner.Run("cache", "--model", _fx.ModelDir, "--hook", "hook_embed", "--dataset", _fx.DataPath, "--tokens", "64",
            "--context-size", "16", "--out", cache);
        Assert.True(made.Exit == 0, made.Err);
        string resid = SaeClaimingHook("resid", "blocks.0.hook_resid_post");
        string err = OneLineError(CliRunner.Run("eval", "--sae", resid, "--activations", cache, "--json", P("refused.json")));
        Assert.Contains("'hook_embed'", err);
        Assert.Contains("'blocks.0.hook_resid_post'", err);
        Assert.False(File.Exists(P("refused.json")));
        Assert.Equal(0, CliRunner.Run("eval", "--sae", _fx.SaeDir, "--activations", cache).Exit);
        Assert.Equal(0, CliRunner.Run("eval", "--sae", SaeClaimingHook("bare-cache", null), "--activations", cache).Exit);
    }

    /// <summary>A transcoder on a <c>--mode in_to_out</c> cache (input ln2.hook_normalized, targets hook_mlp_out, both
    /// d_model wide) is measured against the targets: the JSON's mse and cosine equal those computed here from the shard's
    /// own activations and targets, and not those against the input (which the width check alone cannot tell apart); on a cache without targets it is an error.</summary>
    [Fact]
    public void A_transcoder_on_an_in_to_out_cache_is_compared_with_the_targets()
    {
        string cache = P("tc-cache"), tc = P("tc"), json = P("tc.json");
        Ok(CliRunner.Run("cache", "--model", _fx.ModelDir, "--hook", "blocks.0.ln2.hook_normalized", "--mode", "in_to_out",
            "--target-hook", "blocks.0.hook_mlp_out", "--dataset", _fx.DataPath, "--tokens", "128", "--context-size", "16", "--out", cache));
        Ok(CliRunner.Run("train", "--activations", cache, "--arch", "skip_transcoder", "--dict-size", "32", "--steps", "5", "--batch-size", "32",
            "--out", tc));
        Ok(CliRunner.Run("eval", "--sae", tc, "--activations", cache, "--json", json));
        var j = JsonNode.Parse(File.ReadAllText(json))!;

        using var scope = NewDisposeScope();
        using var grad = no_grad();
        using var sae = SaeLoader.Load(tc);
        var shards = Directory.GetFiles(cache, "shard_*.safetensors").Order(StringComparer.Ordinal)
            .Select(f => SafeTensors.Load(f, ScalarType.Float64)).ToList();
        var x = cat(shards.Select(s => s["activations"]).ToList(), 0);
        var y = cat(shards.Select(s => s["targets"]).ToList(), 0);
        Assert.Equal(j["n_rows"]!.GetValue<long>(), x.shape[0]);
        var yHat = sae.forward(x.to(ScalarType.Float32)).to(ScalarType.Float64);
        double Mse(Tensor target)
        {
            var d = yHat - target;
            return (d * d).mean().item<double>();
        }
        double Cos(Tensor target) => (yHat * target).sum(1).div(((yHat * yHat).sum(1) * (target * target).sum(1)).sqrt()).mean().item<double>();
        Assert.Equal(Mse(y), j["mse"]!.GetValue<double>(), 4);
        Assert.Equal(Cos(y), j["cosine"]!.GetValue<double>(), 4);
        Assert.True(Math.Abs(Mse(x) - Mse(y)) > 1e-2, $"the test needs the input and the target to differ: mse {Mse(x)} vs {Mse(y)}");
        // A cache without targets has nothing to compare a transcoder with: an error naming the shard and the tensor.
        string plain = P("plain-cache");
        Ok(CliRunner.Run("cache", "--model", _fx.ModelDir, "--hook", "blocks.0.ln2.hook_normalized", "--dataset", _fx.DataPath, "--tokens", "64",
            "--context-size", "16", "--out", plain));
        string err = OneLineError(CliRunner.Run("eval", "--sae", tc, "--activations", plain));
        Assert.Contains("shard_00000.safetensors: no tensor named 'targets'", err);
    }

    [Fact]
    public void EvalInAModelEvaluatesEachSaeAtItsCfgHookAndRefusesAnotherHook()
    {
        string[] Eval(string sae, params string[] extra) =>
            ["eval", "--sae", sae, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--tokens", "64", "--context-size", "16", .. extra];

        string typo = OneLineError(CliRunner.Run(Eval(_fx.SaeDir, "--hook", "blocks.0.hook_mlp_outt")));
        Assert.Contains("unknown hook 'blocks.0.hook_mlp_outt' (did you mean 'blocks.0.hook_mlp_out'?)", typo);
        Assert.Contains("Valid hooks:", typo);
        string other = OneLineError(CliRunner.Run(Eval(_fx.SaeDir, "--hook", "blocks.0.hook_mlp_out")));
        Assert.Contains("'blocks.0.hook_mlp_out'", other);
        Assert.Contains("'hook_embed'", other);
        // The SAE's own hook, here by its module alias, is accepted and evaluated.
        var (exit, output, err) = CliRunner.Run(Eval(_fx.SaeDir, "--hook", "embed", "--json", P("e.json")));
        Assert.True(exit == 0, err);
        Assert.Contains("hook_embed", output);
        Assert.Equal("hook_embed", (string?)System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(P("e.json")))!["hook_name"]);
        // Without a cfg hook_name, --hook says where the SAE reads, with the same width check as everywhere.
        string bare = SaeClaimingHook("bare", null);
        string width = OneLineError(CliRunner.Run(Eval(bare, "--hook", "blocks.0.mlp.hook_post")));
        Assert.Contains("SAE at 'blocks.0.mlp.hook_post' has d_in=16 but the hook gives 64 values per token", width);

        // --mode and --target-hook belong to harvesting (cache, train): eval neither lists nor accepts them.
        var help = CliRunner.Run("eval", "--help");
        Assert.DoesNotContain("--mode ", help.Out);
        Assert.DoesNotContain("--target-hook", help.Out);
        var mode = CliRunner.Run(Eval(_fx.SaeDir, "--mode", "in_to_out"));
        Assert.NotEqual(0, mode.Exit);
        Assert.Contains("--mode: not an option of sae eval", mode.Err);
    }

    [Fact]
    public void CountsThatAreNotPositiveNameTheFlagBeforeTheCommandRuns()
    {
        foreach (var (args, message) in new (string[], string)[]
                 {
                     (["encode", "--sae", _fx.SaeDir, "--activations", P("none.safetensors"), "--out", P("o.safetensors"), "--batch-size", "0"],
                         "--batch-size 0: expected a positive number"),
                     (["eval", "--sae", _fx.SaeDir, "--activations", P("none.safetensors"), "--max-rows", "0"], "--max-rows 0: expected a positive number"),
                     (["eval", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--context-size", "-3"],
                         "--context-size -3: expected a positive number"),
                     (["attribute", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--prompt", "the", "--metric", "loss", "--ig-steps", "-1"],
                         "--ig-steps -1: expected 0 or more"),
                     (["steer", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--feature", "1", "--scale", "1", "--prompt", "the", "--runs", "0"],
                         "--runs 0: expected a positive number"),
                     (["features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", P("f"), "--intervals", "3"],
                         "--intervals 3: expected an even number"),
                 })
        {
            var (exit, _, err) = CliRunner.Run(args);
            Assert.Equal(1, exit);
            Assert.Equal($"error: {message} (sae {args[0]} --help lists the options)", err.Trim());
        }
        // A value that is not a number names the option and what it takes, not the CLR type.
        var notNumber = CliRunner.Run("encode", "--sae", _fx.SaeDir, "--activations", P("none.safetensors"), "--out", P("o.safetensors"), "--batch-size", "abc");
        Assert.Equal(1, notNumber.Exit);
        Assert.Equal("error: --batch-size abc: expected an integer (sae encode --help lists the options)", notNumber.Err.Trim());
    }

    [Fact]
    public void A_command_line_the_parser_refuses_is_one_error_line_with_the_nearest_name_and_no_help_on_stdout()
    {
        // Before, System.CommandLine printed the command's whole help on stdout and its own messages on stderr (CLR type
        // names, a multi-line list of values, no "did you mean").
        foreach (var (args, message) in new (string[], string)[]
                 {
                     (["dashboard", "--features", P("f"), "--out", P("s"), "--featurs", "x"],
                         "--featurs: not an option of sae dashboard (did you mean '--features'?) (sae dashboard --help lists the options)"),
                     (["neuronpedia", "--features", P("f"), "--out", P("n"), "--layer-num", "one"],
                         "--layer-num one: expected an integer (sae neuronpedia --help lists the options)"),
                     (["train", "--activations", P("a"), "--lr", "fast"], "--lr fast: expected a number (sae train --help lists the options)"),
                     (["train", "--activations", P("a"), "--lr", "-inf"], "--lr -inf: expected a finite number (sae train --help lists the options)"),
                     (["cache", "--out", P("c"), "--format", "hdf5"], "--format hdf5: expected saesharp or saelens (sae cache --help lists the options)"),
                     (["convert", _fx.SaeDir, P("dl"), "--to", "dictionary-learning"],
                         "--to dictionary-learning: expected saelens or dictionary_learning (did you mean 'dictionary_learning'?) (sae convert --help lists the options)"),
                     (["convert", _fx.SaeDir, P("sl"), "--to", "SAELens"],
                         "--to SAELens: expected saelens or dictionary_learning (did you mean 'saelens'?) (sae convert --help lists the options)"),
                     (["features", "--sae", _fx.SaeDir],
                         "--out is required (sae features --help lists the options)"),
                     (["cache", "--out"], "--out: give a value after it (sae cache --help lists the options)"),
                     (["cache", "--out", P("c"), "--tokens", "10", "--tokens", "20"], "--tokens given 2 times: give it once (sae cache --help lists the options)"),
                     (["eval", "--sae", _fx.SaeDir, "extra"], "'extra': an argument sae eval does not take (sae eval --help lists the options)"),
                     (["trian"], "'trian': not a command of sae (did you mean 'train'?) (sae --help lists the commands)"),
                     (["model", "rnu"], "'rnu': not a command of sae model (did you mean 'run'?) (sae model --help lists the commands)"),
                 })
        {
            var r = CliRunner.Run(args);
            Assert.Equal($"error: {message}", OneLineError(r));
            Assert.Equal("", r.Out);
        }
        // A command group given no command still shows its help.
        var group = CliRunner.Run("model");
        Assert.Contains("Usage:", group.Out);
    }

    [Fact]
    public void Encode_refuses_an_output_that_would_replace_its_activations_or_its_sae()
    {
        // --out naming the --activations file replaced the activations with feature_acts/sae_out once encoded.
        string acts = P("acts.safetensors");
        using (var x = randn(20, 16)) SafeTensors.Save(acts, new Dictionary<string, TorchSharp.torch.Tensor> { ["activations"] = x });
        byte[] before = File.ReadAllBytes(acts);
        string same = OneLineError(CliRunner.Run("encode", "--sae", _fx.SaeDir, "--activations", acts, "--out", Path.Combine(_fx.Dir, ".", "acts.safetensors")));
        Assert.Contains("--out", same);
        Assert.Contains("--activations", same);
        Assert.Equal(before, File.ReadAllBytes(acts));
        // Nor inside a folder of activation shards (it would replace a shard, or be read as one next time).
        string shards = P("shards");
        Directory.CreateDirectory(shards);
        File.Copy(acts, Path.Combine(shards, "shard_00000.safetensors"));
        OneLineError(CliRunner.Run("encode", "--sae", _fx.SaeDir, "--activations", shards, "--out", Path.Combine(shards, "shard_00000.safetensors")));
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(shards, "shard_00000.safetensors")));
        // Nor the SAE's own files.
        string saeCopy = P("sae-copy");
        Directory.CreateDirectory(saeCopy);
        foreach (var f in Directory.GetFiles(_fx.SaeDir)) File.Copy(f, Path.Combine(saeCopy, Path.GetFileName(f)));
        byte[] weights = File.ReadAllBytes(Path.Combine(saeCopy, "sae_weights.safetensors"));
        string sae = OneLineError(CliRunner.Run("encode", "--sae", saeCopy, "--activations", acts, "--out", Path.Combine(saeCopy, "sae_weights.safetensors")));
        Assert.Contains("--sae", sae);
        Assert.Equal(weights, File.ReadAllBytes(Path.Combine(saeCopy, "sae_weights.safetensors")));
        // An existing folder is named as the flag's value (not the OS's "Is a directory"), and is left as it was.
        string folder = P("out-folder");
        Directory.CreateDirectory(folder);
        Assert.StartsWith($"error: --out {folder}: is a folder; give a file path", OneLineError(CliRunner.Run("encode", "--sae", _fx.SaeDir, "--activations", acts, "--out", folder)));
        Assert.Empty(Directory.GetFileSystemEntries(folder));
        // A name of another format (.npy) is refused rather than filled with safetensors bytes; nothing is written.
        Assert.Contains("--out " + P("enc.npy") + ": sae encode writes a .safetensors file",
            OneLineError(CliRunner.Run("encode", "--sae", _fx.SaeDir, "--activations", acts, "--out", P("enc.npy"))));
        Assert.False(File.Exists(P("enc.npy")));
        // A new file beside the SAE's is fine.
        Assert.Equal(0, CliRunner.Run("encode", "--sae", saeCopy, "--activations", acts, "--out", Path.Combine(saeCopy, "enc.safetensors")).Exit);
        Assert.Equal(0, CliRunner.Run("encode", "--sae", _fx.SaeDir, "--activations", acts, "--out", P("enc.safetensors")).Exit);
    }

    [Fact]
    public void Writing_commands_refuse_an_output_that_would_replace_one_of_their_inputs()
    {
        string acts = P("acts.safetensors");
        using (var x = randn(20, 16)) SafeTensors.Save(acts, new Dictionary<string, TorchSharp.torch.Tensor> { ["activations"] = x });
        string saeCopy = P("sae-copy");
        Directory.CreateDirectory(saeCopy);
        foreach (var f in Directory.GetFiles(_fx.SaeDir)) File.Copy(f, Path.Combine(saeCopy, Path.GetFileName(f)));
        string shards = P("shards");
        Directory.CreateDirectory(shards);
        File.Copy(acts, Path.Combine(shards, "shard_00000.safetensors"));
        var watched = new[] { acts, Path.Combine(saeCopy, "cfg.json"), Path.Combine(saeCopy, "sae_weights.safetensors"), _fx.DataPath,
            Path.Combine(_fx.ModelDir, "config.json") }.ToDictionary(f => f, File.ReadAllBytes);

        void Refused(string flag, string input, params string[] args)
        {
            string err = OneLineError(CliRunner.Run(args));
            Assert.Contains(flag + " ", err);
            Assert.Contains(" " + input + " ", err);
            Assert.Contains("which this command reads", err);
        }

        // sae eval: --json / --histogram (given, or the default beside --json) onto the SAE's files, the activations, a shard folder.
        Refused("--json", "--sae", "eval", "--sae", saeCopy, "--activations", acts, "--json", Path.Combine(saeCopy, "cfg.json"));
        Refused("--histogram", "--sae", "eval", "--sae", saeCopy, "--activations", acts, "--histogram", Path.Combine(saeCopy, "sae_weights.safetensors"));
        Refused("--l0-histogram", "--sae", "eval", "--sae", saeCopy, "--activations", acts, "--l0-histogram", Path.Combine(saeCopy, "sae_weights.safetensors"));
        Refused("--json", "--activations", "eval", "--sae", saeCopy, "--activations", acts, "--json", acts);
        Refused("--json", "--activations", "eval", "--sae", saeCopy, "--activations", shards, "--json", Path.Combine(shards, "metrics.json"));
        Refused("--json", "--dataset", "eval", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--json", _fx.DataPath);
        Refused("--json", "--model", "eval", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--json", Path.Combine(_fx.ModelDir, "config.json"));
        // sae features: --out (or --html) onto the dataset, the model or SAE folder.
        Refused("--out", "--dataset", "features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", _fx.DataPath);
        Refused("--out", "--model", "features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", _fx.ModelDir);
        Refused("--html", "--sae", "features", "--sae", saeCopy, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", P("f"), "--html", saeCopy);
        // sae cache: --out onto the dataset or the model folder.
        Refused("--out", "--dataset", "cache", "--model", _fx.ModelDir, "--hook", "hook_embed", "--dataset", _fx.DataPath, "--out", _fx.DataPath);
        Refused("--out", "--model", "cache", "--model", _fx.ModelDir, "--hook", "hook_embed", "--dataset", _fx.DataPath, "--out", _fx.ModelDir);
        // sae dashboard: --out onto the features folder it reads, or writing its features/ pages into it.
        string site = P("site"), feats = Path.Combine(site, "features");
        Directory.CreateDirectory(feats);
        File.WriteAllText(Path.Combine(feats, "features.jsonl"), "");
        Refused("--out", "--features", "dashboard", "--features", feats, "--out", feats);
        Refused("--out", "--features", "dashboard", "--features", feats, "--out", site);
        // sae convert: OUT onto IN, or writing cfg.json beside a dictionary_learning ae.pt it reads.
        Refused("OUT", "IN", "convert", saeCopy, saeCopy, "--force");
        string dl = P("dl");
        Directory.CreateDirectory(dl);
        foreach (var f in Directory.GetFiles(TestPaths.Data("dictionary_learning", "AutoEncoder"))) File.Copy(f, Path.Combine(dl, Path.GetFileName(f)));
        Refused("OUT", "IN", "convert", Path.Combine(dl, "ae.pt"), dl, "--force");
        Assert.False(File.Exists(Path.Combine(dl, "cfg.json")));

        foreach (var (file, bytes) in watched) Assert.Equal(bytes, File.ReadAllBytes(file));
        // metrics.json (and its histogram) beside the SAE is a normal use, also when it is already there.
        for (int run = 0; run < 2; run++)
            Assert.Equal(0, CliRunner.Run("eval", "--sae", saeCopy, "--activations", acts, "--json", Path.Combine(saeCopy, "metrics.json")).Exit);
        Assert.True(File.Exists(Path.Combine(saeCopy, "metrics_feature_density.png")));
        Assert.Equal(watched[Path.Combine(saeCopy, "sae_weights.safetensors")], File.ReadAllBytes(Path.Combine(saeCopy, "sae_weights.safetensors")));
    }

    /// <summary>badinput walk: <c>sae model run --out DIR/sae_weights.safetensors</c> (no --sae) replaced an SAE's weights
    /// with logits, as "any other existing output file is replaced". A file an SAE or a model folder is read from is not
    /// "any other file": refused naming it, the file unchanged; a new file beside it is still written.</summary>
    [Fact]
    public void An_output_file_that_is_an_sae_or_model_file_is_refused_even_when_not_an_input()
    {
        string saeCopy = P("sae-kept");
        Directory.CreateDirectory(saeCopy);
        foreach (var f in Directory.GetFiles(_fx.SaeDir)) File.Copy(f, Path.Combine(saeCopy, Path.GetFileName(f)));
        string weights = Path.Combine(saeCopy, "sae_weights.safetensors");
        byte[] before = File.ReadAllBytes(weights);
        string[] run = ["model", "run", "--model", _fx.ModelDir, "--prompt", " cat sat", "--prompt", " dog"];
        string err = OneLineError(CliRunner.Run([.. run, "--out", weights]));
        Assert.Equal($"error: --out {weights}: is one of the files of the SAE in {saeCopy}, which this command does not write; give another file", err);
        Assert.Equal(before, File.ReadAllBytes(weights));
        // The same for a model's weights (another model than the one run), and for logit-stats' --csv onto an SAE's cfg.json.
        string otherModel = P("other-model");
        Directory.CreateDirectory(otherModel);
        foreach (var f in Directory.GetFiles(_fx.ModelDir)) File.Copy(f, Path.Combine(otherModel, Path.GetFileName(f)));
        string modelWeights = Directory.GetFiles(otherModel, "*.safetensors").First();
        Assert.Contains($"is one of the files of the model in {otherModel}", OneLineError(CliRunner.Run([.. run, "--out", modelWeights])));
        Assert.Contains($"is one of the files of the SAE in {saeCopy}",
            OneLineError(CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--csv", Path.Combine(saeCopy, "cfg.json"))));
        // A new file beside the SAE's, and an existing file of no SAE or model, are written.
        Ok(CliRunner.Run([.. run, "--out", Path.Combine(saeCopy, "run.safetensors")]));
        Ok(CliRunner.Run([.. run, "--out", Path.Combine(saeCopy, "run.safetensors")]));
        Assert.Equal(before, File.ReadAllBytes(weights));
    }

    [Fact]
    public void Model_run_attribute_inspect_and_score_labels_refuse_an_output_onto_their_inputs_and_a_folder_or_file_in_the_way_before_running()
    {
        string saeCopy = P("sae-run");
        Directory.CreateDirectory(saeCopy);
        foreach (var f in Directory.GetFiles(_fx.SaeDir)) File.Copy(f, Path.Combine(saeCopy, Path.GetFileName(f)));
        string tokens = P("tokens.safetensors");
        using (var t = tensor(new long[] { 1, 2, 3, 4 }).reshape(1, 4)) SafeTensors.Save(tokens, new Dictionary<string, Tensor> { ["tokens"] = t });
        string weights = Path.Combine(saeCopy, "sae_weights.safetensors"), cfg = Path.Combine(saeCopy, "cfg.json");
        var watched = new[] { weights, cfg, tokens }.ToDictionary(f => f, File.ReadAllBytes);
        string folder = P("a-folder");
        Directory.CreateDirectory(folder);

        string Refused(string flag, params string[] args)
        {
            var r = CliRunner.Run(args);
            string err = OneLineError(r);
            Assert.Contains(flag + " ", err);
            Assert.DoesNotContain("clean", r.Out);   // nothing ran
            return err;
        }

        // sae model run --out onto the SAE's weights (it wrote over them before) or the --input tokens.
        Assert.Contains("replace sae_weights.safetensors of --sae", Refused("--out", "model", "run", "--model", _fx.ModelDir, "--sae", saeCopy, "--input", tokens, "--out", weights));
        Assert.Contains("replace --input", Refused("--out", "model", "run", "--model", _fx.ModelDir, "--input", tokens, "--out", tokens));
        Assert.Contains("is a folder", Refused("--out", "model", "run", "--model", _fx.ModelDir, "--input", tokens, "--out", folder));
        Assert.Contains($"{cfg} is a file, not a folder", Refused("--out", "model", "run", "--model", _fx.ModelDir, "--input", tokens, "--out", Path.Combine(cfg, "x.safetensors")));
        // A crosscoder's model.safetensors (model run wrote over it before).
        string cc = P("cc");
        Directory.CreateDirectory(cc);
        File.WriteAllText(Path.Combine(cc, "model.safetensors"), "weights");
        Assert.Contains("replace model.safetensors of --sae", Refused("--out", "model", "run", "--model", _fx.ModelDir, "--sae", cc, "--input", tokens, "--out", Path.Combine(cc, "model.safetensors")));
        Assert.Equal("weights", File.ReadAllText(Path.Combine(cc, "model.safetensors")));
        // sae attribute: --out, --json, --html onto the SAE's files, or two of them onto one file.
        string[] attribute = ["attribute", "--model", _fx.ModelDir, "--sae", saeCopy, "--input", tokens, "--metric", "loss"];
        Assert.Contains("replace sae_weights.safetensors of --sae", Refused("--out", [.. attribute, "--out", weights]));
        Assert.Contains("replace cfg.json of --sae", Refused("--json", [.. attribute, "--json", cfg]));
        Assert.Contains("the same file as --json", Refused("--html", [.. attribute, "--json", P("a.json"), "--html", P("a.json")]));
        // sae inspect and sae score-labels: --json onto the SAE's cfg.json (inspect wrote over it before).
        Assert.Contains("replace cfg.json of --sae", Refused("--json", "inspect", "--sae", saeCopy, "--model", _fx.ModelDir, "--prompt", "a b", "--json", cfg));
        Assert.Contains("the same file as --json", Refused("--html", "inspect", "--sae", saeCopy, "--model", _fx.ModelDir, "--prompt", "a b", "--json", P("a.json"), "--html", P("a.json")));
        Assert.Contains("replace cfg.json of --sae", Refused("--json", "score-labels", "--sae", saeCopy, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--json", cfg));
        // sae probe: --json onto the SAE's cfg.json (it wrote over it before) or onto its --dataset.
        Assert.Contains("replace cfg.json of --sae", Refused("--json", "probe", "--sae", saeCopy, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--json", cfg));
        Assert.Contains("replace --dataset", Refused("--json", "probe", "--sae", saeCopy, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--json", _fx.DataPath));
        Assert.Contains("is a folder", Refused("--json", "probe", "--sae", saeCopy, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--json", folder));
        // sae eval: --saebench-json onto a folder, --json under a file: refused before the evaluation, not after it.
        string[] eval = ["eval", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath];
        Assert.Contains("is a folder", Refused("--saebench-json", [.. eval, "--saebench-json", folder]));
        Assert.Contains("is a file, not a folder", Refused("--json", [.. eval, "--json", Path.Combine(cfg, "m.json")]));
        // ... and two of its outputs onto one file (the histogram PNG was written over the JSON).
        Assert.Contains("the same file as --json", Refused("--histogram", [.. eval, "--json", P("e.json"), "--histogram", P("e.json")]));
        Assert.Contains("the same file as --json", Refused("--saebench-json", [.. eval, "--json", P("e.json"), "--saebench-json", P("e.json")]));
        Assert.Contains("the same file as --saebench-json", Refused("--histogram", [.. eval, "--saebench-json", P("s.json"), "--histogram", P("s.json")]));
        Assert.Contains("the same file as --histogram", Refused("--l0-histogram", [.. eval, "--histogram", P("h.png"), "--l0-histogram", P("h.png")]));
        Assert.False(File.Exists(P("e.json")));
        Assert.False(File.Exists(P("s.json")));

        foreach (var (file, bytes) in watched) Assert.Equal(bytes, File.ReadAllBytes(file));
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
        Assert.False(File.Exists(P("a.json")));
    }

    [Fact]
    public void Features_dashboard_and_neuronpedia_refuse_an_output_folder_that_is_a_file_before_running()
    {
        // Before, sae features --out FILE ran the model and failed with .NET's "The file ... already exists."; with
        // --html FILE it wrote features.jsonl and then failed with "Could not find a part of the path"; neuronpedia the same.
        string file = P("a-file");
        File.WriteAllText(file, "mine");
        string[] features = ["features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--tokens", "64"];
        foreach (var (flag, args) in new (string, string[])[]
        {
            ("--out", [.. features, "--out", file]),
            ("--html", [.. features, "--out", P("feats"), "--html", file]),
            ("--out", ["dashboard", "--features", P("feats"), "--out", file]),
            ("--out", ["neuronpedia", "--features", P("feats"), "--out", file, "--np-set-name", "res"]),
        })
        {
            var r = CliRunner.Run(args);
            Assert.Contains($"{flag} {file}: is a file, not a folder", OneLineError(r));
            Assert.Equal("", r.Out);
        }
        Assert.Equal("mine", File.ReadAllText(file));
        Assert.False(Directory.Exists(P("feats")));
    }

    /// <summary>A NaN or infinite --clamp value or --steer scale is named as such (not "expected F:V"), and nothing is written.</summary>
    [Fact]
    public void NonFiniteClampAndSteerValuesAreNamed()
    {
        var input = P("three.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tensor(new long[] { 0, 5, 9 }).reshape(1, 3) });
        foreach (var (flag, spec, what) in new[] { ("--clamp", "3:NaN", "V"), ("--steer", "3:-Infinity", "S"), ("--clamp", "3:1e999", "V") })
        {
            string err = OneLineError(CliRunner.Run("model", "run", "--model", _fx.ModelDir, "--input", input, "--out", P("nf.safetensors"),
                "--sae", _fx.SaeDir, flag, spec));
            Assert.Contains($"{flag} '{spec}': {what} must be a finite number, got {spec[2..]}", err);
            Assert.False(File.Exists(P("nf.safetensors")));
        }
        string ablate = OneLineError(CliRunner.Run("ablate", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--prompt", "the cat", "--clamp", "1:NaN"));
        Assert.Contains("--clamp '1:NaN': V must be a finite number", ablate);
        Assert.Contains("--clamp '1:x': expected F:V", OneLineError(CliRunner.Run("ablate", "--model", _fx.ModelDir, "--sae", _fx.SaeDir,
            "--prompt", "the cat", "--clamp", "1:x")));
    }

    [Fact]
    public void TokensIdsAndPositionsOutsideTheInputAreErrors()
    {
        // The built-in model's word-level tokenizer maps unknown words to <unk>: 'zebra' is not a token.
        string metric = OneLineError(CliRunner.Run("attribute", "--model", "builtin", "--sae", _fx.SaeDir, "--prompt", "Tom had", "--metric", "logit:zebra"));
        Assert.Contains("--metric: 'zebra' is not a single token of this tokenizer", metric);
        Assert.Contains("\" <unk>\" (unknown)", metric);   // read as a word (TokenDisplay.TokenText)
        string two = OneLineError(CliRunner.Run("attribute", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--prompt", "the cat", "--metric", "logit: dog cat"));
        Assert.Contains("' dog cat' is not a single token", two);
        Assert.Contains($"{_fx.Vocab["Ġdog"]} \" dog\", {_fx.Vocab["Ġcat"]} \" cat\"", two);

        int vocab = Tokenizer.FromFolder(BuiltinModel.Folder).VocabSize;
        string decode = OneLineError(CliRunner.Run("model", "tokenize", "--model", "builtin", "--decode", "--text", "[76,99999]"));
        Assert.Contains("id 99999", decode);
        Assert.Contains($"vocabulary size {vocab}", decode);

        var input = P("six.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tensor(new long[] { 0, 5, 9, 2, 7, 3 }).reshape(1, 6) });
        string run = OneLineError(CliRunner.Run("model", "run", "--model", _fx.ModelDir, "--input", input, "--out", P("o.safetensors"),
            "--sae", _fx.SaeDir, "--steer", "1:2", "--positions", "2,50"));
        Assert.Contains("--positions 50", run);
        Assert.Contains("6 tokens", run);
        // Token ids stored as floats (2.5 would be read as 2) are refused by dtype, before anything is written.
        var floats = P("float_tokens.safetensors");
        SafeTensors.Save(floats, new Dictionary<string, Tensor> { ["tokens"] = tensor(new float[] { 0, 5, 9.5f }).reshape(1, 3) });
        string dtype = OneLineError(CliRunner.Run("model", "run", "--model", _fx.ModelDir, "--input", floats, "--out", P("f.safetensors")));
        Assert.Contains("'tokens' has dtype F32", dtype);
        Assert.Contains("I64 or I32", dtype);
        Assert.False(File.Exists(P("f.safetensors")));
        var int32 = P("int32_tokens.safetensors");
        SafeTensors.Save(int32, new Dictionary<string, Tensor> { ["tokens"] = tensor(new int[] { 0, 5, 9 }).reshape(1, 3) });
        var (exit32, _, err32) = CliRunner.Run("model", "run", "--model", _fx.ModelDir, "--input", int32, "--out", P("i.safetensors"));
        Assert.True(exit32 == 0, err32);
        var int64 = P("int64_tokens.safetensors");
        SafeTensors.Save(int64, new Dictionary<string, Tensor> { ["tokens"] = tensor(new long[] { 0, 5, 9 }).reshape(1, 3) });
        var (exit64, _, err64) = CliRunner.Run("model", "run", "--model", _fx.ModelDir, "--input", int64, "--out", P("l.safetensors"));
        Assert.True(exit64 == 0, err64);
        using (var from32 = SafeTensorsFile.Open(P("i.safetensors")))
        using (var from64 = SafeTensorsFile.Open(P("l.safetensors")))
        using (var logits32 = from32.Read("logits"))
        using (var logits64 = from64.Read("logits"))
            Assert.Equal(logits64.data<float>().ToArray(), logits32.data<float>().ToArray());
        // steer counts the prompt (BOS + 2 words) and the new tokens.
        string steer = OneLineError(CliRunner.Run("steer", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--feature", "1", "--scale", "1",
            "--prompt", "the cat", "--max-new-tokens", "2", "--positions", "5"));
        Assert.Contains("--positions 5", steer);
        Assert.Contains("5 tokens", steer);
        var (exit, _, err) = CliRunner.Run("steer", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--feature", "1", "--scale", "1",
            "--prompt", "the cat", "--max-new-tokens", "2", "--runs", "1", "--positions", "4");
        Assert.True(exit == 0, err);
        // steer takes the generation penalties too, refusing bad ones by name.
        Assert.Contains("--freq-penalty Infinity: expected a finite number", OneLineError(CliRunner.Run("steer", "--model", _fx.ModelDir, "--sae", _fx.SaeDir,
            "--feature", "1", "--scale", "1", "--prompt", "the cat", "--max-new-tokens", "2", "--freq-penalty", "Infinity")));
        (exit, string output, err) = CliRunner.Run("steer", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--feature", "1", "--scale", "1",
            "--prompt", "the cat", "--max-new-tokens", "2", "--runs", "1", "--temperature", "0", "--repetition-penalty", "1.5", "--freq-penalty", "0.2");
        Assert.True(exit == 0, err);
        // The heading says how both runs were penalised.
        Assert.Contains("feature 1 × 1 at hook_embed (repetition penalty 1.5, frequency penalty 0.2)", output);
    }

    /// <summary>sae eval on an activation file evaluates one --sae: a second is an error, not silently left out.</summary>
    [Fact]
    public void EvalOnActivationsTakesOneSae()
    {
        string acts = P("acts.safetensors");
        using (var x = randn(20, 16)) SafeTensors.Save(acts, new Dictionary<string, TorchSharp.torch.Tensor> { ["activations"] = x });
        string err = OneLineError(CliRunner.Run("eval", "--sae", _fx.SaeDir, "--sae", _fx.SaeDir, "--activations", acts));
        Assert.Contains("one --sae", err);
    }

    [Fact]
    public void An_sae_without_a_hook_name_gets_one_error_that_says_how_to_name_the_hook()
    {
        // An SAE trained on activation files records no hook. The commands that run it in a model said five different
        // things ("give the hook to attach it at", "names no hook_name", ...), some of them without a --hook to give.
        string sae = SaeClaimingHook("nohook", null);
        string[][] commands =
        [
            ["eval", "--sae", sae, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--tokens", "64"],
            ["inspect", "--sae", sae, "--model", _fx.ModelDir, "--prompt", "a b"],
            ["features", "--sae", sae, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--tokens", "64", "--out", P("f")],
            ["ablate", "--sae", sae, "--model", _fx.ModelDir, "--features", "1", "--prompt", "a b"],
            ["attribute", "--sae", sae, "--model", _fx.ModelDir, "--prompt", "a b", "--metric", "loss"],
            ["steer", "--sae", sae, "--model", _fx.ModelDir, "--feature", "1", "--scale", "2", "--prompt", "a b", "--max-new-tokens", "2"],
        ];
        foreach (var c in commands)
        {
            string err = OneLineError(CliRunner.Run(c));
            Assert.Contains("cfg.json has no metadata.hook_name", err);
            Assert.Contains("--hook where the command takes one", err);
        }
        // Where the command takes --hook, giving it is the way out (the fixture's SAE was trained at hook_embed).
        var ok = CliRunner.Run("ablate", "--sae", sae, "--model", _fx.ModelDir, "--features", "1", "--prompt", "a b", "--hook", "hook_embed");
        Assert.True(ok.Exit == 0, ok.Err);
    }

    /// <summary>libtorch's errors reach stderr as their first part, without the C++ stack it appends; its allocator's
    /// out-of-memory error also says what to make smaller. A real libtorch error (a dimension out of range) and the allocator's
    /// message as libtorch writes it.</summary>
    [Fact]
    public void LibtorchErrorsAreReportedWithoutTheirCppStack()
    {
        using var a = zeros(2, 3);
        var e = Assert.ThrowsAny<System.Runtime.InteropServices.ExternalException>(() => TorchScalars.VectorNorm(a, 2, [7]));
        Assert.Contains("Exception raised from", e.Message);
        string line = global::SaeSharp.Cli.Cli.MessageOf(e);
        Assert.Contains("Dimension out of range", line);
        Assert.DoesNotContain("Exception raised from", line);
        Assert.DoesNotContain("frame #", line);
        var oom = new System.Runtime.InteropServices.ExternalException(
            "DefaultCPUAllocator: not enough memory: you tried to allocate 160000000000 bytes.\nException raised from allocate_impl at /pytorch/c10/core/impl/alloc_cpu.cpp:124 (most recent call first):\nframe #0: c10::Error::Error + 0x8c");
        Assert.Equal("DefaultCPUAllocator: not enough memory: you tried to allocate 160000000000 bytes. (out of memory: use a smaller --batch-size, " +
                     "--context-size or model, or fewer tokens at once)", global::SaeSharp.Cli.Cli.MessageOf(oom));
        Assert.Equal("plain", global::SaeSharp.Cli.Cli.MessageOf(new SaeSharpException("plain")));
    }
}
