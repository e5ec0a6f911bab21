"""Writes saebench_sources.json: tiny datasets in the shape of SAEBench's other sparse-probing sources, and the texts
SAEBench's own selection picks from them, for SaeBenchSourcesTests (which write the rows as the hub's Parquet files).

The selection functions below are SAEBench's (adamkarvonen/SAEBench, sae_bench/sae_bench_utils/dataset_utils.py:
get_europarl_dataset, get_github_code_dataset, gather_dataset_from_df, get_balanced_amazon_sentiment_dataset), with
load_dataset(...) replaced by iterating the rows below (a streamed split reads its shards in order) and, as no pandas
is installed here, pandas' Series.sample(n, random_state=seed) written as what pandas 1.5 runs for it:
np.random.RandomState(seed).choice(len(series), n, replace=False) (pandas.core.sample.sample). Sizes are small
(train_set_size 20, test_set_size 10 for europarl; 8 and 4 for github-code; 12 and 8 for ag_news and sentiment);
random_seed 42 throughout.

  /usr/bin/python3 tests/data/saebench_sources/make.py > tests/data/saebench_sources/saebench_sources.json
"""
import json
import random
from collections import defaultdict

import numpy as np

SEED = 42


def sample(texts, n, random_state):
    idx = np.random.RandomState(random_state).choice(len(texts), n, replace=False)
    return [texts[i] for i in idx]


# ---- europarl: one config per language pair, each 2 shards; every row a translation struct {lang: text}
PAIRS = {"en": "en-fr", "fr": "fr-it", "de": "de-en", "es": "es-fr", "nl": "nl-pt"}
europarl_rows = {}
for pair in PAIRS.values():
    a, b = pair.split("-")
    rows = [{a: f"{a} sentence {i} of {pair}", b: f"{b} phrase {i} of {pair}"} for i in range(25)]
    europarl_rows[pair] = [rows[:9], rows[9:]]


def get_europarl_dataset(chosen_languages, train_size, test_size, random_seed):
    random.seed(random_seed)
    train_size = train_size // 2
    test_size = test_size // 2
    samples_per_language = train_size + test_size
    samples_by_language = defaultdict(list)
    for language, language_pair in PAIRS.items():
        dataset = [r for shard in europarl_rows[language_pair] for r in shard]
        for sample_ in dataset:
            samples_by_language[language].append(sample_[language])
            if len(samples_by_language[language]) > samples_per_language:
                break
    train_samples, test_samples = {}, {}
    for language in chosen_languages:
        lang_samples = samples_by_language[language]
        random.shuffle(lang_samples)
        train_samples[language] = lang_samples[:train_size]
        test_samples[language] = lang_samples[train_size:train_size + test_size]
        assert len(train_samples[language]) == train_size
        assert len(test_samples[language]) == test_size
    return train_samples, test_samples


# ---- github-code: rows (code, language) in 2 shards; lengths around the 534-character bar, some with astral characters
CODE_LANGS = ["C", "Python", "HTML", "Java", "PHP", "Ruby"]
code_rows = []
for i in range(90):
    lang = CODE_LANGS[(i * 7) % len(CODE_LANGS)]
    length = [200, 534, 535, 600, 700][i % 5]
    head = f"/* {lang} licence header {i} */ "
    body = head + "".join(f"v{i}_{j} = {j}; " for j in range(100))
    if i % 4 == 0:
        body = "\U0001F600" * 3 + body  # 3 code points, 6 UTF-16 units
    code_rows.append({"code": body[:length], "language": lang, "repo_name": f"r/{i}"})
code_shards = [code_rows[:40], code_rows[40:]]


def get_github_code_dataset(chosen_classes, train_size, test_size, random_seed):
    tokens_to_skip = 50
    ctx_len = 128
    chars_per_token = 3
    ctx_len_chars = ctx_len * chars_per_token
    chars_to_skip = tokens_to_skip * chars_per_token
    random.seed(random_seed)
    label_key = "language"
    train_size = train_size // 2
    test_size = test_size // 2
    dataset = [r for shard in code_shards for r in shard]
    total_size = train_size + test_size
    all_samples = defaultdict(list)
    for sample_ in dataset:
        if sample_[label_key] in chosen_classes:
            code = sample_["code"]
            if len(code) > (ctx_len_chars + chars_to_skip):
                code = code[chars_to_skip:]
                all_samples[sample_[label_key]].append(code)
            if all(len(all_samples[lang]) > total_size for lang in chosen_classes):
                break
    train_samples, test_samples = {}, {}
    for lang in chosen_classes:
        lang_samples = all_samples[lang]
        random.shuffle(lang_samples)
        train_samples[lang] = lang_samples[:train_size]
        test_samples[lang] = lang_samples[train_size:train_size + test_size]
        assert len(train_samples[lang]) == train_size
        assert len(test_samples[lang]) == test_size
    return train_samples, test_samples


# ---- ag_news: int labels 0..3 in train and test splits
def ag_rows(split, n):
    return [{"text": f"{split} news {i} about topic {(i * 5) % 4}", "label": (i * 5) % 4} for i in range(n)]


ag = {"train": ag_rows("train", 40), "test": ag_rows("test", 30)}


def gather_dataset_from_df(rows, chosen_classes, min_samples_per_category, label_key, text_key, random_seed):
    random.seed(random_seed)
    data = {}
    for chosen_class in chosen_classes:
        class_texts = [r[text_key] for r in rows if r[label_key] == chosen_class]
        sampled_texts = sample(class_texts, min_samples_per_category, random_seed)
        assert len(sampled_texts) == min_samples_per_category
        data[str(chosen_class)] = sampled_texts
    return data


# ---- amazon sentiment: float ratings 5.0 (first seen) and 1.0
def amazon_rows(split, n):
    return [{"text": f"{split} review {i}", "rating": 5.0 if (i + 1) % 3 else 1.0, "category": i % 2} for i in range(n)]


amazon = {"train": amazon_rows("train", 30), "test": amazon_rows("test", 24)}


def get_balanced_amazon_sentiment_dataset(rows, min_samples_per_category, random_seed):
    balanced_data = {}
    unique_ratings = list(dict.fromkeys(r["rating"] for r in rows))
    for rating in unique_ratings:
        texts = [r["text"] for r in rows if r["rating"] == rating]
        sampled_texts = sample(texts, min_samples_per_category, random_seed)
        assert len(sampled_texts) == min_samples_per_category
        balanced_data[str(rating)] = sampled_texts
    return balanced_data


out = {
    "europarl": {"shards": europarl_rows, "train_size": 20, "test_size": 10,
                 "expected": get_europarl_dataset(["en", "fr", "de", "es", "nl"], 20, 10, SEED)},
    "github_code": {"shards": code_shards, "train_size": 8, "test_size": 4,
                    "expected": get_github_code_dataset(["C", "Python", "HTML", "Java", "PHP"], 8, 4, SEED)},
    "ag_news": {"splits": ag, "train_size": 12, "test_size": 8,
                "expected": [gather_dataset_from_df(ag[s], [0, 1, 2, 3], n // 2, "label", "text", SEED)
                             for s, n in (("train", 12), ("test", 8))]},
    "amazon_sentiment": {"splits": amazon, "train_size": 12, "test_size": 8,
                         "expected": [get_balanced_amazon_sentiment_dataset(amazon[s], n // 2, SEED)
                                      for s, n in (("train", 12), ("test", 8))]},
}
print(json.dumps(out, ensure_ascii=False))
