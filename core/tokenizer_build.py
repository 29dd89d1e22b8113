"""Build CLIP-style byte-level BPE tokenizers offline.

A CLIP tokenizer is a vocabulary plus a list of merges. The vocabulary always holds the 256 byte
symbols (GPT-2's printable byte-to-unicode map), the same 256 with the end-of-word marker ``</w>``,
one token per merge, and the start/end tokens; with those base symbols no text ever becomes an
unknown token. Two sources of merges:

* ``train_merges(corpus)`` learns merges from our own captions (tiny test bundles, the embedded
  bundle), so frequent words become single tokens;
* ``clip_merges()`` reads the original CLIP merges shipped in ``assets/`` (MIT, from OpenCLIP), which
  single-file Stable Diffusion checkpoints need because they do not carry their tokenizer.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from functools import lru_cache
from pathlib import Path

START, END = "<|startoftext|>", "<|endoftext|>"
CLIP_BPE = Path(__file__).parent / "assets" / "clip_bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408


@lru_cache(maxsize=1)
def byte_symbols() -> list[str]:
    """The 256 unicode stand-ins for bytes, in CLIP's order (printable bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@lru_cache(maxsize=1)
def byte_to_symbol() -> dict[int, str]:
    """Each byte's stand-in, as CLIP's tokenizer maps bytes before merging (``byte_symbols`` lists them in
    vocabulary order, which is not byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    order = printable + [b for b in range(256) if b not in printable]
    return dict(zip(order, byte_symbols()))


def _word_symbols(word: str) -> tuple[str, ...]:
    table = byte_to_symbol()
    chars = [table[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + "</w>",)


def train_merges(corpus: list[str], num_merges: int = 2000, min_count: int = 2) -> list[str]:
    """Learn BPE merges from ``corpus`` (lower-cased, split like CLIP's pre-tokenizer, roughly)."""
    words = collections.Counter()
    for text in corpus:
        for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower()):
            words[_word_symbols(w)] += 1
    merges: list[str] = []
    vocab = dict(words)
    for _ in range(num_merges):
        pairs = collections.Counter()
        for symbols, count in vocab.items():
            for a, b in zip(symbols, symbols[1:]):
                pairs[a, b] += count
        if not pairs:
            break
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < min_count:
            break
        merges.append(f"{a} {b}")
        merged = {}
        for symbols, c in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        vocab = merged
    return merges


def clip_merges() -> list[str]:
    """The original CLIP merges (the first 48,894 lines after the header, as CLIP uses them)."""
    lines = gzip.open(CLIP_BPE, "rt", encoding="utf-8").read().split("\n")
    return lines[1 : CLIP_VOCAB_SIZE - 256 * 2 - 2 + 1]


def vocabulary(merges: list[str]) -> dict[str, int]:
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    tokens += [START, END]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(folder: Path, merges: list[str], *, pad_token: str = END, max_length: int = 77) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` as diffusers bundles ship them.

    ``pad_token``: SD 1.x pads with the end token; SD 2.x and SDXL's second tokenizer pad with ``!``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocabulary(merges), ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "do_lower_case": True,
        "bos_token": START,
        "eos_token": END,
        "unk_token": END,
        "pad_token": pad_token,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder
