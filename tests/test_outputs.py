"""Outputs never clobber: not an input, not a read-only file, not an existing file unless the CLI is told
--overwrite (with what is written beside it), a name the file system takes; a created folder is said."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from sfumato.core.errors import BadParameter
from sfumato.core.jobs import check_writable
from sfumato.core.provenance import WriteGuard, atomic_write, guarded_writes


def _cli(capsys, *args: str) -> tuple[int, str]:
    from sfumato.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def _image(path: Path) -> bytes:
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return path.read_bytes()


def test_an_output_equal_to_the_init_image_is_refused_before_anything_runs(bundle_root, tmp_path, capsys,
                                                                          monkeypatch):
    from sfumato.core import loading

    monkeypatch.setattr(loading.ModelCache, "get", lambda *a, **k: pytest.fail("a model loaded"))
    init = tmp_path / "render.png"
    before = _image(init)
    for spelled in (str(init), str(tmp_path / "." / "render.png")):
        code, err = _cli(capsys, "image", "brick", "--bundle", "tiny-sd15", "--init", str(init), "-o", spelled,
                         "--overwrite")
        assert code == 2 and "is not allowed: a path that is not one of the job's own input files" in err
    assert init.read_bytes() == before


def test_the_cli_refuses_an_existing_output_unless_told_to_overwrite(bundle_root, tmp_path, capsys):
    out = tmp_path / "wall.png"
    out.write_bytes(b"mine")
    args = ["image", "brick", "--bundle", "tiny-sd15", "--steps", "2", "--seed", "1", "-o", str(out)]
    code, err = _cli(capsys, *args)
    assert code == 2 and f"{out} is there (pass --overwrite to replace it)" in err
    assert out.read_bytes() == b"mine"
    code, err = _cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert out.read_bytes() != b"mine" and Image.open(out).size


def test_read_only_files_are_never_replaced(bundle_root, tmp_path, capsys):
    out = tmp_path / "kept.png"
    out.write_bytes(b"read only")
    out.chmod(0o444)
    code, err = _cli(capsys, "image", "brick", "--bundle", "tiny-sd15", "-o", str(out), "--overwrite")
    assert code == 2 and "a path that is not a read-only file" in err
    with pytest.raises(BadParameter, match="read-only"):
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(b"new"))  # a late write is refused too
    assert out.read_bytes() == b"read only"


def test_a_created_folder_is_said(bundle_root, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "wall.png"
    code, err = _cli(capsys, "image", "brick", "--bundle", "tiny-sd15", "--steps", "1", "-o", str(out))
    assert code == 0 and out.is_file()
    assert f"sfumato: created folder {out.parent}" in err


def test_files_written_beside_the_output_count_too(tmp_path):
    glb, video = tmp_path / "chair.glb", tmp_path / "spin.gif"
    (tmp_path / "chair.json").write_text("{}")
    (tmp_path / "spin.gif.json").write_text("{}")
    with guarded_writes(WriteGuard(overwrite=False)):
        with pytest.raises(BadParameter, match="chair.json is there"):
            check_writable(glb, (".glb",))
        with pytest.raises(BadParameter, match="spin.gif.json is there"):
            check_writable(video, (".gif",))
    assert check_writable(glb, (".glb",)) == glb  # the worker and the add-on use fresh names: allowed there


def test_a_name_too_long_for_the_file_system_is_refused_first(tmp_path):
    with pytest.raises(BadParameter, match="a file name of at most"):
        check_writable(tmp_path / ("x" * 300 + ".png"))
    with pytest.raises(BadParameter, match="a file name of at most"):
        check_writable(tmp_path / ("y" * 240 + ".glb"), (".glb",))  # fits, but its .json does not with .part


def test_the_worker_refuses_to_write_over_an_input(bundle_root, tmp_path):
    from sfumato.core.worker import Worker
    from sfumato.kinds import KINDS

    depth = tmp_path / "depth.png"
    before = _image(depth)
    out = io.StringIO()
    worker = Worker(out, KINDS, device="cpu")
    worker.handle_line(json.dumps({"v": 1, "type": "submit", "id": "j", "kind": "image", "output": str(depth),
                                   "params": {"prompt": "x", "bundle": "tiny-sd15", "depth_image": str(depth)}}))
    worker.run(worker.jobs.get_nowait())
    (error,) = [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == "error"]
    assert error["code"] == "bad_parameter" and error["message"].startswith("output=")
    assert depth.read_bytes() == before and os.access(depth, os.R_OK)
