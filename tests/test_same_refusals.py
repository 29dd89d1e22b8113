"""The CLI, the worker and the add-on refuse the same bad values with the same sentence: all three check them
against the one request schema."""

from __future__ import annotations

import io
import json

import pytest

from test_addon_logic import load_addon

load_addon()
from sfumato_addon import request  # noqa: E402

# (kind, field, bad value): values each of the three clients can express (the panel's fields, typed values)
BAD = [
    ("image", "steps", 600), ("image", "steps", -1), ("image", "guidance", 60.0), ("image", "guidance", -0.5),
    ("image", "width", 100), ("image", "height", 4104), ("image", "seed", -1), ("image", "scheduler", "magic"),
    ("image", "seamless", "z"),
    ("texture", "views", 0), ("texture", "texture_size", 8), ("texture", "tile_size", 0.0),
    ("texture", "resolution", 2056), ("texture", "steps", 501),
    ("turntable", "frames", 1), ("turntable", "fps", 121), ("turntable", "elevation", 90.0),
    ("turntable", "window", 65), ("turntable", "strength", 0.0), ("turntable", "temporal", "sometimes"),
    ("asset", "iters", 0), ("asset", "resolution", 40), ("asset", "guidance", 250.0),
]
SETTINGS = {"image": request.ImageSettings, "texture": request.TextureSettings,
            "turntable": request.TurntableSettings, "asset": request.AssetSettings}
OUTPUT = {"image": "x.png", "texture": "x.glb", "turntable": "x.gif", "asset": "x.glb"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    path = tmp_path_factory.mktemp("mesh") / "box.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    return path


def _worker_says(kind: str, params: dict, output: str) -> str:
    from sfumato.core.worker import Worker
    from sfumato.kinds import KINDS

    out = io.StringIO()
    worker = Worker(out, KINDS, device="cpu")
    worker.handle_line(json.dumps({"v": 1, "type": "submit", "id": "j", "kind": kind, "params": params,
                                   "output": output}))
    worker.run(worker.jobs.get_nowait())
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    (error,) = [e for e in events if e["event"] == "error"]
    assert error["code"] == "bad_parameter"
    return error["message"]


def _cli_says(kind: str, params: dict, output: str, capsys) -> str:
    from sfumato.cli import main

    positional = [params.pop("mesh")] if "mesh" in params else []
    flags = [x for k, v in params.items() if k != "prompt" for x in (f"--{k.replace('_', '-')}", str(v))]
    assert main([kind, *positional, params["prompt"], "-o", output, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sfumato: error: ")
    return err[0].removeprefix("sfumato: error: ")


@pytest.mark.parametrize("kind, field, value", BAD)
def test_cli_worker_and_addon_refuse_alike(kind, field, value, mesh, tmp_path, capsys):
    settings = SETTINGS[kind](prompt="red brick", **{field: value})
    addon = str(request.problems(settings)[0])
    inputs = {"mesh": str(mesh)} if kind in ("texture", "turntable") else {}
    params = {"prompt": "red brick", field: value, **inputs}
    output = str(tmp_path / OUTPUT[kind])
    worker = _worker_says(kind, dict(params), output)
    cli = _cli_says(kind, dict(params), output, capsys)
    assert addon == worker == cli
    assert addon.startswith(f"{field}={value!r} is not allowed: ")
