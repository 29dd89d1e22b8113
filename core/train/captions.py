"""Family specs and captions for the procedural materials data set.

Two caption styles share only the canonical colour words ("red", "grey", ...) and nothing else:
``train`` templates, noun phrases, pattern phrases, colour synonyms and weathering words are used to
train; ``paraphrase`` has its own templates and synonyms, held out to test generalisation. Every
paraphrase noun phrase still contains a recognisable family word (brick, parquet, tiles, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STYLES = ("train", "reworded", "paraphrase")
# "reworded": the held-out sentence templates and joiners of "paraphrase", with the training vocabulary
# (nouns, patterns, colour and weathering words), i.e. new phrasings of words the model knows.


@dataclass(frozen=True)
class FamilySpec:
    """One material family: its allowed colours and its caption vocabulary per style."""

    name: str
    colours: tuple[str, ...]
    nouns: tuple[str, ...]  # train-style noun phrases
    para_nouns: tuple[str, ...]  # held-out noun phrases
    patterns: tuple[str, ...] = ()  # train-style pattern phrases ("running bond")
    para_patterns: tuple[str, ...] = ()
    pattern_required: bool = False  # the noun alone does not tell the family apart
    surface: str = "wall"  # wall | floor | roof | ground: steers the weathering
    colour_words: dict[str, tuple[str, ...]] = field(default_factory=dict)  # extra train synonyms
    para_colour_words: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def vocabulary(self, style: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(noun phrases, pattern phrases) of one caption style."""
        if style == "train":
            return self.nouns, self.patterns
        return self.para_nouns, self.para_patterns


ALL = ("red", "brown", "white", "grey", "black", "beige", "green", "blue")
WOOD = ("brown", "beige", "red", "grey", "black", "white")
METAL = ("grey", "black", "blue", "green", "red", "white")

FAMILIES: dict[str, FamilySpec] = {
    s.name: s
    for s in (
        FamilySpec(
            "running_bond_brick", ("red", "brown", "white", "grey", "black", "beige"),
            ("brick wall", "brickwork", "bricks", "brick facade"),
            ("brick masonry", "brick cladding", "wall built of brick"),
            ("running bond", "stretcher bond"), ("staggered joints", "half-offset courses"),
            pattern_required=True,
            colour_words={"red": ("terracotta",)}, para_colour_words={"red": ("rust-red",)},
        ),
        FamilySpec(
            "stack_bond_brick", ("red", "brown", "white", "grey", "black", "beige"),
            ("brick wall", "brickwork", "bricks", "brick facade"),
            ("brick masonry", "brick cladding", "wall built of brick"),
            ("stack bond", "stacked bond"), ("aligned vertical joints", "straight-stacked courses"),
            pattern_required=True,
            colour_words={"red": ("terracotta",)}, para_colour_words={"red": ("rust-red",)},
        ),
        FamilySpec(
            "herringbone_parquet", WOOD,
            ("herringbone parquet", "parquet floor", "wood parquet", "herringbone wood floor"),
            ("fishbone parquet", "parquet blocks in zigzag", "zigzag parquet flooring"),
            surface="floor",
        ),
        FamilySpec(
            "wood_planks", WOOD,
            ("wood planks", "wide plank floor", "wooden floorboards", "timber boards"),
            ("broad timber decking", "plank boarding", "wide boards of lumber"),
            surface="floor",
        ),
        FamilySpec(
            "board_formed_concrete", ("grey", "white", "beige", "black"),
            ("board-formed concrete", "board-marked concrete", "board formed concrete wall"),
            ("timber-shuttered concrete", "concrete cast against planks", "plank-textured concrete"),
        ),
        FamilySpec(
            "polished_concrete", ("grey", "white", "black", "beige"),
            ("polished concrete", "polished concrete floor", "smooth concrete floor"),
            ("burnished concrete slab", "ground and sealed concrete", "glossy concrete screed"),
            surface="floor",
        ),
        FamilySpec(
            "marble", ("white", "grey", "black", "green", "beige", "red", "brown"),
            ("marble", "veined marble", "marble slab"),
            ("marble stone with veining", "honed marble", "natural marble surface"),
            surface="floor",
        ),
        FamilySpec(
            "slate", ("grey", "black", "green", "blue", "red", "brown"),
            ("slate", "natural slate", "cleft slate stone"),
            ("riven slate", "split slate rock", "layered slate surface"),
            surface="floor",
        ),
        FamilySpec(
            "square_tiles", ALL,
            ("square ceramic tiles", "ceramic tiles", "square tiles", "tiled wall"),
            ("glazed square tiling", "porcelain tiles in a square grid", "grid of ceramic tiles"),
        ),
        FamilySpec(
            "hex_tiles", ALL,
            ("hexagonal tiles", "hex tiles", "hexagon tiling"),
            ("six-sided tiles", "honeycomb tiling", "hexagon mosaic"),
            surface="floor",
        ),
        FamilySpec(
            "roof_shingles", ("black", "grey", "brown", "red", "green", "blue"),
            ("roof shingles", "shingle roof", "roofing shingles"),
            ("shingled roofing", "overlapping shingle courses", "shingle roof covering"),
            surface="roof",
        ),
        FamilySpec(
            "corrugated_metal", METAL,
            ("corrugated metal", "corrugated sheet metal", "corrugated iron"),
            ("wavy metal sheeting", "rippled tin sheet", "corrugated steel cladding"),
        ),
        FamilySpec(
            "standing_seam_metal", METAL,
            ("standing seam metal", "standing-seam roof", "metal seam roofing"),
            ("raised-seam metal panels", "seamed sheet metal cladding", "standing seam panels"),
            surface="roof",
        ),
        FamilySpec(
            "stucco", ("white", "beige", "grey", "red", "brown", "blue", "green"),
            ("stucco", "plaster wall", "stucco wall", "rendered plaster"),
            ("textured plaster render", "trowelled plaster finish", "stucco facade coating"),
        ),
        FamilySpec(
            "gravel", ("grey", "beige", "white", "brown", "black", "red"),
            ("gravel", "pebbles", "gravel ground"),
            ("loose gravel stones", "crushed gravel chippings", "bed of gravel"),
            surface="ground",
        ),
        FamilySpec(
            "grass", ("green", "brown"),
            ("grass", "lawn", "grass turf"),
            ("meadow grass", "grass sward", "short-cut grass"),
            surface="ground",
            colour_words={"green": ("lush green",), "brown": ("dry", "dried")},
            para_colour_words={"green": ("verdant",), "brown": ("parched", "sunburnt")},
        ),
    )
}

# Colour synonyms beside the canonical name (which both styles use); disjoint between styles.
COLOUR_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "red": ("reddish",), "brown": ("dark brown", "brownish"), "white": ("off-white",),
        "grey": ("gray", "greyish"), "black": ("jet-black", "coal-black"),
        "beige": ("cream", "sand"), "green": ("greenish", "dark green"), "blue": ("bluish", "navy"),
    },
    "paraphrase": {
        "red": ("crimson", "scarlet"), "brown": ("chestnut", "umber"),
        "white": ("snow-white", "chalk-white"), "grey": ("ash-grey", "silver-grey"),
        "black": ("pitch-black", "ink-black"), "beige": ("buff", "sand-coloured"),
        "green": ("emerald", "moss-green"), "blue": ("cobalt", "azure"),
    },
}

WEATHER_WORDS: dict[str, tuple[str, ...]] = {
    "train": ("weathered", "aged", "old", "dirty", "worn"),
    "paraphrase": ("timeworn", "grimy", "weather-beaten", "stained"),
}

# How a pattern phrase is attached to the noun; {p} in a template receives it (or nothing).
PATTERN_JOINERS: dict[str, tuple[str, ...]] = {
    "train": (", {pat}", " in {pat}", " laid in {pat}"),
    "paraphrase": (" with {pat}", " ({pat})", " - {pat}"),
}

# {w}: weathering adjective + space (or nothing); {wc}: ", adjective" (or nothing).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "train": (
        "{w}{c} {n}{p}",
        "seamless texture of {w}{c} {n}{p}",
        "tileable {w}{c} {n} texture{p}",
        "{c} {n}{p}{wc}, seamless",
        "{n}{p}, {w}{c}",
        "close-up of {w}{c} {n}{p}",
        "{w}{c} {n}{p}, architectural material",
        "{c} {n}{wc}{p}, tileable texture",
        "a surface of {w}{c} {n}{p}",
        "{w}{n}{p} in {c}",
        "{n} finish{p}, {c}{wc}",
    ),
    "paraphrase": (
        "repeating swatch of {w}{c} {n}{p}",
        "{w}{n} coloured {c}{p}",
        "material sample: {w}{c} {n}{p}",
        "endless pattern of {c} {n}{p}{wc}",
        "top-down photo of {w}{c} {n}{p}",
        "{w}{n} in a {c} tone{p}",
        "wraparound {c} {n} map{p}{wc}",
        "{c}-toned {n}{p}, repeats without seams{wc}",
    ),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def colour_words(family: str, colour: str, style: str) -> tuple[str, ...]:
    """Every word a caption of ``style`` may use for ``colour`` (canonical name first)."""
    spec = FAMILIES[family]
    extra = (spec.colour_words if style == "train" else spec.para_colour_words).get(colour, ())
    return (colour,) + COLOUR_SYNONYMS[style][colour] + extra


def caption(labels: dict, rng: np.random.Generator, style: str = "train") -> str:
    """A caption for a sample's labels: template, synonyms and word order drawn from ``rng``."""
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; expected one of {STYLES}")
    spec = FAMILIES[labels["family"]]
    vocab = "train" if style == "reworded" else style  # whose words
    style = "paraphrase" if style == "reworded" else style  # whose sentence shapes
    nouns, patterns = spec.vocabulary(vocab)
    words = colour_words(spec.name, labels["colour"], vocab)
    c = words[0] if rng.random() < 0.55 else _pick(rng, words[1:])
    p = ""
    if patterns and (spec.pattern_required or rng.random() < 0.5):
        p = _pick(rng, PATTERN_JOINERS[style]).format(pat=_pick(rng, patterns))
    template = _pick(rng, TEMPLATES[style])
    w = wc = ""
    if labels.get("weathered"):
        word = _pick(rng, WEATHER_WORDS[vocab])
        if "{wc}" in template and ("{w}" not in template or rng.random() < 0.5):
            wc = ", " + word
        else:
            w = word + " "
    text = template.format(w=w, wc=wc, c=c, n=_pick(rng, nouns), p=p)
    return " ".join(text.split())


# Filler words for caption augmentation: generic texture-request words, none of them in the held-out
# ("paraphrase") templates, plus random letter strings (an unseen word reaches the text encoder as byte
# pieces, so the model learns to ignore pieces that carry no material or colour).
FILLER = ("high detail", "realistic", "pbr", "diffuse", "albedo", "4k", "texture", "surface", "flat",
          "even lighting", "scan", "hd", "clean", "render", "photoreal", "square", "uniform", "detailed")


def augment(text: str, rng: np.random.Generator) -> str:
    """A training-time rewording of ``caption``'s output that keeps its labels.

    Shuffles comma-separated parts, inserts filler words and random letter strings, and changes
    separators. Used on part of the training captions so the text encoder keys on the material and
    colour words and tolerates phrasings it never saw (the held-out templates stay unseen).
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) > 1 and rng.random() < 0.5:
        parts = [parts[i] for i in rng.permutation(len(parts))]
    for _ in range(int(rng.integers(0, 4))):  # at the start or end of a part: phrases stay whole
        if rng.random() < 0.5:
            new = _pick(rng, FILLER)
        else:
            new = "".join(chr(97 + int(k)) for k in rng.integers(26, size=int(rng.integers(3, 9))))
        i = int(rng.integers(len(parts)))
        parts[i] = f"{new} {parts[i]}" if rng.random() < 0.5 else f"{parts[i]} {new}"
    out = ", ".join(parts)
    if rng.random() < 0.3:
        out = out.replace(",", _pick(rng, (";", " /", " |", ".", "")))
    return " ".join(out.split())


def prompt_set(style: str, n_per_family: int, seed: int) -> list[dict]:
    """``n_per_family`` prompts per family, cycling through a shuffled order of its colours."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for name, spec in FAMILIES.items():
        order = [spec.colours[i] for i in rng.permutation(len(spec.colours))]
        for k in range(n_per_family):
            labels = {"family": name, "colour": order[k % len(order)],
                      "weathered": bool(rng.random() < 0.3)}
            out.append({"prompt": caption(labels, rng, style),
                        "family": name, "colour": labels["colour"]})
    return out


def corpus(n: int, seed: int) -> list[str]:
    """``n`` train-style captions over random families, colours and weathering (tokenizer text)."""
    rng = np.random.default_rng(seed)
    names = list(FAMILIES)
    out = []
    for _ in range(n):
        spec = FAMILIES[_pick(rng, names)]
        labels = {"family": spec.name, "colour": _pick(rng, spec.colours),
                  "weathered": bool(rng.random() < 0.5)}
        out.append(caption(labels, rng, "train"))
    return out
