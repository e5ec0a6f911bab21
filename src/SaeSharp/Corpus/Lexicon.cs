namespace SaeSharp.Corpus;

/// <summary>The closed vocabulary of <see cref="CorpusGenerator"/>: every word it can write, grouped by category.</summary>
internal static class Lexicon
{
    public static readonly string[] GirlNames = ["Anna", "Mia", "Lily", "Emma", "Sara", "Lucy", "Rosa", "Nora"];
    public static readonly string[] BoyNames = ["Tom", "Sam", "Ben", "Leo", "Jack", "Omar", "Paul", "Hugo"];
    public static readonly string[] PetNames = ["Rex", "Bella", "Daisy", "Milo", "Coco", "Luna", "Toby", "Pip"];
    public static readonly string[] Colours = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink", "purple", "grey"];
    /// <summary>(singular, plural).</summary>
    public static readonly (string Sg, string Pl)[] Animals =
        [("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("fox", "foxes"), ("horse", "horses"), ("rabbit", "rabbits"),
         ("mouse", "mice"), ("cow", "cows"), ("duck", "ducks"), ("frog", "frogs")];
    public static readonly (string Sg, string Pl)[] Objects =
        [("ball", "balls"), ("box", "boxes"), ("book", "books"), ("hat", "hats"), ("cup", "cups"), ("kite", "kites"),
         ("car", "cars"), ("bag", "bags"), ("key", "keys"), ("chair", "chairs")];
    public static readonly (string Sg, string Pl)[] Foods =
        [("apple", "apples"), ("cake", "cakes"), ("egg", "eggs"), ("banana", "bananas"), ("pear", "pears"),
         ("cookie", "cookies"), ("plum", "plums"), ("carrot", "carrots")];
    public static readonly string[] Places = ["park", "garden", "river", "school", "market", "forest", "beach", "farm", "library", "kitchen"];
    public static readonly string[] Feelings = ["happy", "sad", "tired", "hungry", "angry", "sleepy"];
    public static readonly string[] Sizes = ["big", "small", "old", "new"];
    public static readonly string[] NumberWords = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
    public static readonly string[] Weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    public static readonly string[] Months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    public static readonly string[] Minutes = ["00", "15", "30", "45"];

    /// <summary>Verbs taking an object: (base, third person singular, past).</summary>
    public static readonly (string Base, string S, string Past)[] SeeVerbs =
        [("see", "sees", "saw"), ("find", "finds", "found"), ("want", "wants", "wanted"), ("have", "has", "had"),
         ("like", "likes", "liked"), ("carry", "carries", "carried"), ("paint", "paints", "painted"), ("hold", "holds", "held")];
    public static readonly (string Base, string S, string Past)[] EatVerbs = [("eat", "eats", "ate"), ("buy", "buys", "bought"), ("cook", "cooks", "cooked")];
    public static readonly (string Base, string S, string Past)[] MoveVerbs =
        [("go", "goes", "went"), ("walk", "walks", "walked"), ("run", "runs", "ran"), ("drive", "drives", "drove")];
    public static readonly (string Base, string S, string Past)[] SayVerbs = [("say", "says", "said"), ("shout", "shouts", "shouted"), ("whisper", "whispers", "whispered")];
    public static readonly (string Base, string S, string Past)[] AskVerb = [("ask", "asks", "asked")];
    public static readonly (string Base, string S, string Past)[] ReplyVerb = [("reply", "replies", "replied")];

    /// <summary>Words written by the sentence templates themselves.</summary>
    public static readonly string[] FunctionWords =
    [
        "the", "a", "an", "some", "and", "but", "to", "in", "at", "on", "of", "with", "named", "called", "there", "There", "was", "were", "is", "are",
        "am", "also", "Once", "This", "friend", "girl", "boy", "not", "did", "does", "do", "I", "We", "You", "we", "you", "he", "she", "it", "they",
        "He", "She", "It", "They", "The", "Where", "What", "How", "many", "colour", "end", "On", "At", "In", "pm", "am", "morning", "evening",
        "afternoon", "today", "then", "Then", "yes", "no", "Yes", "No", "my", "our",
    ];
    public static readonly string[] Punctuation = [".", ",", "?", "!", "\"", ":"];

    /// <summary>Digits written by the generator: counts, days of the month, hours and minutes.</summary>
    public static IEnumerable<string> Digits => Enumerable.Range(0, 32).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).Concat(Minutes);

    /// <summary>Every word and punctuation mark the generator can write, without duplicates, in a fixed order.</summary>
    public static IReadOnlyList<string> AllWords { get; } = BuildAll();

    private static List<string> BuildAll()
    {
        IEnumerable<string> Verbs((string, string, string)[] v) => v.SelectMany(x => new[] { x.Item1, x.Item2, x.Item3 });
        IEnumerable<string> Nouns((string, string)[] v) => v.SelectMany(x => new[] { x.Item1, x.Item2 });
        var all = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var w in Punctuation.Concat(FunctionWords).Concat(GirlNames).Concat(BoyNames).Concat(PetNames).Concat(Colours)
                     .Concat(Nouns(Animals)).Concat(Nouns(Objects)).Concat(Nouns(Foods)).Concat(Places).Concat(Feelings).Concat(Sizes)
                     .Concat(NumberWords).Concat(Weekdays).Concat(Months).Concat(Digits)
                     .Concat(Verbs(SeeVerbs)).Concat(Verbs(EatVerbs)).Concat(Verbs(MoveVerbs)).Concat(Verbs(SayVerbs))
                     .Concat(Verbs(AskVerb)).Concat(Verbs(ReplyVerb)))
            if (seen.Add(w)) all.Add(w);
        return all;
    }
}
