"""The texture head: rasterizer against trimesh ray casting, UV baking, both modes end to end on the tiny
bundle (with its depth ControlNet) and the embedded one, bad input, cancel, the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from sfumato.core.errors import BadParameter, Cancelled, ComponentMissing
from sfumato.core.checks import checked
from sfumato.core.jobs import JobContext
from sfumato.core.loading import ModelCache
from sfumato.threed.cameras import rig, sphere, view_prompt
from sfumato.threed.mesh import Mesh, ensure_uv, load_mesh
from sfumato.threed.raster import rasterize, rasterize_uv, sample_texture
from sfumato.kinds import run_job
from sfumato.threed.texture import TextureRequest, box_uv, push_pull, texel_visibility


def _scene_mesh() -> trimesh.Trimesh:
    """A sphere with a bar through it: occlusion, concave corners, two parts."""
    bar = trimesh.creation.box((1.2, 0.3, 0.3))
    bar.apply_translation((0.3, 0.6, 0.5))
    return trimesh.util.concatenate([trimesh.creation.icosphere(3), bar])


def _rays(cams, i: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through the pixel centres of camera ``i``."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    d = torch.stack([((xs + 0.5) / size * 2 - 1) / cams.focal, (1 - (ys + 0.5) / size * 2) / cams.focal,
                     -torch.ones(size, size)], -1).reshape(-1, 3)
    r = cams.world_to_cam[i, :3, :3]
    return cams.positions[i].expand(len(d), 3).numpy(), (d @ r).numpy()


def test_rasterizer_agrees_with_trimesh_ray_casting():
    pytest.importorskip("rtree")  # trimesh's ray caster needs it
    tm = _scene_mesh()
    v, f = torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces)
    mesh = Mesh(v, f)
    cams = rig(mesh.center, mesh.radius, views=4)
    size = 64
    frags = rasterize(cams, v, f, size)
    caster = trimesh.ray.ray_triangle.RayMeshIntersector(tm)
    agree, depth_err = [], []
    for i in range(len(cams)):
        origins, dirs = _rays(cams, i, size)
        locations, ray, tri = caster.intersects_location(origins, dirs, multiple_hits=False)
        ref = np.full(size * size, -1)
        ref[ray] = tri
        ours = frags.face[i].reshape(-1).numpy()
        agree.append((ref == ours).mean())
        forward = -cams.world_to_cam[i, 2, :3].numpy()
        ref_depth = (locations - origins[0]) @ forward
        ours_depth = frags.depth[i].reshape(-1).numpy()[ray]
        hit = ours[ray] >= 0
        depth_err.append(np.abs(ref_depth[hit] - ours_depth[hit]).max())
    print(f"face-id agreement with ray casting: {[round(a, 4) for a in agree]}, max depth error {max(depth_err):.2e}")
    assert min(agree) >= 0.995
    assert max(depth_err) < 1e-3


def test_uv_raster_covers_layout_and_texture_lookup_orientation():
    # one quad over the whole UV square: every texel inside; (u, v) = (0, 1) is the image's top-left
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.float32)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = v[:, :2].clone()
    frags = rasterize_uv(uv, f, 32)
    assert bool(frags.mask.all())
    points = frags.interpolate(v, f)[0]
    assert points[0, 0, 1] > 0.95 and points[-1, 0, 1] < 0.05  # top row of the image is v ≈ 1
    tex = torch.zeros(3, 8, 8)
    tex[0, 0, 0] = 1.0  # top-left texel red
    red = sample_texture(tex, torch.tensor([[[[0.5 / 8, 1 - 0.5 / 8]]]]), mode="nearest")
    assert red[0, 0, 0, 0] == 1.0


def test_texel_visibility_front_face_seen_back_face_hidden():
    tm = trimesh.creation.box((1.0, 1.0, 1.0))
    mesh = ensure_uv(Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces)))
    cams = rig(torch.zeros(3), mesh.radius, views=1, elevations=(0.0,), top=False)  # looks from +Z
    frags = rasterize(cams, mesh.vertices, mesh.faces, 64)
    texels = rasterize_uv(mesh.uv, mesh.faces, 64)
    vis, _ = texel_visibility(mesh, cams, frags, texels)
    normals = mesh.face_normals()[texels.face[0].clamp_min(0)]
    front = texels.mask[0] & (normals[..., 2] > 0.9)
    back = texels.mask[0] & (normals[..., 2] < -0.9)
    assert (vis[0][front] > 0.9).float().mean() > 0.9
    assert not bool((vis[0][back] > 0).any())


def test_push_pull_keeps_known_and_fills_the_rest():
    colour = torch.rand(3, 16, 16)
    known = torch.zeros(16, 16, dtype=torch.bool)
    known[4:8, 4:8] = True
    colour[:, 4:8, 4:8] = torch.tensor([0.2, 0.4, 0.6])[:, None, None]
    out = push_pull(colour, known)
    assert torch.equal(out[:, known], colour[:, known])
    assert torch.allclose(out[:, 0, 15], torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)  # one colour known: it fills


def test_box_uv_is_in_tiles_of_real_size():
    tm = trimesh.creation.box((4.0, 2.0, 1.0))
    mesh = box_uv(Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces)), tile_size=0.5)
    span = mesh.uv.max(0).values - mesh.uv.min(0).values
    assert torch.allclose(span, torch.tensor([8.0, 4.0]))  # 4 m wide front, 2 m high: 8 × 4 tiles


def test_rig_and_view_prompts():
    cams = rig(torch.zeros(3), 1.0, 8)
    assert len(cams) == 8 and cams.elevation[-1] > 89  # last: top view
    d = cams.positions.norm(dim=1)
    assert torch.allclose(d, d[0].expand_as(d))
    assert view_prompt("brick", 0, 15).endswith("front view")
    assert view_prompt("brick", 180, 15).endswith("back view")
    assert view_prompt("brick", 90, 89.9).endswith("overhead view")
    assert len(sphere(torch.zeros(3), 1.0, 20)) == 20
    with pytest.raises(BadParameter, match="views"):
        rig(torch.zeros(3), 1.0, 0)


# ---------------------------------------------------------------------------------------------- meshes
def test_load_mesh_flattens_scenes_and_keeps_uvs(tmp_path):
    a = trimesh.creation.box((1, 1, 1))
    b = trimesh.creation.box((1, 1, 1))
    scene = trimesh.Scene()
    scene.add_geometry(a, transform=trimesh.transformations.translation_matrix((3, 0, 0)))
    scene.add_geometry(b)
    path = tmp_path / "two.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert len(mesh.faces) == 24
    assert float(mesh.vertices[:, 0].max()) == pytest.approx(3.5)  # the node transform was applied


def test_bad_meshes_are_clear_errors(tmp_path):
    with pytest.raises(BadParameter, match="ending in one of"):
        load_mesh(tmp_path / "x.stl")
    with pytest.raises(BadParameter, match="existing"):
        load_mesh(tmp_path / "missing.obj")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(BadParameter) as exc:
        load_mesh(tmp_path / "points.obj")
    assert exc.value.field == "mesh"
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(BadParameter, match="degenerate|extent|non-zero area"):
        load_mesh(tmp_path / "flat.obj")
    trimesh.creation.icosphere(3).export(tmp_path / "big.obj")
    with pytest.raises(BadParameter, match="at most 100 faces"):
        load_mesh(tmp_path / "big.obj", max_faces=100)
    (tmp_path / "garbage.glb").write_bytes(b"not a mesh at all")
    with pytest.raises(BadParameter, match="readable"):
        load_mesh(tmp_path / "garbage.glb")


def test_mesh_warnings_degenerate_and_non_manifold(tmp_path):
    # three triangles on one edge (non-manifold) plus a zero-area one
    (tmp_path / "fin.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 -1 0\nv 0 0 1\nv 2 0 0\n"
                                      "f 1 2 3\nf 1 2 4\nf 1 2 5\nf 1 2 6\n")
    mesh = load_mesh(tmp_path / "fin.obj")
    text = " ".join(mesh.warnings)
    assert "degenerate" in text and "non-manifold" in text
    assert len(mesh.faces) == 3


# ------------------------------------------------------------------------------------------------ jobs
def _ctx(events: list, cancel_after: int | None = None) -> JobContext:
    cancel = threading.Event()

    def emit(event, **fields):
        events.append((event, fields))
        if cancel_after is not None and sum(1 for e, f in events if f.get("stage") == "texture") >= cancel_after:
            cancel.set()

    return JobContext("t", ModelCache(), "cpu", "fp32", cancel, emit, preview_every=0)


@pytest.fixture(scope="module")
def house(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mesh") / "house.obj"
    body = trimesh.creation.box((3.0, 1.5, 2.0))
    roof = trimesh.creation.cone(1.6, 1.0, sections=4)
    roof.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))
    roof.apply_translation((0, 0.75, 0))
    trimesh.util.concatenate([body, roof]).export(path)
    return path


@pytest.mark.parametrize("variant", ["sequential", "sync"])
def test_projection_job_on_tiny_bundle(sd15, house, tmp_path, variant):
    events: list = []
    params = {"mesh": str(house), "prompt": "red brick house", "bundle": str(sd15), "views": 3, "resolution": 64,
              "texture_size": 64, "steps": 3, "seed": 5, "variant": variant, "fill_views": 0}
    result = run_job("texture", params, tmp_path / "house.glb", _ctx(events))
    glb = trimesh.load(result["glb"], force="mesh")
    tex = np.asarray(glb.visual.material.baseColorTexture)
    assert tex.shape[:2] == (64, 64) and tex.std() > 0
    png_meta = json.loads(__import__("PIL.Image", fromlist=["Image"]).open(result["texture"]).text["sfumato"])
    assert png_meta["prompt"] == "red brick house" and png_meta["seed"] == 5
    assert png_meta["conditioning"] == "depth-controlnet" and png_meta["variant"] == variant
    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["metrics"]["views_coverage"] > 0.3  # 3 views: front, back, top
    assert any("xatlas" in w for w in result["warnings"])
    views = {f["view"] for e, f in events if f.get("stage") == "texture"}
    assert views == ({0, 1, 2} if variant == "sequential" else {0})
    # the same seed gives the same texture
    again = run_job("texture", params, tmp_path / "again.glb", _ctx([]))
    assert np.array_equal(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(again["texture"])),
                          np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(result["texture"])))


def test_later_views_leave_kept_texels_alone(sd15_models, house):
    """Texels an earlier view saw about as head-on as this one are kept: the next view adds no weight."""
    from sfumato.threed import texture as tx

    req = checked(TextureRequest(mesh=str(house), prompt="brick", views=2, resolution=64, texture_size=64, steps=2,
                                 seed=1, elevations=(10.0, 30.0), top=False))
    mesh = ensure_uv(load_mesh(house)).normalised()
    cams = rig(torch.zeros(3), 1.0, 2, elevations=(10.0, 30.0), top=False)
    scene = tx.build_scene(mesh, cams, 64, 64)
    first = tx.build_scene(mesh, cams[0], 64, 64)
    bake, _ = tx.project_sequential(sd15_models, req, first, 64, 1, None)
    before_colour, before_weight = bake.colour.clone(), bake.weight.clone()
    kept = bake.seen & (bake.best >= req.keep_threshold * scene.texel_vis[1])
    bake, _ = tx.project_sequential(sd15_models, req, scene, 64, 1, None, bake=bake, start=1)
    assert bool(kept.any()) and bool((bake.weight > before_weight).any())
    assert torch.equal(bake.weight[kept], before_weight[kept])
    assert torch.equal(bake.colour[:, kept], before_colour[:, kept])


def test_fill_views_raise_coverage(sd15, house, tmp_path):
    params = {"mesh": str(house), "prompt": "brick", "bundle": str(sd15), "views": 2, "resolution": 64,
              "texture_size": 64, "steps": 2, "seed": 1, "top": False}
    none = run_job("texture", {**params, "fill_views": 0}, tmp_path / "a.glb", _ctx([]))
    events: list = []
    some = run_job("texture", {**params, "fill_views": 3}, tmp_path / "b.glb", _ctx(events))
    assert some["metrics"]["views_coverage"] > none["metrics"]["views_coverage"] + 0.1
    assert max(f["view"] for e, f in events if f.get("stage") == "texture") >= 2


def test_material_job_with_embedded_bundle(house, tmp_path):
    result = run_job("texture", {"mesh": str(house), "prompt": "grey slate", "mode": "material", "tile_size": 0.5,
                                   "resolution": 64, "steps": 4, "seed": 3}, tmp_path / "m.glb", _ctx([]))
    glb = trimesh.load(result["glb"], force="mesh")
    span = glb.visual.uv.max(0) - glb.visual.uv.min(0)
    assert span.max() == pytest.approx(3.2 / 0.5, rel=0.01)  # the roof is 3.2 m across: 6.4 tiles of 0.5 m
    assert result["metadata"]["seamless"] == "xy" and result["metadata"]["bundle"] == "materials"
    assert result["mode"] == "material" and result["tile_size"] == 0.5
    from sfumato.core import fast

    # the provenance says whether the CPU's bfloat16 fast path ran (it does where this CPU has fast bfloat16)
    assert result["metadata"]["fast"] == "auto"
    assert ("unet_dtype" in result["metadata"]) == fast.cpu_bf16_helps()


def test_depth_required_but_bundle_has_none(house, sd15, tmp_path):
    import shutil

    from sfumato.cli import main

    bare = shutil.copytree(sd15, tmp_path / "no-controlnet")
    assert main(["bundle", "remove", str(bare), "controlnet-depth"]) == 0
    with pytest.raises(ComponentMissing, match="ControlNet"):
        run_job("texture", {"mesh": str(house), "prompt": "brick", "conditioning": "depth", "views": 2,
                              "resolution": 64, "steps": 2, "bundle": str(bare)}, tmp_path / "x.glb", _ctx([]))


@pytest.mark.parametrize("field,value,match", [
    ("views", 0, "1..64"), ("resolution", 100, "multiple of 8"), ("mode", "paint", "projection, material or sds"),
    ("prompt", "  ", "non-empty"), ("tile_size", 0, r"a number in \(0, 1000\]"), ("texture_size", 4, "16..8192"),
    ("variant", "all", "sequential or sync"), ("colour", "red", "unknown field"), ("fast", "turbo", "auto, on, off"),
    ("img2img_strength", 0.01, r"1/steps = 0\.0625 with steps=16"),  # no step would run (embedded: 16)
])
def test_bad_texture_settings(house, tmp_path, field, value, match):
    params = {"mesh": str(house), "prompt": "brick", field: value}
    if field == "img2img_strength":
        params["conditioning"] = "img2img"  # the embedded bundle has a depth ControlNet: auto would use it
    with pytest.raises(BadParameter, match=match) as exc:
        run_job("texture", params, tmp_path / "x.glb", _ctx([]))
    assert exc.value.field == field


def test_output_must_be_glb(house, tmp_path):
    with pytest.raises(BadParameter, match=r"\.glb"):
        run_job("texture", {"mesh": str(house), "prompt": "brick"}, tmp_path / "x.png", _ctx([]))


def test_cancel_between_views_leaves_no_partial_files(sd15, house, tmp_path):
    params = {"mesh": str(house), "prompt": "brick", "bundle": str(sd15), "views": 3, "resolution": 64,
              "texture_size": 32, "steps": 2, "seed": 1}
    with pytest.raises(Cancelled):
        run_job("texture", params, tmp_path / "c.glb", _ctx([], cancel_after=3))
    assert not list(tmp_path.glob("c*"))


def test_cli_texture(sd15, house, tmp_path, capsys):
    from sfumato.cli import main

    code = main(["texture", str(house), "white stucco", "-o", str(tmp_path / "cli.glb"), "--bundle", str(sd15),
                 "--views", "2", "--resolution", "64", "--texture-size", "32", "--steps", "2", "--seed", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "textured house.obj" in out and (tmp_path / "cli.glb").is_file() and (tmp_path / "cli.png").is_file()


def test_gutter_grows_islands_and_keeps_their_inside():
    from sfumato.threed.texture import gutter

    # one triangle in the middle of UV space
    uv = torch.tensor([[0.3, 0.3], [0.7, 0.3], [0.3, 0.7]])
    f = torch.tensor([[0, 1, 2]])
    inside = rasterize_uv(uv, f, 32)
    grown = gutter(inside, uv, f, rings=2)
    assert torch.equal(grown.face[0][inside.mask[0]], inside.face[0][inside.mask[0]])
    assert torch.equal(grown.bary[0][inside.mask[0]], inside.bary[0][inside.mask[0]])
    extra = grown.mask[0] & ~inside.mask[0]
    assert int(extra.sum()) > 0
    # the grown texels' barycentrics extrapolate the triangle: they reproduce the texel centres' UVs
    pts = grown.interpolate(uv, f)[0][extra]
    ys, xs = torch.nonzero(extra, as_tuple=True)
    centres = torch.stack([(xs + 0.5) / 32, 1 - (ys + 0.5) / 32], -1)
    assert torch.allclose(pts, centres, atol=1e-5)


def test_sds_mode_runs_cancels_with_saved_state_and_resumes(sd15, house, tmp_path):
    params = {"mesh": str(house), "prompt": "brick", "bundle": str(sd15), "mode": "sds", "iters": 4,
              "resolution": 64, "texture_size": 32, "seed": 2, "guidance": 10.0}
    state = tmp_path / "s.sds-state.safetensors"
    with pytest.raises(Cancelled):
        run_job("texture", params, tmp_path / "s.glb", _ctx([], cancel_after=2))
    assert state.is_file() and not (tmp_path / "s.glb").exists()
    events: list = []
    result = run_job("texture", params, tmp_path / "s.glb", _ctx(events))
    assert result["metrics"]["resumed_from"] == 3 and not state.exists()  # cancel kept all 3 finished steps
    steps = [f["step"] for e, f in events if f.get("stage") == "texture"]
    assert steps == [4]
    tex = np.asarray(trimesh.load(result["glb"], force="mesh").visual.material.baseColorTexture)
    assert tex.shape[:2] == (32, 32) and tex.std() > 0
