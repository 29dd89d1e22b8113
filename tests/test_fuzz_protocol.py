"""Protocol fuzzing: a few thousand hostile messages with a fixed seed, typed per field from the schema (wrong
types, out-of-range values, bad text, missing and unknown fields, for every kind), through an in-process worker.
Not one may end as an ``internal`` error, and the worker keeps answering. No model may load: every submit keeps
at least one field invalid, so each is refused at the door."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sfumato.core import schema

SEED, MESSAGES = 22, 3000
SUFFIX = {"image": ".png", "texture": ".glb", "video": ".gif", "turntable": ".mp4", "asset": ".glb",
          "upscale": ".png", "train_style": ".json"}
JUNK: list[Any] = [None, True, False, 0, -1, 1.5, 10**40, "", "x", [], [1], [[[]]], {}, {"a": 1}, float("nan"),
                   float("inf")]


def _bad_values(f, t, rng: random.Random) -> list[Any]:
    """Values of field ``f`` (type ``t``) that its spec does not allow: wrong types, out of range, bad text."""
    s = schema.spec_of(f)
    base, optional = schema.unwrap(t)
    values: list[Any] = list(JUNK) + ["a\0b", "\ud800", "é" * (s.max_chars + 1), "[" * 50]
    if s.lo is not None:
        values += [s.lo - 1, s.lo - 0.5, -1e300] + ([s.lo] if s.lo_open else [])
    if s.hi is not None:
        values += [s.hi + 1, s.hi + 0.25, 1e300]
    if s.multiple and s.lo is not None:
        values.append(int(s.lo) + 1)
    if schema.choices(base) is not None:
        values += ["magic", str(schema.choices(base)[0]).upper(), list(schema.choices(base))]
    if typing_tuple(base):
        values += [[], [s.hi + 1 if s.hi is not None else 1e9], [True], [[1.0]], [1.0] * 17, ["1"]]
    if s.path:
        values += ["/no/such/file" + (s.suffixes[0] if s.suffixes else ".png"), "relative/missing.obj"]
    bad = [v for v in values if not _valid(f, t, v)]
    rng.shuffle(bad)
    return bad


def typing_tuple(base: Any) -> bool:
    import typing

    return typing.get_origin(base) is tuple


def _valid(f, t, v: Any) -> bool:
    """Whether ``v`` would pass the door's check of this one field (files must exist)."""
    v = tuple(v) if isinstance(v, list) and typing_tuple(schema.unwrap(t)[0]) else v
    if not schema.value_ok(f, t, v):
        return False
    return not (schema.spec_of(f).path and isinstance(v, str) and not Path(v).is_file())


def _messages(rng: random.Random, mesh: str, out: Path) -> list[str]:
    """Submits of every kind with 1-3 bad fields, and protocol-level junk between them."""
    plans = {kind: (schema.fields(cls), schema.field_types(cls)) for kind, cls in schema.KINDS.items()}
    lines = []
    for i in range(MESSAGES):
        roll = rng.random()
        if roll < 0.08:  # not a submit at all
            lines.append(rng.choice(["", "not json", "{", "[]", "null", "5", "[" * 100_000, '{"v": 1}',
                                     json.dumps({"v": rng.choice(JUNK), "type": "info"}),
                                     json.dumps({"v": 1, "type": rng.choice(JUNK + ["launch"])}),
                                     json.dumps({"v": 1, "type": "cancel", "id": rng.choice(JUNK)}),
                                     json.dumps({"v": 1, "type": "release"})]))
            continue
        kind = rng.choice(list(plans)) if roll > 0.1 else rng.choice(JUNK + ["sculpt"])
        known = kind if isinstance(kind, str) and kind in plans else "image"
        fields, hints = plans[known]
        params: dict[str, Any] = {"prompt": rng.choice(["red brick", "é" * 50, "a" * 200])}
        if any(f.name == "mesh" and schema.spec_of(f).required for f in fields):
            params["mesh"] = mesh
        for f in rng.sample(fields, rng.randint(1, 3)):
            bad = _bad_values(f, hints[f.name], rng)
            if schema.spec_of(f).required and rng.random() < 0.15:
                params.pop(f.name, None)  # a required field missing
            else:
                params[f.name] = bad[0]
        if rng.random() < 0.05:
            params["colour"] = "red"  # an unknown field
        if not any(f.name not in params and schema.spec_of(f).required for f in fields) and \
                all(_valid(f, hints[f.name], params[f.name]) for f in fields if f.name in params):
            params["steps" if known != "asset" else "iters"] = -1  # stays invalid whatever was drawn
        output = str(out / f"o{i}{SUFFIX[known]}") if rng.random() > 0.1 else \
            rng.choice(JUNK + ["relative.png", str(out / ("n" * 300 + ".png")), str(out / "a\0b.png")])
        job_id = f"j{i}" if rng.random() > 0.05 else rng.choice(JUNK + ["j" * 5000 + str(i), "\ud800" + str(i)])
        msg = {"v": 1, "type": "submit", "id": job_id,
               "kind": kind, "params": params, "output": output,
               "preview_every": rng.choice([1, 0]) if rng.random() > 0.05 else rng.choice(JUNK)}
        if rng.random() < 0.03:
            msg["params"] = rng.choice(JUNK)
        lines.append(json.dumps(msg))
    return lines


def test_thousands_of_hostile_messages_get_clear_answers_and_no_internal_error(tmp_path, monkeypatch):
    from sfumato.core import loading
    from sfumato.core.worker import Worker
    from sfumato.kinds import KINDS

    monkeypatch.setattr(loading.ModelCache, "get", lambda *a, **k: pytest.fail("a model loaded"))
    mesh = tmp_path / "tri.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    out = io.StringIO()
    worker = Worker(out, KINDS, device="cpu")
    jobs = 0
    for line in _messages(random.Random(SEED), str(mesh), tmp_path):
        worker.handle_line(line)
        while not worker.jobs.empty():
            item = worker.jobs.get_nowait()
            if item == "release":
                worker.cache.release()
            else:
                jobs += 1
                worker.run(item)
    events = [json.loads(x) for x in out.getvalue().splitlines()]
    codes = Counter(e.get("code") for e in events if e["event"] == "error")
    finals = Counter(e["event"] for e in events if e["event"] in ("result", "cancelled", "error"))
    print(f"{MESSAGES} messages, {jobs} jobs run to the door, errors by code: {dict(codes)}")
    assert codes["internal"] == 0, [e for e in events if e.get("code") == "internal"][:3]
    assert finals["result"] == 0 and codes["bad_parameter"] > 1500 and jobs > 2000
    assert not list(tmp_path.glob("o*.*"))  # nothing written
    worker.handle_line(json.dumps({"v": 1, "type": "submit", "id": "last", "kind": "image",
                                   "params": {"prompt": "x", "steps": 0}, "output": str(tmp_path / "l.png")}))
    worker.run(worker.jobs.get_nowait())
    assert json.loads(out.getvalue().splitlines()[-1])["message"].startswith("steps=0 is not allowed")


def test_an_endless_line_is_skipped_in_bounded_pieces_and_answered(monkeypatch):
    from sfumato.core.worker import Worker, read_lines

    out = io.StringIO()
    worker = Worker(out, {}, device="cpu")
    stream = io.BufferedReader(io.BytesIO(b"x" * (5 << 20) + b"\n" + b'{"v": 1, "type": "cancel", "id": "a"}\n'))
    reads = []
    real = stream.readline
    monkeypatch.setattr(stream, "readline", lambda limit: reads.append(len(b := real(limit))) or b)
    lines = list(read_lines(stream, worker, limit=1 << 20))
    assert len(lines) == 1 and json.loads(lines[0])["id"] == "a"
    assert max(reads) <= 1 << 20  # never more than one bounded piece in memory
    (event,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert event["code"] == "line_too_long" and f"{(5 << 20) + 1} bytes" in event["message"]


# ---- the CLI's tracebacks found by fuzzing, each now a clear bad_parameter ------------------------------
def _png_header_only(path: Path, side: int) -> None:
    """A PNG whose header claims side x side pixels (a decompression bomb's shape), in a few hundred bytes."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_as_init_is_a_bad_parameter(bundle_root, tmp_path, capsys):
    from sfumato.cli import main
    from sfumato.core.errors import BadParameter
    from sfumato.core.image import open_image

    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 30000)
    with pytest.raises(BadParameter, match=r"init_image=.* is not allowed: an image of at most \d+ pixels"):
        open_image("init_image", str(bomb))
    _png_header_only(bomb, 12000)  # above PIL's limit, below twice it: PIL only warns, we refuse
    with pytest.raises(BadParameter, match="an image of at most"):
        open_image("init_image", str(bomb))
    assert main(["image", "x", "--bundle", "tiny-sd15", "--steps", "2", "--init", str(bomb),
                 "-o", str(tmp_path / "o.png")]) == 2
    assert "init_image=" in capsys.readouterr().err and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("kind, suffix", [("texture", ".glb"), ("turntable", ".gif")])
def test_a_ply_face_naming_a_missing_vertex_is_a_bad_parameter(tmp_path, kind, suffix, monkeypatch):
    from sfumato.core import loading
    from sfumato.core.worker import Worker
    from sfumato.kinds import KINDS

    monkeypatch.setattr(loading.ModelCache, "get", lambda *a, **k: pytest.fail("a model loaded"))
    ply = tmp_path / "broken.ply"
    ply.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                   "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
                   "0 0 0\n1 0 0\n0 1 0\n3 0 1 99\n")
    out = io.StringIO()
    worker = Worker(out, KINDS, device="cpu")
    worker.handle_line(json.dumps({"v": 1, "type": "submit", "id": "j", "kind": kind,
                                   "output": str(tmp_path / f"o{suffix}"),
                                   "params": {"prompt": "x", "mesh": str(ply), "steps": 2}}))
    worker.run(worker.jobs.get_nowait())
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["code"] == "bad_parameter" and "a face names vertex 99" in event["message"]


def test_a_corrupt_asset_state_is_a_bad_parameter(tmp_path):
    from sfumato.core.errors import BadParameter
    from sfumato.threed.asset import load_state

    state = tmp_path / "o.asset-state.safetensors"
    for damaged in (b"garbage" * 10, b"\x08" + b"\0" * 7 + b'{"rng": 1}'):
        state.write_bytes(damaged)
        with pytest.raises(BadParameter, match=r"state=.* is not allowed: a state file saved by a cancelled asset "
                                               r"run .*delete it to start over"):
            load_state(state, None, None, None, {})


# ---- refused before any model loads: a decompression bomb, a damaged asset state ------------------------
def _run_in_worker(kind: str, params: dict, output: Path, monkeypatch) -> dict:
    from sfumato.core import loading
    from sfumato.core.worker import Worker
    from sfumato.kinds import KINDS

    monkeypatch.setattr(loading.ModelCache, "get", lambda *a, **k: pytest.fail("a model loaded"))
    out = io.StringIO()
    worker = Worker(out, KINDS, device="cpu")
    worker.handle_line(json.dumps({"v": 1, "type": "submit", "id": "j", "kind": kind, "output": str(output),
                                   "params": params}))
    worker.run(worker.jobs.get_nowait())
    return json.loads(out.getvalue().splitlines()[-1])


@pytest.mark.parametrize("field", ["init_image", "depth_image"])
def test_a_decompression_bomb_is_refused_before_any_model_loads(bundle_root, tmp_path, monkeypatch, field):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 30000)
    event = _run_in_worker("image", {"prompt": "x", "bundle": "tiny-sd15", "steps": 2, field: str(bomb)},
                           tmp_path / "o.png", monkeypatch)
    assert event["code"] == "bad_parameter" and f"{field}=" in event["message"]
    assert "an image of at most" in event["message"] and not (tmp_path / "o.png").exists()
    with open(tmp_path / "d.npy", "wb") as fh:  # the header of a 30000² array of distances, and no data
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (30000, 30000)})
    event = _run_in_worker("image", {"prompt": "x", "bundle": "tiny-sd15", "steps": 2, "depth_image":
                                     str(tmp_path / "d.npy")}, tmp_path / "o.png", monkeypatch)
    assert event["code"] == "bad_parameter" and "not shape [30000, 30000]" in event["message"]


def test_a_corrupt_asset_state_is_refused_before_any_model_loads(bundle_root, tmp_path, monkeypatch):
    state = tmp_path / "o.asset-state.safetensors"
    for damaged in (b"garbage" * 10, b"\x08" + b"\0" * 7 + b'{"rng": 1}'):
        state.write_bytes(damaged)
        event = _run_in_worker("asset", {"prompt": "x", "bundle": "tiny-sd15", "iters": 2, "state": str(state)},
                               tmp_path / "o.glb", monkeypatch)
        assert event["code"] == "bad_parameter" and "state=" in event["message"]
        assert "delete it to start over" in event["message"]
