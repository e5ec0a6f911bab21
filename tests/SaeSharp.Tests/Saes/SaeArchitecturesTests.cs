using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>The architecture registry: names, aliases, per-architecture validation, architectures of one's own.</summary>
public class SaeArchitecturesTests
{
    /// <summary>A ReLU SAE under another name: what a user adds with one registration.</summary>
    private sealed class ShiftedReluSae : Sae
    {
        public static SaeArchitecture Descriptor { get; } = new()
        {
            Name = "test_shifted_relu",
            Create = c => new ShiftedReluSae(c),
            Validate = (c, source) => { if (c.DSae % 2 != 0) throw new SaeSharpException($"{source}: test_shifted_relu needs an even d_sae"); },
        };

        public ShiftedReluSae(SaeConfig cfg) : base(cfg) => RegisterComponents();

        public override Tensor Encode(Tensor x) => nn.functional.relu(HiddenPre(x) - 1);

        public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx) => throw new NotSupportedException();
    }

    [Fact]
    public void EveryRegisteredNameBuildsItsOwnModule()
    {
        foreach (var name in SaeArchitectures.All)
        {
            var cfg = new SaeConfig { Architecture = name, DIn = 4, DSae = 8, K = 2, MatryoshkaWidths = [4, 8] };
            if (name == SaeArchitectures.Temporal)      // d_sae must be a multiple of bottleneck_factor·n_heads (64·8 by default)
                cfg.Extra = new() { ["n_heads"] = System.Text.Json.JsonSerializer.SerializeToElement(1), ["bottleneck_factor"] = System.Text.Json.JsonSerializer.SerializeToElement(4) };
            using var sae = SaeFactory.Create(cfg);
            Assert.Equal(name, sae.Cfg.Architecture);
            Assert.Same(SaeArchitectures.Get(name), SaeArchitectures.Find(name));
        }
    }

    [Fact]
    public void MatryoshkaIsReadAsMatryoshkaBatchTopKAndSavedUnderItsSaeLensName()
    {
        var cfg = SaeConfig.FromJson("""{ "architecture": "matryoshka", "d_in": 4, "d_sae": 8, "k": 2, "matryoshka_widths": [4, 8] }""");
        Assert.Equal(SaeArchitectures.MatryoshkaBatchTopK, cfg.Architecture);
        Assert.Contains("\"matryoshka_batchtopk\"", cfg.ToJson());
        using var sae = SaeFactory.Create(cfg);
        Assert.IsType<MatryoshkaBatchTopKSae>(sae);
        Assert.Equal(SaeArchitectures.MatryoshkaBatchTopK, SaeRecipes.Architecture("matryoshka"));
    }

    /// <summary>SAELens's "standard" (StandardTrainingSAE.calculate_aux_loss: the lp-norm of f·‖W_dec‖ over features, no
    /// decoder-norm constraint, no resampling in v6) is relu-april's recipe, not relu's (plain L1, unit-norm rows, resampling).</summary>
    [Fact]
    public void StandardIsSaeLensStandardTrainerThatIsReluApril()
    {
        Assert.Contains("standard", SaeRecipes.AcceptedNames);
        Assert.DoesNotContain("standard", SaeRecipes.Names);
        using var sae = SaeRecipes.Create("standard", 4, 8);
        Assert.IsType<StandardSae>(sae);
        Assert.Equal(SparsityPenalty.L1DecoderNorm, sae.Training.Penalty);
        var run = new TrainerConfig { TotalTrainingSteps = 2000 };
        Assert.Null(SaeRecipes.RunConfig("standard", run, 8).ResampleSteps);
        Assert.Equal(new long[] { 500, 1000, 1500 }, SaeRecipes.RunConfig("relu", run, 8).ResampleSteps!);
        Assert.Equal(5.0 * Math.Sqrt(256 / 4096.0), SaeRecipes.DefaultSparsityCoefficient("standard", 256), 12);
        Assert.Equal(SaeRecipes.DefaultLearningRate("relu-april", 8, 1_000_000), SaeRecipes.DefaultLearningRate("standard", 8, 1_000_000), 12);
    }

    [Fact]
    public void ARegisteredRecipeIsTrainedWithItsOwnDefaults()
    {
        SaeRecipes.Register(new SaeRecipe("test-relu-l1norm", SaeArchitectures.Standard)
        {
            Aliases = ["test-relu-l1norm-alias"], Penalty = SparsityPenalty.L1DecoderNorm, SparsityCoefficient = d => d / 100.0,
            PaperLearningRate = 3e-4,
        });
        using var sae = SaeRecipes.Create("test-relu-l1norm-alias", 16, 32);
        Assert.Equal(SparsityPenalty.L1DecoderNorm, sae.Training.Penalty);
        Assert.Equal(0.16, sae.Training.SparsityCoefficient, 12);
        Assert.True(SaeRecipes.HasSparsityCoefficient("test-relu-l1norm"));
        Assert.Equal(3e-4, SaeRecipes.DefaultLearningRate("test-relu-l1norm", 32, 1_000_000), 12);
        Assert.Throws<SaeSharpException>(() => SaeRecipes.Register(new SaeRecipe("test-relu-l1norm-alias", SaeArchitectures.TopK)));
        Assert.Throws<SaeSharpException>(() => SaeRecipes.Register(new SaeRecipe("test-unknown-arch", "no-such-architecture")));
        var unknown = Assert.Throws<SaeSharpException>(() => SaeRecipes.Get("reluu"));
        Assert.Contains("standard", unknown.Message);
    }

    [Fact]
    public void ValidationOfAnArchitecturesOwnFieldsNamesTheSourceWithoutBuildingIt()
    {
        var bad = new SaeConfig { Architecture = SaeArchitectures.MatryoshkaBatchTopK, DIn = 4, DSae = 8, K = 2, MatryoshkaWidths = [4, 6] };
        var e = Assert.Throws<SaeSharpException>(() => bad.Validate("my/cfg.json"));
        Assert.Equal("my/cfg.json: the last matryoshka width must equal d_sae=8, got 6", e.Message);
        var unknown = new SaeConfig { Architecture = "nope", DIn = 4, DSae = 8 };
        Assert.Contains("unknown architecture 'nope'", Assert.Throws<SaeSharpException>(() => SaeFactory.Create(unknown)).Message);
        var noK = new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 4, DSae = 8 };
        Assert.Contains("needs a positive k", Assert.Throws<SaeSharpException>(() => noK.Validate()).Message);
    }

    [Fact]
    public void AnArchitectureOfOnesOwnLoadsFromASaeLensFolderAfterOneRegistration()
    {
        if (SaeArchitectures.Find(ShiftedReluSae.Descriptor.Name) is null) SaeArchitectures.Register(ShiftedReluSae.Descriptor);
        Assert.Throws<SaeSharpException>(() => SaeArchitectures.Register(ShiftedReluSae.Descriptor));
        Assert.Contains("even d_sae", Assert.Throws<SaeSharpException>(() =>
            SaeFactory.Create(new SaeConfig { Architecture = "test_shifted_relu", DIn = 4, DSae = 7 })).Message);

        var dir = Directory.CreateTempSubdirectory("custom-arch-").FullName;
        try
        {
            using var sae = SaeFactory.Create(new SaeConfig { Architecture = "test_shifted_relu", DIn = 4, DSae = 8 });
            sae.InitializeWeights(new Generator(3));
            SaeLensFormat.Save(sae, dir);
            using var loaded = SaeLoader.Load(dir);
            Assert.IsType<ShiftedReluSae>(loaded);
            using var x = randn(5, 4);
            // ReLU(pre − 1) computed here from the saved weights.
            var expected = nn.functional.relu(addmm(sae.BEnc, x - sae.BDec, sae.WEnc, 1, 1) - 1);
            Assert.True(loaded.Encode(x).allclose(expected, 1e-6, 1e-6));
        }
        finally { Directory.Delete(dir, true); }
    }
}
