"""The tiny model's tokenizer: a word-level CLIP BPE tokenizer over a fixed vocabulary (the
prompt words and the class words), each word one token (a class of several words, "digit
zero", is several tokens). Its ``vocab.json`` and ``merges.txt``
are written here and loaded with ``CLIPTokenizer.from_pretrained`` (in transformers 5.x the
``vocab_file=`` constructor ignores the files silently)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from lthash.errors import LthashError

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
PROMPT_WORDS = ("a", "an", "photo", "of", "the", "picture", "image")


def train_word_bpe(words: Iterable[str]) -> list[tuple[str, str]]:
    """Learn BPE merges on ``words`` until each word is a single symbol.

    Greedy most-frequent-pair training (ties broken lexicographically), so encoding a
    training word with these merges replays its training segmentation: one token.
    """
    sequences = {word: list(word[:-1]) + [word[-1] + "</w>"] for word in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for seq in sequences.values():
            for pair in zip(seq, seq[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for word, seq in sequences.items():
            merged, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    merged.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            sequences[word] = merged


def normalise_words(words: Iterable[str]) -> list[str]:
    """Lower-case vocabulary words; an entry of several words ("english springer") adds each.
    Every word must be letters only (one CLIP pre-token)."""
    result = set(PROMPT_WORDS)
    for entry in words:
        for word in entry.lower().split():
            if not word.isalpha():
                raise LthashError(f"vocabulary word {word!r} must be letters only (no digits or punctuation)")
            result.add(word)
    return sorted(result)


FILLER_TOKEN = "<|filler{}|>"


def write_word_tokenizer(folder: str | os.PathLike, words: Iterable[str], max_length: int,
                         vocab_size: int | None = None) -> Path:
    """Write ``vocab.json``/``merges.txt``/``tokenizer_config.json`` of a word-level CLIP tokenizer.

    ``vocab_size`` pads the vocabulary with filler entries (no merge produces them, so no text
    encodes to one) to exactly that many tokens, the size of a real CLIP vocabulary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = normalise_words(words)
    merges = train_word_bpe(words)
    tokens = [BOS_TOKEN, EOS_TOKEN]
    for char in sorted({c for word in words for c in word}):
        tokens += [char, char + "</w>"]
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    if vocab_size is not None:
        if vocab_size < len(tokens):
            raise LthashError(f"tokenizer vocab_size {vocab_size} is below the {len(tokens)} tokens of its words")
        tokens += [FILLER_TOKEN.format(i) for i in range(vocab_size - len(tokens))]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length,
        "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "unk_token": EOS_TOKEN,
    }, indent=2))
    return folder


def build_word_tokenizer(words: Iterable[str], max_length: int = 16, vocab_size: int | None = None):
    """A CLIPTokenizer in which every word of ``words`` (and the prompt words) is one token
    (``vocab_size``: see :func:`write_word_tokenizer`)."""
    from transformers import CLIPTokenizer

    words = normalise_words(words)
    with tempfile.TemporaryDirectory(prefix="lthash-tok-") as tmp:
        write_word_tokenizer(tmp, words, max_length, vocab_size)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            raise LthashError(f"tokenizer build failed: word {word!r} became {ids}")
    return tokenizer
