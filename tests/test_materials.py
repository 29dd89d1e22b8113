"""Procedural materials data: shapes, determinism, seamless tiling, captions and prompt sets."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sfumato.core.train import captions as cap
from sfumato.core.train.materials import (
    COLOURS, DATA_VERSION, FAMILIES, caption, colour_words, corpus, prompt_set, sample,
)

REQUIRED = {
    "running_bond_brick", "stack_bond_brick", "herringbone_parquet", "wood_planks",
    "board_formed_concrete", "polished_concrete", "marble", "slate", "square_tiles", "hex_tiles",
    "roof_shingles", "corrugated_metal", "standing_seam_metal", "stucco", "gravel", "grass",
}


def test_families_and_colours():
    assert DATA_VERSION == "materials-v1"
    assert REQUIRED <= set(FAMILIES)
    assert set(COLOURS) == {"red", "brown", "white", "grey", "black", "beige", "green", "blue"}
    for name, spec in FAMILIES.items():
        assert spec.name == name and spec.colours and set(spec.colours) <= set(COLOURS)
    assert FAMILIES["grass"].colours[0] == "green"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_colour_renders(name):
    for k, colour in enumerate(FAMILIES[name].colours):
        img, labels = sample(k, 64, name, colour)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert labels["family"] == name and labels["colour"] == colour
        assert img.std() > 2  # a texture, not a flat fill


@pytest.mark.parametrize("size", [64, 96, 128, 256])
def test_sizes(size):
    for seed in range(3):
        img, labels = sample(seed, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert labels["colour"] in FAMILIES[labels["family"]].colours


def test_deterministic_and_random_choice():
    a, la = sample(5, 64)
    b, lb = sample(5, 64)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, sample(6, 64)[0])
    drawn = {sample(s, 32)[1]["family"] for s in range(60)}
    assert len(drawn) >= 12
    img, labels = sample(3, 64, "hex_tiles")
    assert np.array_equal(img, sample(3, 64, "hex_tiles")[0])
    assert labels["colour"] in FAMILIES["hex_tiles"].colours
    assert isinstance(labels["weathered"], bool) and 0 <= labels["weathering"] <= 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        sample(0, 64, "cheese")
    with pytest.raises(ValueError):
        sample(0, 64, "grass", "blue")
    with pytest.raises(ValueError):
        sample(0, 100)


def _seam_ratio(images: list[np.ndarray]) -> tuple[float, float]:
    """Wrap-around difference (last vs first column / row) over the mean difference between
    adjacent interior columns / rows, pooled over several images."""
    out = []
    for axis in (1, 0):
        wrap = sum(np.abs(np.take(a, -1, axis) - np.take(a, 0, axis)).mean() for a in images)
        inner = sum(np.abs(np.diff(a, axis=axis)).mean() for a in images)
        out.append(wrap / inner)
    return out[0], out[1]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_tiles_seamlessly(name):
    for size in (64, 128):
        images = [sample(s, size, name)[0].astype(np.float32) for s in range(8)]
        cols, rows = _seam_ratio(images)
        assert cols <= 1.5 and rows <= 1.5, (size, cols, rows)


@pytest.mark.parametrize("name", ["marble", "polished_concrete", "slate"])
def test_seam_check_catches_a_crop(name):
    """The same measure flags a non-periodic image (a 3/4 crop of a sample)."""
    images = [sample(s, 128, name)[0][:96, :96].astype(np.float32) for s in range(5)]
    assert min(_seam_ratio(images)) > 1.5


def test_colour_is_dominant():
    """The median pixel is closer to the named colour's hue family than to opposite ones."""
    for name, spec in FAMILIES.items():
        for colour in spec.colours:
            med = np.median(sample(1, 64, name, colour)[0].reshape(-1, 3).astype(float), 0)
            r, g, b = med
            lum = med.mean()
            if colour == "white":
                assert lum > 150, (name, med)
            elif colour == "black":
                assert lum < 75, (name, med)
            elif colour == "grey":
                assert 70 < lum < 190 and med.max() - med.min() < 40, (name, med)
            elif colour == "red":
                assert r > 1.6 * g and r > 1.6 * b, (name, med)
            elif colour == "green":
                assert g > r and g > b, (name, med)
            elif colour == "blue":
                assert b > r + 20 and b > g, (name, med)
            elif colour == "beige":
                assert lum > 120 and r > b + 15, (name, med)
            elif colour == "brown":
                assert lum < 140 and r > b + 20, (name, med)


def _spectrum_features(img: np.ndarray) -> np.ndarray:
    g = img.astype(np.float32).mean(-1)
    g = (g - g.mean()) / (g.std() + 1e-6)
    size = g.shape[0]
    power = np.abs(np.fft.fft2(g)) ** 2
    fy, fx = np.fft.fftfreq(size)[:, None] * size, np.fft.fftfreq(size)[None, :] * size
    rb = np.digitize(np.hypot(fx, fy), [0.5, 2, 4, 8, 16, 32])
    tb = (np.mod(np.arctan2(fy, fx), np.pi) / (np.pi / 4)).astype(int) % 4
    bins = np.zeros((7, 4))
    np.add.at(bins, (rb, tb), power)
    return np.log(bins[1:] + 1e-3).ravel()


def test_families_are_distinguishable():
    """A nearest-centroid classifier on colour-blind spectrum features beats chance by far."""
    names = sorted(FAMILIES)
    feats = {n: np.array([_spectrum_features(sample(s, 64, n)[0]) for s in range(12)]) for n in names}
    centroids = np.array([feats[n][:6].mean(0) for n in names])
    scale = np.concatenate([feats[n][:6] for n in names]).std(0) + 1e-6
    hits = sum(int(np.argmin((((f - centroids) / scale) ** 2).sum(1)) == i)
               for i, n in enumerate(names) for f in feats[n][6:])
    assert hits / (6 * len(names)) > 0.6


# ----------------------------------------------------------------------------- captions


def test_caption_vocabularies_are_disjoint():
    assert not set(cap.TEMPLATES["train"]) & set(cap.TEMPLATES["paraphrase"])
    assert not set(cap.PATTERN_JOINERS["train"]) & set(cap.PATTERN_JOINERS["paraphrase"])
    assert not set(cap.WEATHER_WORDS["train"]) & set(cap.WEATHER_WORDS["paraphrase"])
    for colour in COLOURS:
        train = set(cap.COLOUR_SYNONYMS["train"][colour])
        assert not train & set(cap.COLOUR_SYNONYMS["paraphrase"][colour])
    train_phrases = {p for s in FAMILIES.values() for p in s.nouns + s.patterns}
    for spec in FAMILIES.values():
        assert not set(spec.para_nouns + spec.para_patterns) & train_phrases
        for colour in spec.colours:
            assert not set(colour_words(spec.name, colour, "train")[1:]) & set(
                colour_words(spec.name, colour, "paraphrase"))
        # a paraphrase keeps a family word the train captions use
        train_words = {w for n in spec.nouns for w in n.split()}
        for noun in spec.para_nouns:
            assert set(noun.split()) & train_words, (spec.name, noun)


@pytest.mark.parametrize("style", ["train", "paraphrase"])
def test_captions_name_colour_family_and_weathering(style):
    rng = np.random.default_rng(0)
    other = "paraphrase" if style == "train" else "train"
    other_templates = {t.split("{")[0] for t in cap.TEMPLATES[other] if not t.startswith("{")}
    for name, spec in FAMILIES.items():
        nouns, patterns = spec.vocabulary(style)
        for colour in spec.colours:
            for weathered in (False, True):
                text = caption({"family": name, "colour": colour, "weathered": weathered}, rng, style)
                assert any(w in text for w in colour_words(name, colour, style)), text
                assert any(n in text for n in nouns), text
                if spec.pattern_required:
                    assert any(p in text for p in patterns), text
                said = [w for w in cap.WEATHER_WORDS[style] if re.search(rf"\b{w}\b", text)]
                assert bool(said) == weathered, text
                assert not any(text.startswith(t) for t in other_templates if t), text
    with pytest.raises(ValueError):
        caption({"family": "marble", "colour": "white"}, rng, "poetic")


def test_caption_labels_from_sample():
    _, labels = sample(11, 64)
    text = caption(labels, np.random.default_rng(1))
    assert any(w in text for w in colour_words(labels["family"], labels["colour"], "train"))


@pytest.mark.parametrize("style", ["train", "paraphrase"])
def test_prompt_set(style):
    prompts = prompt_set(style, 4, seed=3)
    assert prompts == prompt_set(style, 4, seed=3)
    assert len(prompts) == 4 * len(FAMILIES)
    for name, spec in FAMILIES.items():
        mine = [p for p in prompts if p["family"] == name]
        assert len(mine) == 4
        assert len({p["colour"] for p in mine}) == min(4, len(spec.colours))
        for p in mine:
            assert p["colour"] in spec.colours and isinstance(p["prompt"], str) and p["prompt"]
    train = {p["prompt"] for p in prompt_set("train", 4, seed=3)}
    para = {p["prompt"] for p in prompt_set("paraphrase", 4, seed=3)}
    assert not train & para


def test_corpus():
    texts = corpus(200, seed=0)
    assert len(texts) == 200 and texts == corpus(200, seed=0)
    assert len(set(texts)) > 150
    para_only = {w for ws in cap.COLOUR_SYNONYMS["paraphrase"].values() for w in ws}
    para_only |= set(cap.WEATHER_WORDS["paraphrase"])
    for text in texts:
        assert not any(f" {w} " in f" {text.replace(',', ' ')} " for w in para_only), text
