using System.Text;
using SaeSharp.Activations;
using static SaeSharp.Corpus.Lexicon;

namespace SaeSharp.Corpus;

/// <summary>
/// Deterministic generator of short English-like stories with ground-truth labels on every token. A story introduces
/// two people (a girl and a boy) and maybe a pet, then tells what they do: moving to places at times and dates, seeing
/// counted and coloured things, eating lists of food, descriptions with singular/plural agreement, negations, quoted
/// speech, and questions whose answers repeat facts stated earlier in the story (long-range dependencies). The story is
/// told in the past or the present tense. The same seed always gives the same documents.
/// </summary>
public static class CorpusGenerator
{
    /// <summary>
    /// Document <paramref name="index"/> of the corpus of <paramref name="seed"/>. Each document has its own random
    /// stream (seeded from the pair), so any range of a corpus is generated without the documents before it.
    /// </summary>
    public static LabelledDocument Document(ulong seed, long index)
    {
        var mix = new SeededRandom(seed);
        ulong docSeed = mix.NextUInt64() ^ (0x9E3779B97F4A7C15UL * (ulong)(index + 1));
        return new Story(new SeededRandom(docSeed)).Write();
    }

    /// <summary>Documents <paramref name="first"/> .. <paramref name="first"/> + <paramref name="count"/> − 1 of the corpus of <paramref name="seed"/>.</summary>
    public static IEnumerable<LabelledDocument> Generate(ulong seed, int count, long first = 0)
    {
        for (long i = first; i < first + count; i++) yield return Document(seed, i);
    }

    /// <summary>
    /// Joins tokens into text: no space before <c>. , ? ! :</c> or a closing quote, none after an opening quote or a
    /// colon (times are written <c>7:30</c>). Quote marks alternate between opening and closing.
    /// </summary>
    public static string Render(IReadOnlyList<string> tokens)
    {
        var sb = new StringBuilder();
        bool inQuote = false, glueNext = true;
        foreach (var t in tokens)
        {
            bool glueLeft = t is "." or "," or "?" or "!" or ":" || (t == "\"" && inQuote);
            if (!glueNext && !glueLeft) sb.Append(' ');
            sb.Append(t);
            glueNext = t == ":" || (t == "\"" && !inQuote);
            if (t == "\"") inQuote = !inQuote;
        }
        return sb.ToString();
    }

    private sealed record Character(string Name, char Gender, string? Species)
    {
        public bool IsPet => Species is not null;
        public string Pronoun => Gender switch { 'f' => "she", 'm' => "he", _ => "it" };
    }

    private enum Form { Base, S, Past }

    /// <summary>One story being written: tokens, labels, context labels in force, and the facts stated so far.</summary>
    private sealed class Story(SeededRandom rng)
    {
        private static readonly HashSet<string> Vocab = new(AllWords, StringComparer.Ordinal);
        private readonly List<string> _tokens = [];
        private readonly List<IReadOnlyList<string>> _labels = [];
        private readonly List<double> _nats = [];
        private readonly HashSet<string> _ctx = new(StringComparer.Ordinal);
        private readonly List<Character> _people = [];
        private Character? _pet;
        private readonly HashSet<string> _mentioned = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _location = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _colourOf = new(StringComparer.Ordinal);
        private readonly List<(Character Who, (string Base, string S, string Past) Verb, (string Sg, string Pl) Noun, int N)> _counts = [];
        private double _pending;
        private bool _past;

        // ---- choices: each adds its information to the next token written ----
        private int Pick(int n)
        {
            _pending += Math.Log(n);
            return (int)rng.NextLong(n);
        }

        private T Pick<T>(IReadOnlyList<T> xs) => xs[Pick(xs.Count)];

        private bool Chance(double p)
        {
            bool yes = rng.NextDouble() < p;
            _pending += -Math.Log(yes ? p : 1 - p);
            return yes;
        }

        private int Weighted(params double[] w)
        {
            double total = w.Sum(), u = rng.NextDouble() * total, acc = 0;
            int i = 0;
            for (; i < w.Length - 1; i++)
            {
                acc += w[i];
                if (u < acc) break;
            }
            _pending += -Math.Log(w[i] / total);
            return i;
        }

        private void W(string word, params string[] labels)
        {
            if (!Vocab.Contains(word)) throw new InvalidOperationException($"corpus generator wrote '{word}', which is not in the lexicon");
            var all = new List<string>(labels.Length + _ctx.Count);
            all.AddRange(labels);
            all.AddRange(_ctx.OrderBy(c => c, StringComparer.Ordinal));
            _tokens.Add(word);
            _labels.Add(all);
            _nats.Add(_pending);
            _pending = 0;
        }

        private void Punct(string p) => W(p, "pos:PUNCT", p == "\"" ? "cat:quote_mark" : "cat:punctuation");

        private Ctx In(string label) => new(_ctx, label);

        private readonly struct Ctx : IDisposable
        {
            private readonly HashSet<string> _set;
            private readonly string _label;
            private readonly bool _added;
            public Ctx(HashSet<string> set, string label) { _set = set; _label = label; _added = set.Add(label); }
            public void Dispose() { if (_added) _set.Remove(_label); }
        }

        private static string Cap(string w) => char.ToUpperInvariant(w[0]) + w[1..];
        private static string Maybe(bool cap, string w) => cap ? Cap(w) : w;

        private void Verb((string Base, string S, string Past) v, Form f, params string[] extra)
        {
            string w = f switch { Form.Base => v.Base, Form.S => v.S, _ => v.Past };
            W(w, [.. new[] { "pos:VERB", "role:verb", f == Form.Past ? "tense:past" : "tense:present" }, .. extra]);
        }

        /// <summary>The bare verb after do-support ("did not see", "How many ... did Anna see"): no tense of its own.</summary>
        private void BareVerb((string Base, string S, string Past) v) => W(v.Base, "pos:VERB", "role:verb", "form:bare");

        private Form Narrative(bool plural) => _past ? Form.Past : plural ? Form.Base : Form.S;

        private void Be(bool plural, bool past)
        {
            string w = past ? (plural ? "were" : "was") : (plural ? "are" : "is");
            W(w, "pos:AUX", "role:verb", past ? "tense:past" : "tense:present");
        }

        private void Name(Character c, string role)
        {
            W(c.Name, "pos:PROPN", c.IsPet ? "cat:pet_name" : "cat:person_name", c.Gender == 'f' ? "cat:female" : c.Gender == 'm' ? "cat:male" : "cat:animal_name", role);
            _mentioned.Add(c.Name);
        }

        /// <summary>A character as subject: its name, or its pronoun once it has been named.</summary>
        private void Subject(Character c, bool sentenceStart)
        {
            if (_mentioned.Contains(c.Name) && Chance(0.3))
                W(Maybe(sentenceStart, c.Pronoun), "pos:PRON", "cat:pronoun", "role:subject");
            else Name(c, "role:subject");
        }

        private static readonly string[] NumberWordLabels = ["pos:NUM", "cat:number", "cat:number_word"];
        private static readonly string[] NumberDigitLabels = ["pos:NUM", "cat:number", "cat:number_digit"];

        private void Number(int n, params string[] extra)
        {
            if (Chance(0.5)) W(NumberWords[n], [.. NumberWordLabels, .. extra]);
            else W(n.ToString(System.Globalization.CultureInfo.InvariantCulture), [.. NumberDigitLabels, .. extra]);
        }

        private static string NounCat((string, string)[] cls) => cls == Animals ? "cat:animal" : cls == Foods ? "cat:food" : "cat:object";

        private void Noun((string Sg, string Pl) n, bool plural, string cat, string role) =>
            W(plural ? n.Pl : n.Sg, "pos:NOUN", cat, plural ? "num:plural" : "num:singular", role);

        private void Colour(string c, string role) => W(c, "pos:ADJ", "cat:colour", role);

        private Character AnyCharacter() => _pet is null ? Pick(_people) : Pick([_people[0], _people[1], _pet]);

        public LabelledDocument Write()
        {
            _past = Chance(0.5);
            Intro();
            int sentences = 0;
            while (true)
            {
                if (sentences >= 3 && Chance(sentences >= 9 ? 1.0 : 0.2)) break;
                Body();
                sentences++;
            }
            W("The", "pos:DET");
            W("end", "pos:NOUN", "cat:story_end");
            Punct(".");
            return new LabelledDocument(Render(_tokens), _tokens, _labels, _nats);
        }

        private void Intro()
        {
            bool girl = Chance(0.5);
            var first = new Character(Pick(girl ? GirlNames : BoyNames), girl ? 'f' : 'm', null);
            var second = new Character(Pick(girl ? BoyNames : GirlNames), girl ? 'm' : 'f', null);
            _people.Add(first);
            _people.Add(second);
            if (_past)
            {
                W("Once", "pos:ADV");
                W("there", "pos:PRON");
            }
            else W("There", "pos:PRON");
            Be(false, _past);
            W("a", "pos:DET");
            W(girl ? "girl" : "boy", "pos:NOUN", "cat:person_word", "num:singular");
            W("named", "pos:VERB");
            Name(first, "role:object");
            Punct(".");

            Name(first, "role:subject");
            Verb(("have", "has", "had"), Narrative(false));
            W("a", "pos:DET");
            W("friend", "pos:NOUN", "cat:person_word", "num:singular", "role:object");
            W("named", "pos:VERB");
            Name(second, "role:object");
            Punct(".");

            if (Chance(0.7))
            {
                var owner = Pick(_people);
                var species = Pick(Animals);
                string colour = Pick(Colours);
                _pet = new Character(Pick(PetNames), 'n', species.Sg);
                _colourOf[_pet.Name] = colour;
                Name(owner, "role:subject");
                Verb(("have", "has", "had"), Narrative(false));
                W("a", "pos:DET");
                Colour(colour, "role:modifier");
                Noun(species, false, "cat:animal", "role:object");
                W("called", "pos:VERB");
                Name(_pet, "role:object");
                Punct(".");
            }
        }

        private void Body()
        {
            bool canAsk = _location.Count + _colourOf.Count + _counts.Count > 0;
            switch (Weighted(3, 3, 2, 2, 2, 2, canAsk ? 3 : 0))
            {
                case 0: Move(); break;
                case 1: See(); break;
                case 2: EatList(); break;
                case 3: Describe(); break;
                case 4: Negation(); break;
                case 5: Speech(); break;
                default: QuestionAnswer(); break;
            }
        }

        private void TimePhrase(bool sentenceStart)
        {
            switch (Pick(4))
            {
                case 0:
                    W(Maybe(sentenceStart, "on"), "pos:ADP", "role:time");
                    W(Pick(Weekdays), "pos:PROPN", "cat:weekday", "cat:date", "role:time");
                    break;
                case 1:
                    W(Maybe(sentenceStart, "on"), "pos:ADP", "role:time");
                    W((Pick(28) + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), "pos:NUM", "cat:number", "cat:number_digit", "cat:date", "role:time");
                    W(Pick(Months), "pos:PROPN", "cat:month", "cat:date", "role:time");
                    break;
                case 2:
                    W(Maybe(sentenceStart, "at"), "pos:ADP", "role:time");
                    W((Pick(12) + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), "pos:NUM", "cat:number", "cat:number_digit", "cat:time", "role:time");
                    if (Chance(0.5))
                    {
                        W(":", "pos:PUNCT", "cat:time", "role:time");
                        W(Pick(Minutes), "pos:NUM", "cat:number_digit", "cat:time", "role:time");
                    }
                    else W(Pick(["am", "pm"]), "pos:NOUN", "cat:time", "role:time");
                    break;
                default:
                    W(Maybe(sentenceStart, "in"), "pos:ADP", "role:time");
                    W("the", "pos:DET", "role:time");
                    W(Pick(["morning", "afternoon", "evening"]), "pos:NOUN", "cat:time", "role:time");
                    break;
            }
        }

        private void Move()
        {
            bool prefix = Chance(0.25);
            if (prefix)
            {
                TimePhrase(true);
                Punct(",");
            }
            bool plural = Chance(0.2);
            var who = plural ? null : AnyCharacter();
            using (plural ? In("ctx:plural_subject") : default)
            {
                if (plural)
                {
                    if (_mentioned.Contains(_people[0].Name) && _mentioned.Contains(_people[1].Name) && Chance(0.5))
                        W(Maybe(!prefix, "they"), "pos:PRON", "cat:pronoun", "role:subject");
                    else
                    {
                        int a = Pick(2);
                        Name(_people[a], "role:subject");
                        W("and", "pos:CCONJ");
                        Name(_people[1 - a], "role:subject");
                    }
                }
                else Subject(who!, !prefix);
                Verb(Pick(MoveVerbs), Narrative(plural));
                W("to", "pos:ADP");
                W("the", "pos:DET");
                string place = Pick(Places);
                W(place, "pos:NOUN", "cat:place", "role:location");
                if (plural) foreach (var p in _people) _location[p.Name] = place;
                else _location[who!.Name] = place;
                if (!prefix && Chance(0.3)) TimePhrase(false);
            }
            Punct(".");
        }

        private void See()
        {
            var who = AnyCharacter();
            Subject(who, true);
            var verb = Pick(SeeVerbs);
            Verb(verb, Narrative(false));
            var cls = Chance(0.5) ? Animals : Objects;
            var noun = Pick(cls);
            switch (Pick(3))
            {
                case 0:
                    {
                        int n = Pick(11) + 2;
                        Number(n, "role:object");
                        if (Chance(0.4)) Colour(Pick(Colours), "role:modifier");
                        Noun(noun, true, NounCat(cls), "role:object");
                        _counts.RemoveAll(c => c.Who == who && c.Noun == noun && c.Verb == verb);
                        _counts.Add((who, verb, noun, n));
                        break;
                    }
                case 1:
                    W("a", "pos:DET");
                    if (Chance(0.5)) Colour(Pick(Colours), "role:modifier");
                    Noun(noun, false, NounCat(cls), "role:object");
                    break;
                default:
                    W("the", "pos:DET");
                    if (Chance(0.5)) W(Pick(Sizes), "pos:ADJ", "cat:size", "role:modifier");
                    Noun(noun, false, NounCat(cls), "role:object");
                    break;
            }
            Punct(".");
        }

        private void FoodItem((string Sg, string Pl) food)
        {
            switch (Pick(3))
            {
                case 0:
                    W("aeiou".Contains(food.Sg[0]) ? "an" : "a", "pos:DET");
                    Noun(food, false, "cat:food", "role:object");
                    break;
                case 1:
                    Number(Pick(11) + 2, "role:object");
                    Noun(food, true, "cat:food", "role:object");
                    break;
                default:
                    W("some", "pos:DET");
                    Noun(food, true, "cat:food", "role:object");
                    break;
            }
        }

        private void EatList()
        {
            var who = AnyCharacter();
            Subject(who, true);
            Verb(Pick(EatVerbs), Narrative(false));
            int items = Pick(3) + 2;
            var foods = Foods.ToList();
            using (In("ctx:in_list"))
            {
                for (int i = 0; i < items; i++)
                {
                    if (i > 0 && i < items - 1) Punct(",");
                    if (i > 0 && i == items - 1) W("and", "pos:CCONJ");
                    var f = foods[Pick(foods.Count)];
                    foods.Remove(f);
                    FoodItem(f);
                }
            }
            Punct(".");
        }

        private void Describe()
        {
            if (_pet is not null && Chance(0.25))
            {
                Subject(_pet, true);
                Be(false, _past);
                W(Pick(Feelings), "pos:ADJ", "cat:feeling", "role:predicate");
                Punct(".");
                return;
            }
            bool plural = Chance(0.4);
            var cls = Chance(0.5) ? Animals : Objects;
            var noun = Pick(cls);
            using (plural ? In("ctx:plural_subject") : default)
            {
                W("The", "pos:DET");
                Noun(noun, plural, NounCat(cls), "role:subject");
                Be(plural, _past);
                if (cls == Animals) W(Pick(Feelings), "pos:ADJ", "cat:feeling", "role:predicate");
                else if (Chance(0.5)) W(Pick(Sizes), "pos:ADJ", "cat:size", "role:predicate");
                else
                {
                    string colour = Pick(Colours);
                    Colour(colour, "role:predicate");
                    _colourOf[(plural ? "the " + noun.Pl : "the " + noun.Sg)] = colour;
                }
            }
            Punct(".");
        }

        private void Negation()
        {
            switch (Pick(3))
            {
                case 0:
                    {
                        bool plural = Chance(0.25);
                        using (plural ? In("ctx:plural_subject") : default)
                        {
                            if (plural) W("They", "pos:PRON", "cat:pronoun", "role:subject");
                            else Subject(AnyCharacter(), true);
                            W(_past ? "did" : plural ? "do" : "does", "pos:AUX", _past ? "tense:past" : "tense:present");
                            W("not", "pos:PART", "cat:negation");
                            using (In("ctx:after_negation"))
                            {
                                BareVerb(Pick(SeeVerbs));
                                W("the", "pos:DET");
                                var cls = Chance(0.5) ? Animals : Foods;
                                Noun(Pick(cls), false, NounCat(cls), "role:object");
                            }
                        }
                        break;
                    }
                case 1:
                    {
                        var noun = Pick(Objects);
                        W("The", "pos:DET");
                        Noun(noun, false, "cat:object", "role:subject");
                        Be(false, _past);
                        W("not", "pos:PART", "cat:negation");
                        // Never deny a colour stated earlier: the question about it must keep one answer.
                        var known = _colourOf.GetValueOrDefault("the " + noun.Sg);
                        using (In("ctx:after_negation")) Colour(Pick(Colours.Where(c => c != known).ToList()), "role:predicate");
                        break;
                    }
                default:
                    Subject(AnyCharacter(), true);
                    Be(false, _past);
                    W("not", "pos:PART", "cat:negation");
                    using (In("ctx:after_negation")) W(Pick(Feelings), "pos:ADJ", "cat:feeling", "role:predicate");
                    break;
            }
            Punct(".");
        }

        /// <summary>A first-person sentence in the present tense, inside quotes, without its final punctuation.</summary>
        private string QuoteContent()
        {
            switch (Pick(5))
            {
                case 0:
                    W("I", "pos:PRON", "cat:pronoun", "role:subject");
                    W("am", "pos:AUX", "role:verb", "tense:present");
                    W(Pick(Feelings), "pos:ADJ", "cat:feeling", "role:predicate");
                    return Chance(0.5) ? "!" : ".";
                case 1:
                    {
                        W("I", "pos:PRON", "cat:pronoun", "role:subject");
                        Verb(Pick(SeeVerbs), Form.Base);
                        var cls = Chance(0.5) ? Animals : Objects;
                        W("the", "pos:DET");
                        if (Chance(0.5)) Colour(Pick(Colours), "role:modifier");
                        Noun(Pick(cls), false, NounCat(cls), "role:object");
                        return ".";
                    }
                case 2:
                    using (In("ctx:plural_subject"))
                    {
                        W("We", "pos:PRON", "cat:pronoun", "role:subject");
                        Verb(Pick(MoveVerbs), Form.Base);
                        W("to", "pos:ADP");
                        W("the", "pos:DET");
                        W(Pick(Places), "pos:NOUN", "cat:place", "role:location");
                        if (Chance(0.5)) TimePhrase(false);
                    }
                    return ".";
                case 3:
                    W("I", "pos:PRON", "cat:pronoun", "role:subject");
                    W("do", "pos:AUX", "tense:present");
                    W("not", "pos:PART", "cat:negation");
                    using (In("ctx:after_negation"))
                    {
                        BareVerb(Pick(SeeVerbs));
                        var cls = Chance(0.5) ? Animals : Foods;
                        Noun(Pick(cls), true, NounCat(cls), "role:object");
                    }
                    return ".";
                default:
                    W("You", "pos:PRON", "cat:pronoun", "role:subject");
                    W("are", "pos:AUX", "role:verb", "tense:present");
                    W("my", "pos:PRON");
                    W("friend", "pos:NOUN", "cat:person_word", "num:singular", "role:predicate");
                    return "!";
            }
        }

        private void Speech()
        {
            var speaker = Pick(_people);
            var say = Pick(SayVerbs);
            if (Chance(0.5))
            {
                Name(speaker, "role:speaker");
                Verb(say, Narrative(false));
                Punct(",");
                Punct("\"");
                using (In("ctx:in_quote"))
                {
                    string end = QuoteContent();
                    Punct(end);
                }
                Punct("\"");
            }
            else
            {
                Punct("\"");
                using (In("ctx:in_quote"))
                {
                    QuoteContent();
                    Punct(",");
                }
                Punct("\"");
                Verb(say, Narrative(false));
                Name(speaker, "role:speaker");
                Punct(".");
            }
        }

        private void QuestionAnswer()
        {
            var kinds = new List<int>();
            if (_location.Count > 0) kinds.Add(0);
            if (_colourOf.Count > 0) kinds.Add(1);
            if (_counts.Count > 0) kinds.Add(2);
            int kind = Pick(kinds);
            int askerIndex = Pick(2);
            var asker = _people[askerIndex];
            var answerer = _people[1 - askerIndex];
            Name(asker, "role:speaker");
            Verb(AskVerb[0], Narrative(false));
            Punct(",");
            Punct("\"");
            Action answer;
            using (In("ctx:in_quote"))
            using (In("ctx:in_question"))
            {
                switch (kind)
                {
                    case 0:
                        {
                            var whoName = Pick(_location.Keys.Order(StringComparer.Ordinal).ToList());
                            var who = _people.Concat(_pet is null ? [] : [_pet]).First(c => c.Name == whoName);
                            string place = _location[whoName];
                            W("Where", "pos:ADV", "cat:question_word");
                            W("is", "pos:AUX", "role:verb", "tense:present");
                            Name(who, "role:subject");
                            answer = () =>
                            {
                                Name(who, "role:subject");
                                W("is", "pos:AUX", "role:verb", "tense:present");
                                W("in", "pos:ADP");
                                W("the", "pos:DET");
                                W(place, "pos:NOUN", "cat:place", "role:location");
                            };
                            break;
                        }
                    case 1:
                        {
                            var thing = Pick(_colourOf.Keys.Order(StringComparer.Ordinal).ToList());
                            string colour = _colourOf[thing];
                            W("What", "pos:PRON", "cat:question_word");
                            W("colour", "pos:NOUN");
                            void Thing()
                            {
                                if (_pet is not null && thing == _pet.Name)
                                {
                                    Name(_pet, "role:subject");
                                    return;
                                }
                                var noun = thing[4..];
                                var entry = Objects.First(o => o.Sg == noun || o.Pl == noun);
                                W("the", "pos:DET");
                                Noun(entry, entry.Pl == noun, "cat:object", "role:subject");
                            }
                            bool plural = _pet is null || thing != _pet.Name ? Objects.Any(o => o.Pl == thing[4..]) : false;
                            W(plural ? "are" : "is", "pos:AUX", "role:verb", "tense:present");
                            Thing();
                            answer = () =>
                            {
                                using (plural ? In("ctx:plural_subject") : default)
                                {
                                    if (_pet is not null && thing == _pet.Name) Name(_pet, "role:subject");
                                    else
                                    {
                                        W("The", "pos:DET");
                                        var noun = thing[4..];
                                        var entry = Objects.First(o => o.Sg == noun || o.Pl == noun);
                                        Noun(entry, plural, "cat:object", "role:subject");
                                    }
                                    W(plural ? "are" : "is", "pos:AUX", "role:verb", "tense:present");
                                    Colour(colour, "role:predicate");
                                }
                            };
                            break;
                        }
                    default:
                        {
                            var fact = Pick(_counts);
                            var cls = Animals.Contains(fact.Noun) ? Animals : Objects;
                            W("How", "pos:ADV", "cat:question_word");
                            W("many", "pos:ADJ");
                            Noun(fact.Noun, true, NounCat(cls), "role:object");
                            W("did", "pos:AUX", "tense:past");
                            Name(fact.Who, "role:subject");
                            BareVerb(fact.Verb);
                            answer = () =>
                            {
                                Name(fact.Who, "role:subject");
                                Verb(fact.Verb, Form.Past);
                                Number(fact.N, "role:object");
                                Noun(fact.Noun, true, NounCat(cls), "role:object");
                            };
                            break;
                        }
                }
                Punct("?");
            }
            Punct("\"");
            Name(answerer, "role:speaker");
            Verb(ReplyVerb[0], Narrative(false));
            Punct(",");
            Punct("\"");
            using (In("ctx:in_quote"))
            using (In("ctx:in_answer"))
            {
                answer();
                Punct(".");
            }
            Punct("\"");
        }
    }
}
