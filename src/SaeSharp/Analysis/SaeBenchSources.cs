using SaeSharp.Data;

namespace SaeSharp.Analysis;

/// <summary>
/// SAEBench's sparse-probing datasets that are not two-column balanced draws (<c>sae_bench_utils/dataset_utils.py</c>),
/// read from the files the hub stores (or the same layout in a local folder) and drawn as SAEBench draws them
/// (<see cref="SaeBenchDraws"/>), so that on the same rows and seed the same texts come out in the same order:
/// ag_news (<c>get_ag_news_dataset</c>), amazon sentiment (<c>get_amazon_sentiment_dataset</c>), europarl
/// (<c>get_europarl_dataset</c>) and github-code (<c>get_github_code_dataset</c>).
/// </summary>
internal static class SaeBenchSources
{
    /// <summary>The names <see cref="TextProbingOptions.SaeBenchSource"/> takes, each with SAEBench's chosen classes
    /// (<c>dataset_info.chosen_classes_per_dataset</c> of fancyzhx/ag_news, canrager/amazon_reviews_mcauley_1and5_sentiment,
    /// Helsinki-NLP/europarl and codeparrot/github-code).</summary>
    internal static readonly IReadOnlyDictionary<string, string[]> ChosenClasses = new Dictionary<string, string[]>(StringComparer.Ordinal)
    {
        ["ag_news"] = ["0", "1", "2", "3"],
        ["amazon_sentiment"] = ["1.0", "5.0"],
        ["europarl"] = ["en", "fr", "de", "es", "nl"],
        ["github_code"] = ["C", "Python", "HTML", "Java", "PHP"],
    };

    /// <summary>The texts of <paramref name="path"/> drawn as SAEBench draws <paramref name="source"/> (a key of
    /// <see cref="ChosenClasses"/>), of <paramref name="classes"/> or SAEBench's chosen classes.</summary>
    internal static ProbeTexts Read(string source, string path, IReadOnlyList<string>? classes, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        if (!ChosenClasses.TryGetValue(source, out var chosen))
            throw new SaeSharpException($"--saebench-source {source}: expected one of {string.Join(", ", ChosenClasses.Keys)}");
        var c = classes ?? chosen;
        return source switch
        {
            "ag_news" => AgNews(path, c, trainSize, testSize, seed, hub),
            "amazon_sentiment" => AmazonSentiment(path, c, trainSize, testSize, seed, hub),
            "europarl" => Europarl(path, c, trainSize, testSize, seed, hub),
            _ => GithubCode(path, c, trainSize, testSize, seed, hub),
        };
    }

    /// <summary><c>get_ag_news_dataset</c>: the train and test splits' int <c>label</c> column, each chosen class sampled
    /// (<see cref="SaeBenchDraws.PerClass"/>) with trainSize/2 and testSize/2 texts.</summary>
    internal static ProbeTexts AgNews(string path, IReadOnlyList<string> chosen, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        var (train, test) = Halves(path, "label", hub);
        var tr = SaeBenchDraws.PerClass([.. train.Select(r => r.Label)], chosen, trainSize / 2, seed);
        var te = SaeBenchDraws.PerClass([.. test.Select(r => r.Label)], chosen, testSize / 2, seed);
        return Build(tr.Zip(te, (a, b) => (a.Class, Texts(train, a), Texts(test, b))), "train/test splits");
    }

    /// <summary><c>get_amazon_sentiment_dataset</c>: each rating of the train and test splits sampled with trainSize/2 and
    /// testSize/2 texts (<see cref="SaeBenchDraws.Sentiment"/>); then the ratings in both halves (<c>ensure_shared_keys</c>),
    /// those of <paramref name="chosen"/> in its order (<c>1.0</c>, <c>5.0</c>), or all in the train half's order.</summary>
    internal static ProbeTexts AmazonSentiment(string path, IReadOnlyList<string>? chosen, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        var (train, test) = Halves(path, "rating", hub);
        var tr = SaeBenchDraws.Sentiment([.. train.Select(r => r.Label)], trainSize / 2, seed);
        var te = SaeBenchDraws.Sentiment([.. test.Select(r => r.Label)], testSize / 2, seed).ToDictionary(c => c.Class, StringComparer.Ordinal);
        var names = chosen ?? [.. tr.Select(c => c.Class).Where(te.ContainsKey)];
        var trByClass = tr.ToDictionary(c => c.Class, StringComparer.Ordinal);
        foreach (var c in names)
            if (!trByClass.ContainsKey(c) || !te.ContainsKey(c))
                throw new SaeSharpException($"{path}: no text has rating {c} in the {(trByClass.ContainsKey(c) ? "test" : "train")} split " +
                                            $"(ratings: {string.Join(", ", tr.Select(x => x.Class))})");
        return Build(names.Select(c => (c, Texts(train, trByClass[c]), Texts(test, te[c]))), "train/test splits");
    }

    /// <summary>
    /// <c>get_europarl_dataset</c>: for each chosen language, the <c>translation</c> struct's text in that language from its
    /// pair config (<see cref="SaeBenchDraws.EuroparlPairs"/>: a folder <c>en-fr/</c> of Parquet files, in a local folder or
    /// the hub repo), its first trainSize/2 + testSize/2 + 1 rows in file order (SAEBench's stream stops one past), then
    /// <see cref="SaeBenchDraws.ShuffledSplits"/>.
    /// </summary>
    internal static ProbeTexts Europarl(string path, IReadOnlyList<string> chosen, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        int perLanguage = trainSize / 2 + testSize / 2;
        var collected = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var language in chosen.Distinct())
        {
            var pair = SaeBenchDraws.EuroparlPairs.FirstOrDefault(p => p.Language == language).Pair
                       ?? throw new SaeSharpException($"europarl: no language-pair config for '{language}' (SAEBench reads {string.Join(", ", SaeBenchDraws.EuroparlPairs.Select(p => $"{p.Language} from {p.Pair}"))})");
            collected[language] = [.. PairFiles(path, pair, hub).SelectMany(f => TextDataset.ReadParquet(f, $"translation.{language}")).Take(perLanguage + 1)];
        }
        return Build(SaeBenchDraws.ShuffledSplits(collected, chosen, trainSize / 2, testSize / 2, seed), "first rows, shuffled (random.seed)");
    }

    /// <summary><c>get_github_code_dataset</c>: the <c>code</c> and <c>language</c> columns of the train split's files in
    /// order, collected as <see cref="SaeBenchDraws.GithubCode"/> does (the read stops once every language has enough),
    /// then <see cref="SaeBenchDraws.ShuffledSplits"/>.</summary>
    internal static ProbeTexts GithubCode(string path, IReadOnlyList<string> chosen, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        var files = TextDataset.TrainTestFiles(path, hub)?.Train ?? Files(path, hub);
        var rows = TextDataset.ReadClassified(files, "code", ["language"], ["--label-field"]).Select(r => (r.Text, r.Labels[0]));
        var collected = SaeBenchDraws.GithubCode(rows, chosen, trainSize / 2 + testSize / 2);
        return Build(SaeBenchDraws.ShuffledSplits(collected, chosen, trainSize / 2, testSize / 2, seed), "first rows, shuffled (random.seed)");
    }

    private static IEnumerable<string> Files(string path, Hub.HfHubOptions? hub) =>
        HubDataset.IsHubDataset(path) ? new HubDataset(path, hub).LocalFiles() : TextDataset.ExpandFiles(path);

    /// <summary>The Parquet files of one config folder (<c>{pair}/…</c>), in ordinal path order.</summary>
    private static IEnumerable<string> PairFiles(string path, string pair, Hub.HfHubOptions? hub)
    {
        if (HubDataset.IsHubDataset(path))
            return new HubDataset(path, hub).LocalFiles(f => f.StartsWith(pair + "/", StringComparison.Ordinal) && TextDataset.KindOf(f) == TextDataset.FileKind.Parquet);
        string folder = Path.Combine(path, pair);
        if (!Directory.Exists(folder))
            throw new SaeSharpException($"europarl: '{path}' has no config folder '{pair}/' (the hub's layout: one folder of Parquet files per language pair)");
        var files = Directory.EnumerateFiles(folder, "*.parquet", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        return files.Count > 0 ? files : throw new SaeSharpException($"europarl: config folder '{folder}' has no .parquet files");
    }

    private static (List<(string Text, string Label)> Train, List<(string Text, string Label)> Test) Halves(string path, string labelField, Hub.HfHubOptions? hub)
    {
        var split = TextDataset.TrainTestFiles(path, hub)
                    ?? throw new SaeSharpException($"{path}: SAEBench draws this dataset from its train and test splits; it has not both");
        List<(string, string)> Read(IEnumerable<string> files) =>
            [.. TextDataset.ReadClassified(files, "text", [labelField], ["--label-field"]).Select(r => (r.Text, r.Labels[0]))];
        return (Read(split.Train), Read(split.Test));
    }

    private static IReadOnlyList<string> Texts(List<(string Text, string Label)> rows, BalancedClass c) => [.. c.Rows.Select(r => rows[r].Text)];

    /// <summary>Probe texts of classes in order, each with its training texts then its test texts.</summary>
    internal static ProbeTexts Build(IEnumerable<(string Class, IReadOnlyList<string> Train, IReadOnlyList<string> Test)> classes, string split)
    {
        var texts = new List<string>();
        var labels = new List<int[]>();
        var fit = new List<bool>();
        var names = new List<string>();
        foreach (var (name, train, test) in classes)
        {
            int c = names.Count;
            names.Add(name);
            foreach (var (part, isTrain) in new[] { (train, true), (test, false) })
                foreach (var t in part)
                {
                    texts.Add(t);
                    labels.Add([c]);
                    fit.Add(isTrain);
                }
        }
        if (names.Count < 2) throw new SaeSharpException($"probing needs at least two classes, got {names.Count}");
        return new ProbeTexts(texts, labels, names, [.. fit], OneClassEach: true) { Split = split };
    }
}
