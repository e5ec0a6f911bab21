using SaeSharp.Analysis;

namespace SaeSharp.Pipelines;

/// <summary>The generated stories: a training file (activations are harvested from it) and a held-out file (another seed)
/// for evaluation, label scores and the dashboard.</summary>
public sealed record DemoCorpus(string TrainPath, long TrainTokens, string HeldOutPath, long HeldOutTokens);

/// <summary>The harvest feeding the trainer: <paramref name="Tokens"/> tokens of the training stories run through the model,
/// the activation at <paramref name="Hook"/> (width <paramref name="DIn"/>) read for <paramref name="Steps"/> training steps.</summary>
public sealed record DemoHarvest(string Hook, long Tokens, int DIn, long Steps);

/// <summary>The dashboard site: its index page, the best-scoring features and the random ones it shows.</summary>
public sealed record DemoDashboard(string IndexPath, IReadOnlyList<int> TopFeatures, IReadOnlyList<int> RandomFeatures, FeatureReport Report);

/// <summary>The prompt view of one sentence: top features (with their best labels) next to top neurons.</summary>
public sealed record DemoPromptView(PromptView View, IReadOnlyDictionary<int, FeatureNote> Notes, string Hook);

/// <summary>
/// A steering example: the greedy continuation of <paramref name="Prompt"/> without and with
/// <paramref name="Scale"/>·W_dec[<paramref name="Feature"/>] added at the SAE's hook from the prompt's last token on, and
/// how many distinct words of <paramref name="Label"/> each has. The feature is the one whose decoder direction raises the logits of
/// the label's words most (<paramref name="TopWords"/>: the three it raises most); <paramref name="FiresOn"/> is its own best
/// label from the label scores.
/// </summary>
public sealed record DemoSteering(int Feature, string Label, IReadOnlyList<string> TopWords, LabelMatch? FiresOn, double Scale,
    double ScaleInMaxActivations, string Prompt, string Before, string After, int LabelWordsBefore, int LabelWordsAfter);
