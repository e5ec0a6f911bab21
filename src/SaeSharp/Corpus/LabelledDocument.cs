namespace SaeSharp.Corpus;

/// <summary>
/// One generated document: its text, its tokens (the built-in tokenizer's split of the text), the labels of each token,
/// and the information (nats) the generator's random choices revealed at each token.
/// </summary>
/// <param name="Text">The document as running text.</param>
/// <param name="Tokens">The words and punctuation marks of <paramref name="Text"/>, in order.</param>
/// <param name="Labels">Per token: its labels (<c>pos:NOUN</c>, <c>cat:colour</c>, <c>role:subject</c>, <c>ctx:in_quote</c>, ...).</param>
/// <param name="ChoiceNats">
/// Per token: −ln p of the generator's choices first visible at that token (0 where the grammar fixes the token).
/// Their sum is the document's entropy under the grammar; its mean per token is the floor of a language model's loss.
/// </param>
public sealed record LabelledDocument(string Text, IReadOnlyList<string> Tokens, IReadOnlyList<IReadOnlyList<string>> Labels,
    IReadOnlyList<double> ChoiceNats);
