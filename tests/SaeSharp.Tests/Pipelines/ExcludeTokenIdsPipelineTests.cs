using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Data;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary>SAELens's <c>exclude_special_tokens</c> as a list of token ids in the runs on a model: a tiny GPT-2 with the
/// real GPT-2 tokenizer (BOS = EOS = 50256; " the" = 262, " fox" = 21831) on a small text file.</summary>
public class ExcludeTokenIdsPipelineTests : ModelTestBase
{
    private const string Hook = "blocks.0.hook_resid_post";
    private const long The = 262, Fox = 21831, Bos = 50256;

    /// <summary>The token ids of the first <paramref name="n"/> windows of 16, in harvest order.</summary>
    private static long[] Tokens(string model, string data, int n) =>
        [.. ModelPipeline.Windows(Tokenizer.FromFolder(model), data, 16, true).Take(n).SelectMany(w => w)];

    [Fact]
    public void A_list_drops_exactly_the_listed_ids_positions_and_adds_no_bos()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2, Tokens = 5 * 16 };
        var tokens = Tokens(model, data, 5);
        Assert.Contains(Bos, tokens);
        Assert.Contains(The, tokens);
        Assert.Contains(Fox, tokens);
        var (full, _) = Drain(opts, Hook);
        Assert.Equal(80, full.shape[0]);
        long[] keep = [.. Enumerable.Range(0, 80).Where(i => tokens[i] != The && tokens[i] != Fox).Select(i => (long)i)];
        using var byHand = full.index_select(0, tensor(keep));
        var (listed, contexts) = Drain(opts with { ExcludeTokenIds = [Fox, The, The] }, Hook);
        Assert.Equal(5, contexts);
        Assert.Equal(keep.Length, listed.shape[0]);
        Assert.True(listed.equal(byHand).all().item<bool>(), "the rows should be the full run's rows without the listed ids' positions");
        // BOS is dropped only when listed: [50256] is exactly what true drops for GPT-2.
        var (special, _) = Drain(opts with { ExcludeSpecialTokens = true }, Hook);
        var (bosListed, _) = Drain(opts with { ExcludeTokenIds = [Bos] }, Hook);
        Assert.Equal(80 - tokens.Count(t => t == Bos), special.shape[0]);
        Assert.True(special.equal(bosListed).all().item<bool>());
        // An empty list drops nothing.
        var (none, _) = Drain(opts with { ExcludeTokenIds = [] }, Hook);
        Assert.True(none.equal(full).all().item<bool>());
        foreach (var t in new[] { full, listed, special, bosListed, none }) t.Dispose();
    }

    [Fact]
    public void An_id_beyond_the_vocabulary_is_an_error_naming_it()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 32, ExcludeTokenIds = [The, 50257] };
        var e = Assert.Throws<SaeSharpException>(() => ModelPipeline.OpenSource(opts, Hook).Dispose());
        Assert.Equal("exclude_special_tokens (--exclude-token-ids or the --config file): token id 50257 is beyond the tokenizer's vocabulary (ids 0 to 50256)", e.Message);
        Assert.Throws<SaeSharpException>(() => ModelPipeline.WriteCache(opts, Hook, Path.Combine(Dir, "c")));
    }

    [Fact]
    public void A_cache_records_the_list_and_its_saes_metadata_writes_it()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2, Tokens = 5 * 16 };
        var tokens = Tokens(model, data, 5);
        string dir = Path.Combine(Dir, "cache");
        var m = ModelPipeline.WriteCache(opts with { ExcludeTokenIds = [Fox, The] }, Hook, dir, contextsPerShard: 2);
        Assert.Equal(tokens.Count(t => t != The && t != Fox), m.TotalRows);
        var read = ActivationCacheManifest.Read(dir);
        Assert.Equal(new long[] { The, Fox }, read.ExcludeTokenIds);
        Assert.True(read.ExcludeTokenIdsListed);
        var meta = TrainingPlan.MetadataOf(read);
        Assert.Equal(new long[] { The, Fox }, meta.ExcludeTokenIds);
        Assert.Null(meta.ExcludeSpecialTokens);
        // exclude_special_tokens true: the metadata says true, as before.
        var special = TrainingPlan.MetadataOf(ModelPipeline.WriteCache(opts with { ExcludeSpecialTokens = true }, Hook, Path.Combine(Dir, "special")));
        Assert.Equal((true, (long[]?)null), (special.ExcludeSpecialTokens, special.ExcludeTokenIds));
        // A model run writes the list as given.
        var direct = TrainingPlan.MetadataOf(opts with { ExcludeTokenIds = [Fox, The] }, Hook);
        Assert.Equal("[21831,262]", JsonNode.Parse(new SaeConfig { DIn = 16, DSae = 32, Metadata = direct }.ToJson())!["metadata"]!["exclude_special_tokens"]!.ToJsonString());
    }

    [Fact]
    public void Eval_of_an_sae_whose_metadata_lists_ids_leaves_their_positions_out()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, BatchSizePrompts = 2, Tokens = 100 };
        var tokens = Tokens(model, data, 7);
        string Save(string name, Action<SaeMetadata> set)
        {
            var cfg = new SaeConfig { DIn = 16, DSae = 32 };
            cfg.Metadata.HookName = "blocks.1.hook_resid_pre";
            cfg.Metadata.ContextSize = 16;
            set(cfg.Metadata);
            using var sae = SaeFactory.Create(cfg);
            sae.InitializeWeights(new Generator(3));
            SaeLensFormat.Save(sae, Path.Combine(Dir, name));
            return Path.Combine(Dir, name);
        }
        string listed = Save("listed", m => m.ExcludeTokenIds = [The]);
        string plain = Save("plain", _ => { });
        var cfgJson = JsonNode.Parse(File.ReadAllText(Path.Combine(listed, "cfg.json")))!;
        Assert.Equal("[262]", cfgJson["metadata"]!["exclude_special_tokens"]!.ToJsonString());
        Assert.Equal(new long[] { The }, SaeLensFormat.ReadConfig(Path.Combine(listed, "cfg.json")).Metadata.ExcludeTokenIds);

        var own = ModelPipeline.Evaluate([listed, plain], opts, meanAblation: false);
        Assert.Equal(tokens.Count(t => t != The), own[0].Tokens);
        Assert.Equal(tokens.Length, own[1].Tokens);
        // The plain SAE (same weights) with the list given for the data: the same figures.
        var given = ModelPipeline.Evaluate([plain], opts with { ExcludeTokenIds = [The] }, meanAblation: false)[0];
        Assert.Equal((own[0].Tokens, own[0].CeLossWithSae, own[0].ExplainedVariance), (given.Tokens, given.CeLossWithSae, given.ExplainedVariance));
        Assert.NotEqual(own[1].ExplainedVariance, own[0].ExplainedVariance);
        // --exclude-special-tokens for the data wins over the SAE's list.
        Assert.Equal(tokens.Count(t => t != Bos), ModelPipeline.Evaluate([listed], opts with { ExcludeSpecialTokens = true }, meanAblation: false)[0].Tokens);
    }
}
