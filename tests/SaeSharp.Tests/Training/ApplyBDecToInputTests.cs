using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// SAELens's <c>apply_b_dec_to_input</c> false in training (<c>process_sae_in</c>: x − b_dec·apply_b_dec_to_input): the
/// encoder sees x itself, so b_dec is only the reconstruction's bias. Checked by two consequences that do not use the
/// code's own encoder: the latents equal those of the same SAE with apply true and b_dec = 0, and the loss's gradient in
/// b_dec is the reconstruction term's alone, 2·mean_n(ŷ_n − x_n) (the sparsity and auxiliary terms no longer reach b_dec),
/// on each architecture's training path; then the field's way in (--config, cfg.json, refusals).
/// </summary>
public class ApplyBDecToInputTests() : ActivationFileRunTestBase("apply-b-dec-")
{
    private const int DIn = 6, DSae = 16, Rows = 48;

    /// <summary>An SAE of <paramref name="architecture"/> with random weights (thresholds positive) and a large b_dec.</summary>
    private static Sae RandomSae(string architecture, bool apply, int seed)
    {
        var sae = SaeFactory.Create(new SaeConfig
        {
            Architecture = architecture, DIn = DIn, DSae = DSae, K = 4, MatryoshkaWidths = architecture == SaeArchitectures.MatryoshkaBatchTopK ? [4, DSae] : null,
            ApplyBDecToInput = apply,
        });
        sae.Training.SparsityCoefficient = 0.3;
        // SAELens's gated auxiliary reconstruction keeps b_dec's gradient (its own term); detached, as the paper, the
        // reconstruction term is the only one left.
        sae.Training.GatedAuxDetachDecoder = true;
        var gen = new Generator((ulong)seed);
        using (no_grad())
            foreach (var (name, p) in sae.named_parameters())
            {
                using var r = randn(p.shape, generator: gen);
                if (name.Contains("threshold", StringComparison.Ordinal)) p.copy_(r.abs().mul(0.05).add(TorchScalars.Of(0.01), TorchScalars.One));
                else if (name == "b_dec") p.copy_(r.mul(2).add(TorchScalars.Of(1.0), TorchScalars.One));
                else p.copy_(r.mul(0.4));
            }
        return sae;
    }

    private static Tensor BDec(Sae sae) => sae.named_parameters().Single(p => p.name == "b_dec").parameter;

    private static Tensor Inputs() => randn(Rows, DIn, generator: new Generator(11)).mul_(1.5).add_(TorchScalars.Of(0.7), TorchScalars.One);

    public static TheoryData<string> Architectures => new()
    {
        SaeArchitectures.Standard, SaeArchitectures.TopK, SaeArchitectures.BatchTopK, SaeArchitectures.JumpReLU, SaeArchitectures.Gated,
    };

    [Theory]
    [MemberData(nameof(Architectures))]
    [InlineData(SaeArchitectures.MatryoshkaBatchTopK)]
    public void The_encoder_sees_x_itself(string architecture)
    {
        using var x = Inputs();
        using var off = RandomSae(architecture, apply: false, seed: 5);
        using var centredAtZero = RandomSae(architecture, apply: true, seed: 5);
        using (no_grad()) BDec(centredAtZero).zero_();
        using var a = off.Encode(x);
        using var b = centredAtZero.Encode(x);
        Assert.True(a.count_nonzero().item<long>() > 0);
        Assert.True(a.allclose(b, rtol: 1e-5, atol: 1e-6), $"{architecture}: latents differ from act(x·W_enc + b_enc)");
        // With apply true the same weights give other latents: b_dec (mean 1, spread 2) moves the encoder's input.
        using var on = RandomSae(architecture, apply: true, seed: 5);
        using var c = on.Encode(x);
        Assert.False(a.allclose(c, rtol: 1e-3, atol: 1e-4));
    }

    /// <summary>Each architecture on its training paths: ReLU's dense and sparse passes, the TopK family's candidate pass
    /// on and off, and bfloat16 autocast.</summary>
    public static TheoryData<string, string> TrainingPaths => new()
    {
        { SaeArchitectures.Standard, "dense" }, { SaeArchitectures.Standard, "sparse" }, { SaeArchitectures.Standard, "autocast" },
        { SaeArchitectures.TopK, "candidates off" }, { SaeArchitectures.TopK, "candidates on" }, { SaeArchitectures.TopK, "autocast" },
        { SaeArchitectures.BatchTopK, "candidates off" }, { SaeArchitectures.BatchTopK, "candidates on" },
        { SaeArchitectures.JumpReLU, "" }, { SaeArchitectures.JumpReLU, "autocast" }, { SaeArchitectures.Gated, "" },
    };

    [Theory]
    [MemberData(nameof(TrainingPaths))]
    public void The_loss_reaches_b_dec_only_through_the_reconstruction(string architecture, string path)
    {
        using var x = Inputs();
        foreach (bool apply in new[] { false, true })
        {
            using var sae = RandomSae(architecture, apply, seed: 7);
            if (sae is StandardSae relu && path != "autocast") relu.SparseTrainingDensity = path == "sparse" ? 1 : 0;
            sae.Training.CandidatePass = path == "candidates on" ? SaeSharp.Kernels.CandidatePass.On : SaeSharp.Kernels.CandidatePass.Off;
            sae.Training.Autocast = path == "autocast";
            // bfloat16 products: the gradient's tolerance is bfloat16's.
            double rtol = path == "autocast" ? 2e-2 : 1e-4, atol = path == "autocast" ? 2e-2 : 1e-5;
            using var scope = NewDisposeScope();
            var output = sae.TrainingForward(x, x, new SaeTrainContext());
            output.Loss.backward();
            // d/db_dec of mean_n ‖ŷ_n − x_n‖² with ŷ = … + b_dec: 2·mean_n(ŷ_n − x_n).
            var expected = (output.SaeOut.detach() - x).mean([0]).mul(2);
            var grad = BDec(sae).grad!;
            if (apply) Assert.False(grad.allclose(expected, rtol: 0.1, atol: 0.1), $"{architecture}: apply true should add the encoder's path");
            else Assert.True(grad.allclose(expected, rtol: rtol, atol: atol),
                $"{architecture}: b_dec gradient [{string.Join(", ", grad.data<float>().ToArray())}], expected [{string.Join(", ", expected.data<float>().ToArray())}]");
        }
    }

    [Theory]
    [InlineData("\"architecture\": \"topk\", \"k\": 3")]
    [InlineData("\"architecture\": \"standard\"")]
    [InlineData("\"architecture\": \"jumprelu\"")]
    public void A_run_with_it_false_writes_it_and_its_SAE_ignores_b_dec_on_the_way_in(string arch)
    {
        using (var plan = TrainingPlan.ForActivations(Settings(arch + ", \"apply_b_dec_to_input\": false", "run")))
            plan.Run();
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.False((bool)cfg["apply_b_dec_to_input"]!);
        using var sae = SaeLoader.Load(P("run"));
        Assert.False(sae.Cfg.ApplyBDecToInput);
        using (no_grad()) BDec(sae).fill_(3.0); // far from 0, so that the comparison below would see it if it were subtracted
        using var x = randn(20, 8, generator: new Generator(4));
        using var a = sae.Encode(x);
        sae.Cfg.ApplyBDecToInput = true;
        using (no_grad()) BDec(sae).zero_();
        using var b = sae.Encode(x);
        Assert.True(a.allclose(b, rtol: 1e-5, atol: 1e-6), "latents of the saved SAE differ from act(x·W_enc + b_enc)");
    }

    [Fact]
    public void Transcoders_saved_SAEs_and_resumed_runs_keep_their_own_value()
    {
        // A transcoder's b_dec is its output's bias: SAELens refuses true for transcoders.
        string pairs = P("pairs.safetensors");
        using (var x = randn(640, 8, generator: new Generator(8)))
        using (var y = randn(640, 5, generator: new Generator(9)))
            SafeTensors.Save(pairs, new Dictionary<string, Tensor> { ["activations"] = x, ["targets"] = y });
        var transcoder = TrainingSettings.FromJson($$"""
            {"activations": "{{pairs.Replace("\\", "/")}}", "target_name": "targets", "architecture": "topk", "k": 3, "batch_size": 32,
             "eval_rows": 64, "steps": 8, "expansion_factor": 2, "apply_b_dec_to_input": true, "out": "{{P("tc").Replace("\\", "/")}}"}
            """, "runner.json");
        var e = Assert.Throws<SaeSharpException>(() =>
        {
            using var plan = TrainingPlan.ForActivations(transcoder);
        });
        Assert.Contains("apply_b_dec_to_input true: a transcoder's b_dec is its output's bias", e.Message);

        // A saved SAE (apply false) fine-tuned from a config that says true (as every SAELens to_dict() does): the SAE's
        // own value is kept, as SAELens's runner loads it, with a note.
        using (var plan = TrainingPlan.ForActivations(Settings("\"architecture\": \"topk\", \"k\": 3, \"apply_b_dec_to_input\": false", "base"))) plan.Run();
        using (var plan = TrainingPlan.ForActivations(Settings($"\"from_pretrained_path\": \"{P("base").Replace("\\", "/")}\", \"apply_b_dec_to_input\": true", "ft")))
        {
            Assert.Contains(plan.Notes, n => n.Contains("apply_b_dec_to_input true is ignored: the SAE at from_pretrained_path has false", StringComparison.Ordinal));
            plan.Run();
        }
        Assert.False((bool)JsonNode.Parse(File.ReadAllText(P("ft", "cfg.json")))!["apply_b_dec_to_input"]!);

        // A run stopped at a checkpoint resumes with its own value; another one given on resume is refused.
        var first = Settings("\"architecture\": \"topk\", \"k\": 3, \"apply_b_dec_to_input\": false, \"checkpoint_every\": 4", "res");
        first.Steps = 4;
        using (var plan = TrainingPlan.ForActivations(first)) plan.Run();
        var again = Settings("\"architecture\": \"topk\", \"k\": 3, \"apply_b_dec_to_input\": true", "res");
        e = Assert.Throws<SaeSharpException>(() =>
        {
            using var plan = TrainingPlan.ForActivations(again, resume: true);
        });
        Assert.Contains("apply_b_dec_to_input true (topk in the checkpoint's run: false)", e.Message);
    }
}
