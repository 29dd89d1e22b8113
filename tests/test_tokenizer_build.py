"""Tokenizers we build ourselves: merges learned from captions are used by transformers' CLIP tokenizer (a word
seen often becomes one token), and every byte still has a token."""

from __future__ import annotations

from transformers import CLIPTokenizer

from sfumato.core.tokenizer_build import byte_symbols, byte_to_symbol, train_merges, write_tokenizer


def test_learned_merges_make_frequent_words_single_tokens(tmp_path):
    corpus = ["red brick wall, running bond", "weathered red brick", "grey slate roof"] * 20
    write_tokenizer(tmp_path, train_merges(corpus, num_merges=80))
    tok = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert tok.tokenize("red brick wall") == ["red</w>", "brick</w>", "wall</w>"]
    assert len(tok("weathered red brick, slate").input_ids) <= 7  # start, 4 words and a comma, end
    assert tok.decode(tok("zebra ü").input_ids, skip_special_tokens=True) == "zebra ü"  # unseen: by bytes


def test_each_byte_maps_to_its_clip_symbol():
    table = byte_to_symbol()
    assert sorted(table) == list(range(256)) and set(table.values()) == set(byte_symbols())
    assert table[ord("e")] == "e" and table[ord(" ")] == "Ġ" and table[0] == "Ā"  # as CLIP's bytes_to_unicode
