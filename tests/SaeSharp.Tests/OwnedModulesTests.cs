using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary>
/// SAEs and models the library hands out are the caller's to dispose, whatever dispose scope was open when they were
/// made: TorchSharp registers a parameter made inside <c>NewDisposeScope()</c> in that scope, and before
/// <see cref="OwnedModules"/> an SAE loaded (or a model loaded) inside a scope lost its weights when the scope ended
/// ("Tensor invalid -- empty handle" on the next call).
/// </summary>
public sealed class OwnedModulesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("owned-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Saes_made_or_loaded_inside_a_scope_outlive_it()
    {
        string saved = Path.Combine(_dir, "sae");
        using (var sae = SaeRecipes.Create("topk", dIn: 6, dSae: 12, k: 2))
        {
            sae.InitializeWeights(new Generator(1));
            SaeLensFormat.Save(sae, saved);
        }
        Sae created, loaded, dictionaryLearning;
        using (NewDisposeScope())
        {
            created = SaeRecipes.Create("relu", dIn: 6, dSae: 12);
            loaded = SaeLoader.Load(saved);
            dictionaryLearning = SaeLoader.Load(Path.Combine(AppContext.BaseDirectory, "data", "dictionary_learning", "AutoEncoderTopK", "ae.pt"));
        }
        using (created)
        using (loaded)
        using (dictionaryLearning)
        {
            using var x = randn(3, 6);
            using var f = created.Encode(x);
            using var g = loaded.Encode(x);
            using var x32 = randn(3, 32);
            using var h = dictionaryLearning.Encode(x32);
            Assert.Equal(new long[] { 3, 12 }, g.shape);
        }
    }

    [Fact]
    public void A_model_loaded_inside_a_scope_outlives_it()
    {
        string folder = TinyModels.WriteGpt2(Path.Combine(_dir, "gpt2"));
        HookedTransformer model;
        using (NewDisposeScope()) model = ModelLoader.FromPretrained(folder);
        using (model)
        {
            using var tokens = tensor(new long[] { 1, 2, 3 }).unsqueeze(0);
            using var logits = model.Forward(tokens);
            Assert.Equal(new long[] { 1, 3, model.Config.DVocab }, logits.shape);
        }
    }
}
