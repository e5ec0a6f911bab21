"""Writes tests/data/saelens_windows/windows.json: the context windows SAELens cuts from hand-made token lists, and the
positions its seqpos_slice keeps, for TokenWindows.ConcatAndBatch and SeqposSlice to be compared with.

  /usr/bin/python3 bench/reference/saelens637_windows_fixture.py --out tests/data/saelens_windows/windows.json

Source: SAELens 6.37.6 (jbloomAus/SAELens, now decoderesearch/SAELens, commit
69c4c62b0dc24e5ba23fc773a0286149514b4a23). `_add_tokens_to_batch` and `concat_and_batch_sequences` are copied
verbatim from sae_lens/tokenization_and_batching.py (SAELens cannot be installed here; the functions only need
torch). The seqpos_slice positions are `len(range(context_size)[slice(*seqpos_slice)])` /
`list(range(context_size))[slice(*seqpos_slice)]` as sae_lens/training/activations_store.py (training_context_size) and
sae_lens/config.py (_validate_seqpos) compute them; a slice that keeps nothing is recorded with positions [] (SAELens
refuses it). Run with Debian's PyTorch 1.13.1 (python3-torch).

Each window case: sequences (1D token lists), context_size, begin_batch_token_id, begin_sequence_token_id,
sequence_separator_token_id, disable_concat_sequences, and windows, the list SAELens's generator yields.
"""
import argparse
import json
from collections.abc import Generator, Iterator

import torch


# ---- verbatim from sae_lens/tokenization_and_batching.py (SAELens 6.37.6) ----
def _add_tokens_to_batch(
    batch: torch.Tensor | None,
    tokens: torch.Tensor,
    offset: int,
    context_size: int,
    is_start_of_sequence: bool,
    begin_batch_token_id: int | None = None,
    begin_sequence_token_id: int | None = None,
    sequence_separator_token_id: int | None = None,
) -> tuple[torch.Tensor, int]:
    prefix_toks = []
    first_token = tokens[offset]
    # prepend the start of sequence token if needed
    if is_start_of_sequence and begin_sequence_token_id is not None:
        begin_sequence_token_id_tensor = torch.tensor(
            [begin_sequence_token_id], dtype=torch.long, device=tokens.device
        )
        if first_token != begin_sequence_token_id_tensor:
            prefix_toks.insert(0, begin_sequence_token_id_tensor)
            first_token = begin_sequence_token_id_tensor
    # We're at the start of a new batch
    if batch is None:
        # add the BOS token to the start if needed
        if begin_batch_token_id is not None:
            begin_batch_token_id_tensor = torch.tensor(
                [begin_batch_token_id], dtype=torch.long, device=tokens.device
            )
            if first_token != begin_batch_token_id_tensor:
                prefix_toks.insert(0, begin_batch_token_id_tensor)
                first_token = begin_batch_token_id_tensor
        tokens_needed = max(context_size - len(prefix_toks), 0)
        tokens_part = tokens[offset : offset + tokens_needed]
        batch = torch.cat([*prefix_toks[:context_size], tokens_part])
        return batch, offset + tokens_needed
    # if we're concatting batches, add the separator token as needed
    if sequence_separator_token_id is not None:
        sequence_separator_token_id_tensor = torch.tensor(
            [sequence_separator_token_id], dtype=torch.long, device=tokens.device
        )
        if first_token != sequence_separator_token_id_tensor:
            prefix_toks.insert(0, sequence_separator_token_id_tensor)
            first_token = sequence_separator_token_id_tensor
    tokens_needed = max(context_size - batch.shape[0] - len(prefix_toks), 0)
    prefix_toks_needed = max(context_size - batch.shape[0], 0)
    batch = torch.concat(
        [
            batch,
            *prefix_toks[:prefix_toks_needed],
            tokens[offset : offset + tokens_needed],
        ]
    )
    return batch, offset + tokens_needed


@torch.no_grad()
def concat_and_batch_sequences(
    tokens_iterator: Iterator[torch.Tensor],
    context_size: int,
    begin_batch_token_id: int | None = None,
    begin_sequence_token_id: int | None = None,
    sequence_separator_token_id: int | None = None,
    disable_concat_sequences: bool = False,
) -> Generator[torch.Tensor, None, None]:
    if disable_concat_sequences:
        if begin_batch_token_id and not begin_sequence_token_id:
            begin_sequence_token_id = begin_batch_token_id
        for sequence in tokens_iterator:
            if (
                begin_sequence_token_id is not None
                and len(sequence) >= context_size - 1
                and sequence[0] != begin_sequence_token_id
            ):
                begin_sequence_token_id_tensor = torch.tensor(
                    [begin_sequence_token_id],
                    dtype=torch.long,
                    device=sequence.device,
                )
                sequence = torch.cat(
                    [begin_sequence_token_id_tensor, sequence[: context_size - 1]]
                )
            if len(sequence) >= context_size:
                yield sequence[:context_size]
        return

    batch: torch.Tensor | None = None
    for tokens in tokens_iterator:
        if len(tokens.shape) != 1:
            raise ValueError(f"tokens.shape should be 1D but was {tokens.shape}")
        offset = 0
        total_toks = tokens.shape[0]
        is_start_of_sequence = True
        while total_toks - offset > 0:
            batch, offset = _add_tokens_to_batch(
                batch=batch,
                tokens=tokens,
                offset=offset,
                context_size=context_size,
                is_start_of_sequence=is_start_of_sequence,
                begin_batch_token_id=begin_batch_token_id,
                begin_sequence_token_id=begin_sequence_token_id,
                sequence_separator_token_id=sequence_separator_token_id,
            )
            is_start_of_sequence = False
            if batch.shape[0] == context_size:
                yield batch
                batch = None
# ---- end of the copy ----


# Documents as an ActivationsStore sees them (tokenized without BOS), with ids 1..9 for BOS/EOS/SEP-like tokens and
# text ids from 10; some documents already start with the special token, one is empty of text (a lone separator).
DOCS = [
    [10, 11, 12],
    [13, 14],
    [15, 16, 17, 18, 19, 20, 21],
    [1, 22, 23],
    [24],
    [2, 25, 26, 27, 28],
    [29, 30, 31, 32, 33, 34, 35, 36, 37, 38],
    [3],
    [39, 40, 41, 42],
]

# (context_size, begin_batch, begin_sequence, separator, disable_concat): ActivationsStore's combinations
# (begin_batch = bos if prepend_bos, no begin_sequence, separator = bos / eos / sep / an id / None) and the
# PretokenizeRunner's (begin_sequence given).
SETTINGS = [
    (4, 1, None, 1, False),     # prepend_bos, separator "bos" (SAELens's defaults)
    (4, None, None, 1, False),  # prepend_bos false, separator "bos"
    (5, 1, None, 2, False),     # separator "eos"
    (5, 1, None, 3, False),     # separator "sep"
    (5, 1, None, None, False),  # separator None
    (3, None, None, None, False),
    (6, 1, None, 7, False),     # separator an id
    (2, 1, None, 1, False),     # the separator alone fills what a window has left
    (7, 1, 4, 2, False),        # PretokenizeRunner: begin_batch, begin_sequence, separator
    (4, 1, None, 1, True),      # disable_concat_sequences with prepend_bos: BOS-prefixed, one window per document
    (3, 1, None, 1, True),
    (4, None, None, 1, True),   # disable_concat_sequences without BOS: documents of >= context_size tokens
    (5, 2, None, None, True),
    (4, 1, 3, None, True),      # begin_sequence wins over begin_batch in this mode
    (1, None, None, 1, True),
]

SLICES = [
    [None], [None, None], [1, None], [None, -1], [1, -1], [2, 100], [5, -5], [0, None, 2], [1, None, 3], [-3, None],
    [None, 3], [3], [-100, 2], [5, 2], [8, None], [None, -8], [2, 6, 4],
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cases = []
    for ctx, bb, bs, sep, disable in SETTINGS:
        windows = concat_and_batch_sequences(
            iter([torch.tensor(d, dtype=torch.long) for d in DOCS]), ctx,
            begin_batch_token_id=bb, begin_sequence_token_id=bs, sequence_separator_token_id=sep,
            disable_concat_sequences=disable)
        cases.append({
            "sequences": DOCS, "context_size": ctx, "begin_batch_token_id": bb, "begin_sequence_token_id": bs,
            "sequence_separator_token_id": sep, "disable_concat_sequences": disable,
            "windows": [w.tolist() for w in windows],
        })
    # A BOS of id 0 (Pythia's) with disable_concat_sequences: SAELens tests `if begin_batch_token_id` for truthiness, so
    # 0 is not used as the begin-sequence token and documents are cut without it (SaeSharp puts it: a documented difference).
    bos0_docs = [[d - 1 if d < 10 else d for d in doc] for doc in DOCS]  # special ids 1, 2, 3 become 0, 1, 2
    bos0 = concat_and_batch_sequences(iter([torch.tensor(d, dtype=torch.long) for d in bos0_docs]), 4,
                                      begin_batch_token_id=0, sequence_separator_token_id=0, disable_concat_sequences=True)
    bos0_case = {"sequences": bos0_docs, "context_size": 4, "begin_batch_token_id": 0, "begin_sequence_token_id": None,
                 "sequence_separator_token_id": 0, "disable_concat_sequences": True, "windows": [w.tolist() for w in bos0]}
    slices = []
    for s in SLICES:
        for ctx in (1, 8, 16):
            slices.append({"seqpos_slice": s, "context_size": ctx, "positions": list(range(ctx))[slice(*s)],
                           "training_context_size": len(range(ctx)[slice(*s)])})
    with open(a.out, "w") as f:
        json.dump({"saelens_version": "6.37.6", "saelens_commit": "69c4c62b0dc24e5ba23fc773a0286149514b4a23",
                   "torch_version": torch.__version__, "windows": cases, "bos0_disable_concat": bos0_case,
                   "seqpos_slices": slices}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
