using System.Text;
using SaeSharp.Hub;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Hub;

public sealed class HfHubClientTests : IDisposable
{
    private readonly FakeHubServer _server = new();
    private readonly string _cache = TestPaths.TempDir();
    private readonly byte[] _config = Encoding.UTF8.GetBytes("{\"model_type\": \"gpt2\", \"n_layer\": 2}");
    private readonly byte[] _weights = Bytes(5000, seed: 1);
    private readonly byte[] _tokenizer = Encoding.UTF8.GetBytes("{\"model\": {}}");
    private readonly byte[] _tokenizerConfig = Encoding.UTF8.GetBytes("{\"bos_token\": \"<|endoftext|>\"}");
    private readonly byte[] _generationConfig = Encoding.UTF8.GetBytes("{\"eos_token_id\": [1, 107]}");

    public HfHubClientTests()
    {
        _server.Repos["org/tiny"] = new()
        {
            ["config.json"] = new(_config),
            ["model.safetensors"] = new(_weights, Lfs: true),
            ["tokenizer.json"] = new(_tokenizer),
            ["tokenizer_config.json"] = new(_tokenizerConfig),
            ["generation_config.json"] = new(_generationConfig),
        };
    }

    public void Dispose()
    {
        _server.Dispose();
        try { Directory.Delete(_cache, recursive: true); } catch (IOException) { /* best effort */ }
    }

    private static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private HfHubClient Client() => new(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Token = "hf_test" });

    private string Storage => Path.Combine(_cache, "models--org--tiny");

    [Fact]
    public void Download_builds_the_hub_cache_layout()
    {
        using var client = Client();
        string dir = client.Resolve("org/tiny");
        string commit = _server.Commit;

        Assert.Equal(Path.Combine(Storage, "snapshots", commit), dir);
        Assert.Equal(commit, File.ReadAllText(Path.Combine(Storage, "refs", "main")));
        // small files are named by their (unquoted) git ETag, LFS files by X-Linked-Etag = sha256
        var expected = new Dictionary<string, (byte[] Content, string Etag)>
        {
            ["config.json"] = (_config, FakeHubServer.GitEtag(_config)),
            ["model.safetensors"] = (_weights, FakeHubServer.Sha256(_weights)),
            ["tokenizer.json"] = (_tokenizer, FakeHubServer.GitEtag(_tokenizer)),
            ["tokenizer_config.json"] = (_tokenizerConfig, FakeHubServer.GitEtag(_tokenizerConfig)),
            // the EOS ids generation stops at (Models.GenerationConfig), fetched with the model
            ["generation_config.json"] = (_generationConfig, FakeHubServer.GitEtag(_generationConfig)),
        };
        foreach (var (name, (content, etag)) in expected)
        {
            string pointer = Path.Combine(dir, name);
            Assert.Equal(content, File.ReadAllBytes(pointer));
            Assert.Equal(Path.Combine("..", "..", "blobs", etag), new FileInfo(pointer).LinkTarget);
            Assert.Equal(content, File.ReadAllBytes(Path.Combine(Storage, "blobs", etag)));
        }
        // optional tokenizer files that 404 are skipped and remembered as missing
        foreach (var missing in new[] { "vocab.json", "merges.txt", "special_tokens_map.json" })
        {
            Assert.False(File.Exists(Path.Combine(dir, missing)));
            Assert.True(File.Exists(Path.Combine(Storage, ".no_exist", commit, missing)));
        }
        Assert.Empty(Directory.GetFiles(Path.Combine(Storage, "blobs"), "*.incomplete"));

        var requests = _server.Requests.ToList();
        Assert.All(requests.Where(r => r.Path.Contains("/resolve/")), r => Assert.Equal("Bearer hf_test", r.Authorization));
        var get = Assert.Single(requests, r => r.Method == "GET" && r.Path.StartsWith("/cdn/"));
        Assert.Equal("/cdn/" + FakeHubServer.Sha256(_weights), get.Path);
        Assert.Null(get.Range);
    }

    [Fact]
    public void TransformerLens_aliases_resolve_to_their_hub_repo()
    {
        // TransformerLens's MODEL_ALIASES (supported_models.py): gpt2 ← gpt2-small, EleutherAI/pythia-70m ← pythia-70m /
        // pythia / pythia-19m, google/gemma-2-2b ← gemma-2-2b, google/gemma-3-270m ← gemma-3-270m, meta-llama/Llama-2-7b-hf ← Llama-2-7b; case-insensitive.
        Assert.Equal("gpt2", TransformerLensNames.OfficialName("gpt2-small"));
        Assert.Equal("EleutherAI/pythia-70m", TransformerLensNames.OfficialName("Pythia-70M"));
        Assert.Equal("EleutherAI/pythia-70m", TransformerLensNames.OfficialName("pythia"));
        Assert.Equal("EleutherAI/pythia-70m-deduped", TransformerLensNames.OfficialName("pythia-19m-deduped"));
        Assert.Equal("google/gemma-2-2b", TransformerLensNames.OfficialName("gemma-2-2b"));
        Assert.Equal("google/gemma-3-270m", TransformerLensNames.OfficialName("Gemma-3-270M"));
        Assert.Equal("google/gemma-3-4b-it", TransformerLensNames.OfficialName("gemma-3-4b-it"));
        Assert.Equal("meta-llama/Llama-2-7b-hf", TransformerLensNames.OfficialName("Llama-2-7b"));
        Assert.Equal("Qwen/Qwen2.5-0.5B", TransformerLensNames.OfficialName("qwen2.5-0.5b"));
        // Gemma 1 and Mistral: google/gemma-2b(-it) and google/gemma-7b(-it) ← the same names without google/;
        // mistralai/Mistral-7B-v0.1 ← mistral-7b, -Instruct-v0.1 ← mistral-7b-instruct, Mistral-Nemo-Base-2407 ← lower case.
        Assert.Equal("google/gemma-2b", TransformerLensNames.OfficialName("gemma-2b"));
        Assert.Equal("google/gemma-2b-it", TransformerLensNames.OfficialName("gemma-2b-it"));
        Assert.Equal("google/gemma-7b", TransformerLensNames.OfficialName("Gemma-7B"));
        Assert.Equal("google/gemma-7b-it", TransformerLensNames.OfficialName("gemma-7b-it"));
        Assert.Equal("mistralai/Mistral-7B-v0.1", TransformerLensNames.OfficialName("mistral-7b"));
        Assert.Equal("mistralai/Mistral-7B-Instruct-v0.1", TransformerLensNames.OfficialName("mistral-7b-instruct"));
        Assert.Equal("mistralai/Mistral-Nemo-Base-2407", TransformerLensNames.OfficialName("mistral-nemo-base-2407"));
        // Mixtral: mistralai/Mixtral-8x7B-v0.1 ← mixtral, mixtral-8x7b; -Instruct-v0.1 ← mixtral-instruct, mixtral-8x7b-instruct.
        Assert.Equal("mistralai/Mixtral-8x7B-v0.1", TransformerLensNames.OfficialName("mixtral"));
        Assert.Equal("mistralai/Mixtral-8x7B-v0.1", TransformerLensNames.OfficialName("Mixtral-8x7B"));
        Assert.Equal("mistralai/Mixtral-8x7B-Instruct-v0.1", TransformerLensNames.OfficialName("mixtral-instruct"));
        Assert.Equal("mistralai/Mixtral-8x7B-Instruct-v0.1", TransformerLensNames.OfficialName("mixtral-8x7b-instruct"));
        // GPT-Neo: roneneldan/TinyStories-1M ← tiny-stories-1M, TinyStories-Instuct-1Layer-21M (the hub's own spelling) ←
        // tiny-stories-instruct-1L-21M, EleutherAI/gpt-neo-125M ← neo, gpt-neo-small.
        Assert.Equal("roneneldan/TinyStories-1M", TransformerLensNames.OfficialName("tiny-stories-1M"));
        Assert.Equal("roneneldan/TinyStories-Instuct-1Layer-21M", TransformerLensNames.OfficialName("tiny-stories-instruct-1L-21M"));
        Assert.Equal("EleutherAI/gpt-neo-125M", TransformerLensNames.OfficialName("neo"));
        Assert.Equal("EleutherAI/gpt-neo-125M", TransformerLensNames.OfficialName("gpt-neo-small"));
        // Phi-3 (Phi3ForCausalLM): phi-3 and phi-4 (supported_models.py's MODEL_ALIASES); Phi (PhiForCausalLM): phi-1,
        // phi-1_5, phi-2.
        Assert.Equal("microsoft/Phi-3-mini-4k-instruct", TransformerLensNames.OfficialName("Phi-3"));
        Assert.Equal("microsoft/phi-4", TransformerLensNames.OfficialName("phi-4"));
        Assert.Equal("microsoft/phi-1", TransformerLensNames.OfficialName("phi-1"));
        Assert.Equal("microsoft/phi-1_5", TransformerLensNames.OfficialName("Phi-1_5"));
        Assert.Equal("microsoft/phi-2", TransformerLensNames.OfficialName("phi-2"));
        Assert.Null(TransformerLensNames.OfficialName("gpt2"));
        // GPT-J and OPT (GPTJForCausalLM, OPTForCausalLM).
        Assert.Equal("EleutherAI/gpt-j-6B", TransformerLensNames.OfficialName("gpt-j"));
        Assert.Equal("facebook/opt-125m", TransformerLensNames.OfficialName("opt"));
        Assert.Equal("facebook/opt-66b", TransformerLensNames.OfficialName("OPT-xxxxl"));
        Assert.Equal("bigscience/bloom-560m", TransformerLensNames.OfficialName("bloom-560m"));   // BloomForCausalLM
        Assert.Null(TransformerLensNames.OfficialName("t5-small")); // a family SaeSharp does not load

        // Through the client: the alias downloads and caches the repo it stands for.
        _server.Repos["EleutherAI/pythia-70m"] = _server.Repos["org/tiny"];
        using var client = Client();
        string dir = client.Resolve("pythia-70m");
        Assert.Equal(Path.Combine(_cache, "models--EleutherAI--pythia-70m", "snapshots", _server.Commit), dir);
        Assert.Equal(_config, File.ReadAllBytes(Path.Combine(dir, "config.json")));
    }

    [Fact]
    public void Cached_files_are_reused_without_requests()
    {
        using var client = Client();
        string first = client.Resolve("org/tiny");
        int requestsAfterFirst = _server.Requests.Count;
        Assert.True(requestsAfterFirst > 0);

        using var again = Client();
        string second = again.Resolve("org/tiny");
        Assert.Equal(first, second);
        Assert.Equal(requestsAfterFirst, _server.Requests.Count);
    }

    [Fact]
    public void Partial_download_resumes_with_a_range_request()
    {
        string sha = FakeHubServer.Sha256(_weights);
        Directory.CreateDirectory(Path.Combine(Storage, "blobs"));
        File.WriteAllBytes(Path.Combine(Storage, "blobs", sha + ".incomplete"), _weights[..1234]);

        using var client = Client();
        string dir = client.Resolve("org/tiny", "main", "model.safetensors");

        Assert.Equal(_weights, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        var get = Assert.Single(_server.Requests, r => r.Method == "GET");
        Assert.Equal("bytes=1234-", get.Range);
        Assert.Equal(_weights.Length - 1234, get.BodyBytesSent);
        Assert.False(File.Exists(Path.Combine(Storage, "blobs", sha + ".incomplete")));
    }

    [Fact]
    public void Dropped_download_keeps_the_partial_file_and_the_next_run_resumes()
    {
        _server.CutBodyAfter = 2000;
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.Resolve("org/tiny", "main", "model.safetensors"));
        Assert.Contains("resume", e.Message);
        string incomplete = Path.Combine(Storage, "blobs", FakeHubServer.Sha256(_weights) + ".incomplete");
        Assert.Equal(_weights[..2000], File.ReadAllBytes(incomplete));

        _server.CutBodyAfter = null;
        string dir = client.Resolve("org/tiny", "main", "model.safetensors");
        Assert.Equal(_weights, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        var gets = _server.Requests.Where(r => r.Method == "GET").ToList();
        Assert.Equal(2, gets.Count);
        Assert.Equal("bytes=2000-", gets[1].Range);
        Assert.Equal(_weights.Length - 2000, gets[1].BodyBytesSent);
    }

    [Fact]
    public void Server_ignoring_the_range_gets_the_partial_file_replaced()
    {
        _server.IgnoreRange = true;
        string sha = FakeHubServer.Sha256(_weights);
        Directory.CreateDirectory(Path.Combine(Storage, "blobs"));
        File.WriteAllBytes(Path.Combine(Storage, "blobs", sha + ".incomplete"), _weights[..1234]);

        using var client = Client();
        string dir = client.Resolve("org/tiny", "main", "model.safetensors");

        Assert.Equal(_weights, File.ReadAllBytes(Path.Combine(dir, "model.safetensors")));
        var get = Assert.Single(_server.Requests, r => r.Method == "GET");
        Assert.Equal("bytes=1234-", get.Range);
        Assert.Equal(_weights.Length, get.BodyBytesSent);
    }

    [Fact]
    public void Missing_required_file_names_repo_file_and_revision()
    {
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.Resolve("org/tiny", "main", "config.json", "nope.bin"));
        Assert.Contains("'nope.bin'", e.Message);
        Assert.Contains("'org/tiny'", e.Message);
        Assert.Contains("'main'", e.Message);

        var repo = Assert.Throws<SaeSharpException>(() => client.Resolve("org/absent"));
        Assert.Contains("'org/absent'", repo.Message);
        Assert.Contains("not found", repo.Message);

        var revision = Assert.Throws<SaeSharpException>(() => client.Resolve("org/tiny", "v9"));
        Assert.Contains("'v9'", revision.Message);
    }

    [Fact]
    public void Size_mismatch_is_an_error_and_leaves_no_blob()
    {
        _server.Repos["org/tiny"]["model.safetensors"] = new(_weights, Lfs: true, AnnouncedSize: _weights.Length + 10);
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.Resolve("org/tiny", "main", "model.safetensors"));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains($"{_weights.Length} bytes", e.Message);
        Assert.Contains($"{_weights.Length + 10}", e.Message);
        Assert.Empty(Directory.GetFiles(Path.Combine(Storage, "blobs")));
    }

    [Fact]
    public void Sharded_weights_come_from_the_index()
    {
        byte[] shard1 = Bytes(700, 2), shard2 = Bytes(900, 3);
        byte[] index = Encoding.UTF8.GetBytes("""
            {"metadata": {"total_size": 1600}, "weight_map": {
              "a.weight": "model-00001-of-00002.safetensors",
              "b.weight": "model-00002-of-00002.safetensors",
              "c.weight": "model-00001-of-00002.safetensors"}}
            """);
        _server.Repos["org/sharded"] = new()
        {
            ["config.json"] = new(_config),
            ["model.safetensors.index.json"] = new(index),
            ["model-00001-of-00002.safetensors"] = new(shard1, Lfs: true),
            ["model-00002-of-00002.safetensors"] = new(shard2, Lfs: true),
        };
        using var client = Client();
        string dir = client.Resolve("org/sharded");
        Assert.Equal(shard1, File.ReadAllBytes(Path.Combine(dir, "model-00001-of-00002.safetensors")));
        Assert.Equal(shard2, File.ReadAllBytes(Path.Combine(dir, "model-00002-of-00002.safetensors")));
        Assert.Equal(2, _server.Requests.Count(r => r.Method == "GET" && r.Path.StartsWith("/cdn/"))); // each shard once
        Assert.True(File.Exists(Path.Combine(_cache, "models--org--sharded", ".no_exist", _server.Commit, "model.safetensors")));
    }

    [Fact]
    public void Commit_revision_is_used_as_snapshot_without_a_ref()
    {
        using var client = Client();
        string dir = client.Resolve("org/tiny", _server.Commit, "config.json");
        Assert.Equal(Path.Combine(Storage, "snapshots", _server.Commit), dir);
        Assert.False(Directory.Exists(Path.Combine(Storage, "refs")));
    }

    [Fact]
    public void Local_folder_is_used_as_is()
    {
        string local = TestPaths.TempDir();
        using var client = Client();
        Assert.Equal(Path.GetFullPath(local), client.Resolve(local));
        Assert.Empty(_server.Requests);
        var e = Assert.Throws<SaeSharpException>(() => client.Resolve("not a repo!"));
        Assert.Contains("not a repo!", e.Message);
    }

    [Fact]
    public void Offline_mode_uses_only_the_cache()
    {
        var offline = new HfHubClient(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true });
        var e = Assert.Throws<SaeSharpException>(() => offline.Resolve("org/tiny"));
        Assert.Contains("offline", e.Message);
        using (var online = Client()) online.Resolve("org/tiny");
        int count = _server.Requests.Count;
        Assert.Equal(Path.Combine(Storage, "snapshots", _server.Commit), offline.Resolve("org/tiny"));
        Assert.Equal(count, _server.Requests.Count);
        offline.Dispose();
    }

    [Fact]
    public void Hub_unreachable_and_nothing_cached_names_the_cache_and_the_ways_out()
    {
        // Port 9 (discard) refuses the connection at once: the hub is unreachable, as on a machine without network.
        using var client = new HfHubClient(new HfHubOptions { Endpoint = "http://127.0.0.1:9", CacheDir = _cache });
        var e = Assert.Throws<SaeSharpException>(() => client.DownloadFile("org/tiny", "config.json"));
        Assert.Contains("cannot reach http://127.0.0.1:9/org/tiny/resolve/main/config.json", e.Message);
        Assert.Contains($"not in the cache either (looked in {Storage} (no such folder", e.Message);
        Assert.Contains("HF_HUB_CACHE", e.Message);
        Assert.Contains("--model builtin needs no download", e.Message);
    }

    /// <summary>What <c>huggingface-cli download</c> leaves: refs/main and the snapshot's files, no .no_exist markers.</summary>
    private string HandMadeSnapshot(string commit, params (string Name, byte[] Bytes)[] files)
    {
        string snapshot = Path.Combine(Storage, "snapshots", commit);
        foreach (var (name, bytes) in files)
        {
            string f = Path.Combine(snapshot, name);
            Directory.CreateDirectory(Path.GetDirectoryName(f)!);
            File.WriteAllBytes(f, bytes);
        }
        Directory.CreateDirectory(Path.Combine(Storage, "refs"));
        File.WriteAllText(Path.Combine(Storage, "refs", "main"), commit);
        return snapshot;
    }

    [Fact]
    public void Offline_a_cli_downloaded_model_loads_without_the_optional_files_it_lacks()
    {
        const string commit = "00112233445566778899aabbccddeeff00112233";
        // A repo with tokenizer.json only (no vocab.json, merges.txt, …), downloaded by huggingface-cli: no .no_exist markers.
        string snapshot = HandMadeSnapshot(commit, ("config.json", _config), ("model.safetensors", _weights), ("tokenizer.json", _tokenizer));
        using var offline = new HfHubClient(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true });
        Assert.Equal(snapshot, offline.Resolve("org/tiny"));

        // Sharded: model.safetensors is absent, the index and its shards are cached.
        File.Delete(Path.Combine(snapshot, "model.safetensors"));
        File.WriteAllText(Path.Combine(snapshot, "model.safetensors.index.json"),
            "{\"weight_map\": {\"a\": \"model-00001-of-00001.safetensors\"}}");
        File.WriteAllBytes(Path.Combine(snapshot, "model-00001-of-00001.safetensors"), _weights);
        Assert.Equal(snapshot, offline.Resolve("org/tiny"));
        Assert.Empty(_server.Requests);

        // No weights cached at all: the error is the offline one for model.safetensors, not "the repo has no weights".
        File.Delete(Path.Combine(snapshot, "model.safetensors.index.json"));
        var e = Assert.Throws<SaeSharpException>(() => offline.Resolve("org/tiny"));
        Assert.StartsWith("org/tiny/model.safetensors (revision main) is not in the cache and offline mode is on (HF_HUB_OFFLINE)", e.Message);
    }

    [Fact]
    public void Offline_errors_name_the_repo_file_cache_folder_what_is_missing_and_what_to_set()
    {
        using var offline = new HfHubClient(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true });
        string Error(string file, string revision = "main") =>
            Assert.Throws<SaeSharpException>(() => offline.DownloadFile("org/tiny", file, revision)).Message;

        string nothing = Error("config.json");
        Assert.Contains($"org/tiny/config.json (revision main) is not in the cache and offline mode is on (HF_HUB_OFFLINE): looked in {Storage} (no such folder", nothing);
        Assert.Contains("`huggingface-cli download org/tiny config.json`", nothing);
        Assert.Contains("set HF_HUB_CACHE (or HF_HOME) to the cache that holds it", nothing);
        Assert.Contains("--revision v2", Error("config.json", "v2"));

        // refs/main points at a commit whose snapshot was deleted.
        const string gone = "ffffffffffffffffffffffffffffffffffffffff";
        Directory.CreateDirectory(Path.Combine(Storage, "refs"));
        File.WriteAllText(Path.Combine(Storage, "refs", "main"), gone);
        Assert.Contains($"(refs/main points at commit {gone}, which has no snapshots/{gone} folder)", Error("config.json"));
        Assert.Contains("(no refs/v2: revision v2 was never downloaded)", Error("config.json", "v2"));

        // A partial download: the blob is still .incomplete, so no snapshot file links to it yet.
        Directory.CreateDirectory(Path.Combine(Storage, "blobs"));
        File.WriteAllBytes(Path.Combine(Storage, "blobs", "abc123.incomplete"), [1, 2, 3]);
        HandMadeSnapshot(gone, ("config.json", _config));
        string partial = Error("model.safetensors");
        Assert.Contains($"(snapshots/{gone} has no model.safetensors; 1 interrupted download (blobs/*.incomplete) resume when online)", partial);

        // A snapshot link whose blob is gone.
        File.CreateSymbolicLink(Path.Combine(Storage, "snapshots", gone, "tokenizer.json"), "../../blobs/missing");
        Assert.Contains($"snapshots/{gone}/tokenizer.json links to ../../blobs/missing, which is missing", Error("tokenizer.json"));
    }

    [Fact]
    public void Offline_listing_a_folder_names_the_cache_folder_what_is_missing_and_what_to_set_as_a_file_does()
    {
        using var offline = new HfHubClient(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true });
        string Error(string revision = "main") =>
            Assert.Throws<SaeSharpException>(() => offline.ListFiles("org/tiny", revision, "layer_3/width_16k")).Message;

        string nothing = Error();
        Assert.Contains($"cannot list org/tiny/layer_3/width_16k (revision main): no snapshot of it is in the cache and offline mode is on (HF_HUB_OFFLINE): looked in {Storage} (no such folder", nothing);
        Assert.Contains("`huggingface-cli download org/tiny --include \"layer_3/width_16k/*\"`", nothing);
        Assert.Contains("set HF_HUB_CACHE (or HF_HOME) to the cache that holds it", nothing);
        Assert.Contains("--include \"layer_3/width_16k/*\" --revision v2`", Error("v2"));
        Assert.Empty(_server.Requests);

        // A snapshot of another folder only: the error says which folder the snapshot lacks.
        const string commit = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
        Directory.CreateDirectory(Path.Combine(Storage, "refs"));
        File.WriteAllText(Path.Combine(Storage, "refs", "main"), commit);
        HandMadeSnapshot(commit, ("config.json", _config));
        Assert.Contains($"(snapshots/{commit} has no layer_3/width_16k)", Error());
        Assert.Contains("(no refs/v2: revision v2 was never downloaded)", Error("v2"));
    }

    [Fact]
    public void Offline_listing_a_whole_dataset_suggests_downloading_a_few_of_its_files_not_the_repo()
    {
        // A dataset read without its cache (e.g. SAELens's recorded cerebras/SlimPajama-627B, ~900 GB): the hint says
        // that a few data files, in name order, are enough; a model listing has no such hint.
        using var offline = new HfHubClient(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = _cache, Offline = true });
        string dataset = Assert.Throws<SaeSharpException>(() => offline.ListFiles("org/big", "main", null, HfRepoType.Dataset)).Message;
        Assert.Contains("`huggingface-cli download --repo-type dataset org/big`", dataset);
        Assert.Contains("a few data files are enough (`--include` their names: SaeSharp reads a split's files in name order", dataset);
        string model = Assert.Throws<SaeSharpException>(() => offline.ListFiles("org/tiny")).Message;
        Assert.DoesNotContain("a few data files", model);
        Assert.Empty(_server.Requests);
    }

    [Fact]
    public void Transformers_offline_turns_offline_mode_on_unless_HF_HUB_OFFLINE_is_set()
    {
        // huggingface_hub: _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))
        static bool Offline(params (string, string)[] vars)
        {
            var d = vars.ToDictionary(v => v.Item1, v => v.Item2);
            return HfHubOptions.FromEnvironment(k => d.GetValueOrDefault(k)).Offline;
        }
        Assert.True(Offline(("TRANSFORMERS_OFFLINE", "1")));
        Assert.True(Offline(("TRANSFORMERS_OFFLINE", "yes")));
        Assert.False(Offline(("HF_HUB_OFFLINE", "0"), ("TRANSFORMERS_OFFLINE", "1")));
        Assert.True(Offline(("HF_HUB_OFFLINE", "true"), ("TRANSFORMERS_OFFLINE", "0")));
        Assert.False(Offline(("TRANSFORMERS_OFFLINE", "0")));
    }

    [Fact]
    public void The_token_huggingface_cli_login_stored_is_used_when_HF_TOKEN_is_not_set()
    {
        string home = Path.Combine(_cache, "hfhome");
        Directory.CreateDirectory(home);
        File.WriteAllText(Path.Combine(home, "token"), "hf_stored\n");
        File.WriteAllText(Path.Combine(_cache, "elsewhere"), "hf_other");
        Func<string, string?> Env(params (string, string)[] vars)
        {
            var d = vars.ToDictionary(v => v.Item1, v => v.Item2);
            return k => d.GetValueOrDefault(k);
        }
        Assert.Equal("hf_stored", HfHubOptions.FromEnvironment(Env(("HF_HOME", home))).Token);
        Assert.Equal("hf_env", HfHubOptions.FromEnvironment(Env(("HF_HOME", home), ("HF_TOKEN", "hf_env"))).Token);
        Assert.Equal("hf_other", HfHubOptions.FromEnvironment(Env(("HF_HOME", home), ("HF_TOKEN_PATH", Path.Combine(_cache, "elsewhere")))).Token);
        Assert.Null(HfHubOptions.FromEnvironment(Env(("HF_HOME", Path.Combine(_cache, "empty")))).Token);

        // The stored token reaches the hub as the Bearer header.
        using var client = new HfHubClient(HfHubOptions.FromEnvironment(Env(("HF_HOME", home), ("HF_ENDPOINT", _server.Endpoint))));
        client.DownloadFile("org/tiny", "config.json");
        Assert.All(_server.Requests, r => Assert.Equal("Bearer hf_stored", r.Authorization));
    }

    [Fact]
    public void Options_follow_the_environment_variables()
    {
        static Func<string, string?> Env(params (string, string)[] vars)
        {
            var d = vars.ToDictionary(v => v.Item1, v => v.Item2);
            return k => d.GetValueOrDefault(k);
        }
        var defaults = HfHubOptions.FromEnvironment(Env(("HOME", "/home/u")));
        Assert.Equal("https://huggingface.co", defaults.Endpoint);
        Assert.Equal("/home/u/.cache/huggingface/hub", defaults.CacheDir);
        Assert.Null(defaults.Token);
        Assert.False(defaults.Offline);

        var home = HfHubOptions.FromEnvironment(Env(("HOME", "/home/u"), ("HF_HOME", "/data/hf"), ("HF_ENDPOINT", "http://mirror:8080/"),
            ("HF_TOKEN", "hf_abc"), ("HF_HUB_OFFLINE", "1")));
        Assert.Equal("/data/hf/hub", home.CacheDir);
        Assert.Equal("http://mirror:8080", home.Endpoint);
        Assert.Equal("hf_abc", home.Token);
        Assert.True(home.Offline);

        var hubCache = HfHubOptions.FromEnvironment(Env(("HF_HOME", "/data/hf"), ("HF_HUB_CACHE", "/fast/cache")));
        Assert.Equal("/fast/cache", hubCache.CacheDir);

        // huggingface_hub reads its paths through os.path.expandvars(os.path.expanduser(...)): ~ first, then $NAME and
        // ${NAME} of set variables; an unset one stays as written (Python's expandvars leaves it).
        Assert.Equal("/scratch/alice/hf/hub", HfHubOptions.FromEnvironment(Env(("HF_HOME", "/scratch/$USER/hf"), ("USER", "alice"))).CacheDir);
        Assert.Equal("/home/u/x/alice_1/hub", HfHubOptions.FromEnvironment(Env(("HOME", "/home/u"), ("HF_HOME", "~/x/${USER}_1"), ("USER", "alice"))).CacheDir);
        Assert.Equal("/data/$NOPE/cache", HfHubOptions.FromEnvironment(Env(("HF_HUB_CACHE", "/data/$NOPE/cache"))).CacheDir);
        Assert.Equal("/fast/t/hub-cache", HfHubOptions.FromEnvironment(Env(("HUGGINGFACE_HUB_CACHE", "/fast/$TMPX/hub-cache"), ("TMPX", "t"))).CacheDir);
    }

    [Fact]
    public void Etags_are_normalized_like_huggingface_hub()
    {
        Assert.Equal("abc", HfHubClient.NormalizeEtag("W/\"abc\""));
        Assert.Equal("abc", HfHubClient.NormalizeEtag("\"abc\""));
        Assert.Null(HfHubClient.NormalizeEtag(null));
    }
}
