"""Writes tests/data/saebench_draws/draws.json: the texts SAEBench's own dataset construction picks from a tiny
two-column classification dataset, for SaeBenchDrawsTests.

The functions below are SAEBench's (adamkarvonen/SAEBench, sae_bench/sae_bench_utils/dataset_utils.py:
get_balanced_dataset, ensure_shared_keys; sae_bench/evals/scr_and_tpp/dataset_creation.py: get_spurious_corr_data),
copied with only the tqdm wrapper dropped and dataset_info.dataset_metadata replaced by an entry of the same shape for
the tiny dataset (bias_in_bios' column names). They run on pandas frames built from the rows written into the fixture
(train and test splits, as load_dataset gives them), with train_set_size 40 and test_set_size 20 (so 10 and 5 texts
per quadrant) and SAEBench's random_seed 42 (and 0, to show the seed matters). The dataset holds a class with one
gender only, a class short of one gender in the train split only, one short in the test split only (both removed by
ensure_shared_keys), and a class whose second column holds 2 and 10 (groupby sorts them as numbers).

  /usr/bin/python3 bench/reference/saebench_draws_fixture.py --out tests/data/saebench_draws/draws.json
"""
import argparse
import json

import numpy as np
import pandas as pd

dataset_metadata = {
    "tiny": {
        "text_column_name": "hard_text",
        "column1_name": "profession",
        "column2_name": "gender",
        "column1_mapping": {"accountant": 0, "architect": 1},
        "column2_mapping": {"male": 0, "female": 1},
    }
}


def get_balanced_dataset(df, dataset_name, min_samples_per_quadrant, random_seed):
    text_column_name = dataset_metadata[dataset_name]["text_column_name"]
    column1_name = dataset_metadata[dataset_name]["column1_name"]
    column2_name = dataset_metadata[dataset_name]["column2_name"]

    balanced_data = {}

    for profession in df[column1_name].unique():
        prof_df = df[df[column1_name] == profession]
        unique_groups = prof_df[column2_name].unique()
        min_count = prof_df[column2_name].value_counts().min()

        if len(unique_groups) < 2:
            continue  # Skip professions with less than two groups

        if min_count < min_samples_per_quadrant:
            continue

        sampled_texts = []
        for _, group_df in prof_df.groupby(column2_name):
            sampled_group = group_df.sample(n=min_samples_per_quadrant, random_state=random_seed)
            sampled_texts.extend(sampled_group[text_column_name].tolist())

        balanced_data[str(profession)] = sampled_texts

        assert len(balanced_data[str(profession)]) == min_samples_per_quadrant * 2

    return balanced_data


def ensure_shared_keys(train_data, test_data):
    test_only_keys = set(test_data.keys()) - set(train_data.keys())
    train_only_keys = set(train_data.keys()) - set(test_data.keys())
    for key in test_only_keys:
        del test_data[key]
    for key in train_only_keys:
        del train_data[key]
    return train_data, test_data


def get_spurious_corr_data(df, column1_vals, column2_vals, dataset_name, min_samples_per_quadrant, random_seed):
    balanced_data = {}

    text_column_name = dataset_metadata[dataset_name]["text_column_name"]
    column1_name = dataset_metadata[dataset_name]["column1_name"]
    column2_name = dataset_metadata[dataset_name]["column2_name"]

    column1_pos = column1_vals[0]
    column1_neg = column1_vals[1]
    column2_pos = column2_vals[0]
    column2_neg = column2_vals[1]

    column1_pos_idx = dataset_metadata[dataset_name]["column1_mapping"][column1_pos]
    column1_neg_idx = dataset_metadata[dataset_name]["column1_mapping"][column1_neg]
    column2_pos_idx = dataset_metadata[dataset_name]["column2_mapping"][column2_pos]
    column2_neg_idx = dataset_metadata[dataset_name]["column2_mapping"][column2_neg]

    pos_neg = df[(df[column1_name] == column1_neg_idx) & (df[column2_name] == column2_pos_idx)][text_column_name].tolist()
    neg_neg = df[(df[column1_name] == column1_neg_idx) & (df[column2_name] == column2_neg_idx)][text_column_name].tolist()

    pos_pos = df[(df[column1_name] == column1_pos_idx) & (df[column2_name] == column2_pos_idx)][text_column_name].tolist()
    neg_pos = df[(df[column1_name] == column1_pos_idx) & (df[column2_name] == column2_neg_idx)][text_column_name].tolist()

    min_count = min(len(pos_neg), len(neg_neg), len(pos_pos), len(neg_pos), min_samples_per_quadrant)

    assert min_count == min_samples_per_quadrant

    assert len(pos_pos) > min_samples_per_quadrant * 2
    assert len(neg_neg) > min_samples_per_quadrant * 2

    combined_pos = pos_pos[:min_count] + pos_neg[:min_count]
    combined_neg = neg_pos[:min_count] + neg_neg[:min_count]
    pos_combined = pos_pos[:min_count] + neg_pos[:min_count]
    neg_combined = pos_neg[:min_count] + neg_neg[:min_count]
    pos_pos = pos_pos[: min_count * 2]
    neg_neg = neg_neg[: min_count * 2]

    rng = np.random.default_rng(random_seed)

    rng.shuffle(combined_pos)
    rng.shuffle(combined_neg)
    rng.shuffle(pos_combined)
    rng.shuffle(neg_combined)
    rng.shuffle(pos_pos)
    rng.shuffle(neg_neg)

    balanced_data["male / female"] = combined_pos
    balanced_data["female_data_only"] = combined_neg
    balanced_data["professor / nurse"] = pos_combined
    balanced_data["nurse_data_only"] = neg_combined
    balanced_data["male_professor / female_nurse"] = pos_pos
    balanced_data["female_nurse_data_only"] = neg_neg

    for key in balanced_data.keys():
        balanced_data[key] = balanced_data[key][: min_samples_per_quadrant * 2]
        assert len(balanced_data[key]) == min_samples_per_quadrant * 2

    return balanced_data


# (profession, gender) -> rows, per split
COUNTS = {
    "train": {(0, 0): 25, (0, 1): 22, (1, 0): 12, (1, 1): 24, (2, 0): 15, (3, 0): 20, (3, 1): 4,
              (4, 0): 12, (4, 1): 12, (5, 2): 11, (5, 10): 13},
    "test": {(0, 0): 12, (0, 1): 11, (1, 0): 6, (1, 1): 12, (2, 0): 8, (3, 0): 7, (3, 1): 6,
             (4, 0): 3, (4, 1): 8, (5, 2): 5, (5, 10): 6},
}


def rows(split, seed):
    cells = [cell for cell, n in COUNTS[split].items() for _ in range(n)]
    order = np.random.RandomState(seed).permutation(len(cells))
    return [{"hard_text": f"{split} bio {k} (profession {cells[i][0]}, gender {cells[i][1]})",
             "profession": int(cells[i][0]), "gender": int(cells[i][1])} for k, i in enumerate(order)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    train_rows, test_rows = rows("train", 7), rows("test", 8)
    train_df, test_df = pd.DataFrame(train_rows), pd.DataFrame(test_rows)
    train_set_size, test_set_size = 40, 20
    out = {"numpy": np.__version__, "pandas": pd.__version__, "train_set_size": train_set_size, "test_set_size": test_set_size,
           "train_rows": train_rows, "test_rows": test_rows, "balanced": [], "scr": []}
    for seed in [42, 0]:
        tr = get_balanced_dataset(train_df, "tiny", train_set_size // 4, seed)
        te = get_balanced_dataset(test_df, "tiny", test_set_size // 4, seed)
        tr, te = ensure_shared_keys(tr, te)
        out["balanced"].append({"seed": seed, "classes": list(tr.keys()), "train": tr, "test": te})
        out["scr"].append({"seed": seed, "column1_vals": ["accountant", "architect"], "column2_vals": ["male", "female"],
                           "train": get_spurious_corr_data(train_df, ("accountant", "architect"), ("male", "female"), "tiny", train_set_size // 4, seed),
                           "test": get_spurious_corr_data(test_df, ("accountant", "architect"), ("male", "female"), "tiny", test_set_size // 4, seed)})
    with open(a.out, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
