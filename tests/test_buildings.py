"""The procedural buildings of issue #19: the same seed gives the same sample, every building and roof type comes
up, colour, depth, normals and mask agree with each other, and the caption names what the picture shows."""

from __future__ import annotations

import numpy as np
import pytest

from sfumato.threed import building_render as br
from sfumato.threed import massing
from sfumato.threed.massing import BUILDINGS, KINDS, ROOFS, generate

SIZE = 96


@pytest.fixture(scope="module")
def samples() -> dict[str, br.Sample]:
    return {view: br.sample(seed, SIZE, view=view) for seed, view in enumerate(br.VIEWS)}


def test_the_same_seed_gives_the_same_sample():
    a, b, c = br.sample(5, 64), br.sample(5, 64), br.sample(6, 64)
    assert a.caption == b.caption and a.view == b.view
    for name in ("image", "depth", "normals", "mask"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.image, c.image)


def test_every_building_type_and_every_house_roof_comes_up():
    seen = {(s.main.type, s.main.roof) for s in (generate(seed) for seed in range(60))}
    assert {t for t, _ in seen} == set(BUILDINGS)
    assert {r for t, r in seen if t == "house"} == set(ROOFS)
    for kind in BUILDINGS:  # and each can be asked for
        for roof in ROOFS:
            scene = generate(1, kind, roof)
            assert (scene.main.type, scene.main.roof) == (kind, roof)


def test_scenes_are_in_metres_and_stand_on_the_ground():
    for seed in range(8):
        scene = generate(seed)
        b = scene.main
        low = min(float(p.vertices[:, 1].min()) for p in scene.parts)
        assert low == pytest.approx(0.0, abs=1e-4)  # nothing under the ground
        per_storey = (b.height - 0.3) / b.storeys
        assert b.type == "pavilion" or 2.5 < per_storey < 7.0, (b.type, b.height, b.storeys)
        kinds = {p.kind for p in scene.parts}
        assert {"ground", "roof"} <= kinds and kinds <= set(KINDS)
        for p in scene.parts:
            assert p.vertices.shape[1] == 3 and p.faces.max() < len(p.vertices)
            assert p.uv.shape == (len(p.faces), 3, 2)
            np.testing.assert_allclose(np.linalg.norm(p.normals, axis=1), 1.0, atol=1e-4)


def test_background_is_far_and_empty_and_nearer_is_brighter(samples):
    for view, s in samples.items():
        bg = s.mask == 0
        assert bg.any() and (~bg).any(), view
        assert np.array_equal(bg, s.depth == 0) and np.array_equal(bg, np.isinf(s.distance)), view
        assert (s.normals[bg] == 0).all()
        on = ~bg
        assert s.depth[on].min() == pytest.approx(0.1, abs=1e-4) and s.depth[on].max() == pytest.approx(1.0)
        order = np.argsort(s.distance[on], kind="stable")
        assert (np.diff(s.depth[on][order]) <= 1e-6).all(), view  # nearer pixels are brighter
        np.testing.assert_allclose(np.linalg.norm(s.normals[on], axis=-1), 1.0, atol=1e-3)
        assert (s.normals[on][:, 2] > -0.2).mean() > 0.99  # surfaces seen face the camera


def test_eye_level_sees_the_ground_right_under_the_camera(samples):
    s = samples["eye"]
    assert (s.mask[-1] == KINDS.index("ground")).mean() > 0.5  # the ground quad, clipped at the near plane
    assert (s.mask[-1] > 0).all()


def test_caption_names_materials_that_are_in_the_picture():
    for seed in range(6):
        scene = generate(seed)
        text = br.caption(scene)
        m = scene.main.materials
        assert text.split(",")[0].endswith(br._TYPES[scene.main.type])
        family, colour = m["roof"]
        assert f"{colour} {br._WORDS[family]} {scene.main.roof} roof" in text
        if scene.main.type != "pavilion":
            family, colour = m["walls"]
            assert f"{colour} {br._WORDS[family]} walls" in text
        assert any((p.kind, p.family, p.colour) == ("roof", *m["roof"]) for p in scene.parts)
        said = br.phrases(scene)
        short = br.sample(seed, 32).caption.split(", ")  # a training caption: a random subset, the same order
        assert said["roof"] in short and set(short) <= set(said.values())
        assert short == [v for v in said.values() if v in short]
        for word in ("brick", "slate", "gravel", "stucco", "shingle", "concrete", "marble", "timber"):
            if word in text:
                assert any(word in " ".join(f.nouns) for f in massing.FAMILIES.values())


def test_the_render_is_a_picture_not_a_flat_colour(samples):
    for view, s in samples.items():
        assert s.image.std() > 12, view
        assert len(np.unique(s.image.reshape(-1, 3), axis=0)) > 200, view
        assert len(np.unique(s.mask)) >= 4, view  # sky, ground and at least two parts of the building
        on = s.mask == KINDS.index("walls")
        if on.sum() > 50:  # a textured, shaded wall is not one colour
            assert s.image[on].std(0).max() > 1, view


def test_a_brick_tile_spans_its_courses():
    assert br.tile_metres({"family": "running_bond_brick", "courses": 12}) == pytest.approx(0.9)
    assert br.tile_metres({"family": "stucco"}) > 0.5


def test_bad_arguments_name_what_is_allowed():
    with pytest.raises(ValueError, match="one of"):
        generate(0, "castle")
    with pytest.raises(ValueError, match="one of"):
        br.sample(0, 64, view="worm")
