using SaeSharp.Activations;
using SaeSharp.Interop;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Models;
using SaeSharp.Training;

namespace SaeSharp.Tests.Training;

/// <summary>
/// An SAE made in C# with <see cref="SaeRecipes.Create"/> (no metadata) and trained by <see cref="SaeTrainer"/> on a model run
/// or a <c>sae cache</c> folder saves a cfg.json that names the hook, model and context it was trained on, as SAELens's
/// does; otherwise the README's next step, <c>hooked.AddSae(loaded)</c> at <c>Cfg.Metadata.HookName</c>, fails.
/// </summary>
public class SaeTrainerMetadataTests : ModelTestBase
{
    private const string Hook = "blocks.1.hook_resid_post";

    private static void Train(IActivationSource source, string saved)
    {
        var sae = SaeRecipes.Create("topk", dIn: source.DIn, dSae: 32, k: 4);
        using var trainer = new SaeTrainer(new TrainerConfig { TotalTrainingSteps = 3, TrainBatchSizeTokens = 16 }, source, [new SaeSlot("topk", sae)]);
        using var result = trainer.Run();
        SaeLensFormat.Save(result.Saes[0].Sae, saved);
    }

    [Fact]
    public void Model_source_gives_its_hook_model_and_context_to_an_sae_made_without_metadata()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 200, BatchSizePrompts = 2 };
        string saved = Path.Combine(Dir, "sae");
        using (var source = ModelPipeline.OpenSource(opts, Hook)) Train(source, saved);

        using var loaded = SaeLoader.Load(saved);
        Assert.Equal(Hook, loaded.Cfg.Metadata.HookName);
        Assert.Equal(16, loaded.Cfg.Metadata.ContextSize);
        Assert.Equal(ModelLoaderNameOf(model), loaded.Cfg.Metadata.ModelName);
        Assert.Equal(data, loaded.Cfg.Metadata.DatasetPath);
        // The SAE now splices in at its own hook with no hook argument.
        using var m = SaeSharp.Models.ModelLoader.FromPretrained(model);
        var hooked = new SaeSharp.Interventions.HookedSaeTransformer(m);
        Assert.Equal(Hook, hooked.AddSae(loaded).Hook);
    }

    [Fact]
    public void Cache_folder_gives_its_manifest_metadata_through_HoldOut_and_the_folder_source()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 200, BatchSizePrompts = 2 };
        string cache = Path.Combine(Dir, "cache");
        ModelPipeline.WriteCache(opts, Hook, cache, contextsPerShard: 4);

        var (train, eval) = ActivationSplit.HoldOut([cache], evalRows: null, new ActivationFileSourceOptions { Seed = 1, Loop = true });
        using (train)
        using (eval) Train(train, Path.Combine(Dir, "a"));
        using (var folder = new ActivationCacheFolder(cache, new ActivationFileSourceOptions { Seed = 1, Loop = true })) Train(folder, Path.Combine(Dir, "b"));
        foreach (var name in new[] { "a", "b" })
        {
            using var loaded = SaeLoader.Load(Path.Combine(Dir, name));
            Assert.Equal(Hook, loaded.Cfg.Metadata.HookName);
            Assert.Equal(16, loaded.Cfg.Metadata.ContextSize);
        }
    }

    [Fact]
    public void Plain_files_record_no_hook_and_an_sae_with_its_own_metadata_keeps_it()
    {
        string file = Path.Combine(Dir, "acts.safetensors");
        SaeSharp.IO.SafeTensors.Save(file, new Dictionary<string, TorchSharp.torch.Tensor> { ["activations"] = TorchSharp.torch.randn(200, 8) });
        using (var source = new ActivationFileSource(file, new ActivationFileSourceOptions { Loop = true }))
        {
            Assert.Null(source.Metadata);
            Train(source, Path.Combine(Dir, "plain"));
        }
        using (var plain = SaeLoader.Load(Path.Combine(Dir, "plain"))) Assert.Null(plain.Cfg.Metadata.HookName);

        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 200, BatchSizePrompts = 2 };
        using var src = ModelPipeline.OpenSource(opts, Hook);
        var own = SaeRecipes.Create("topk", dIn: src.DIn, dSae: 32, k: 4, metadata: new SaeSharp.Saes.SaeMetadata { HookName = "blocks.1.hook_resid_pre", ContextSize = 8 });
        using var trainer = new SaeTrainer(new TrainerConfig { TotalTrainingSteps = 1, TrainBatchSizeTokens = 16 }, src, [new SaeSlot("own", own)]);
        Assert.Equal("blocks.1.hook_resid_pre", own.Cfg.Metadata.HookName);
        Assert.Equal(8, own.Cfg.Metadata.ContextSize);
    }

    private static string ModelLoaderNameOf(string folder) => SaeSharp.Models.ModelLoader.NameOf(folder);
}
