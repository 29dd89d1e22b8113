"""A batch spec: one row per job, read from CSV, JSON Lines or JSON, checked whole before anything runs.

Columns are the request schema's field names (``core/schema.py``) plus ``kind`` (image, texture, video,
turntable, asset; default image) and ``name`` (the output's file stem, optionally with its extension). The JSON
form is an object with ``defaults`` (every row's starting values), ``rows`` (a list of rows) and ``product`` (column
-> list of values: every combination becomes a row, e.g. prompts x seeds x guidance values).

Every row is checked as the job's door will check it (types, bounds, files, what ties fields together) and
every problem is listed with its row and column, an unknown column with the closest known name. A row without a
seed gets one derived from its content, and each job's id is a hash of what it makes (kind, settings, bundle
identity), so running the same spec again makes the same files and finds the finished ones.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import schema

EXTRA_COLUMNS = ("kind", "name")
EXTENSIONS = {"image": (".png",), "texture": (".glb",), "video": (".mp4", ".gif"), "turntable": (".mp4", ".gif"),
              "asset": (".glb",)}
MAX_ROWS = 100_000


@dataclass
class BatchJob:
    """One row, checked: what the worker's door receives, and where its outputs go."""

    row: int  # 1-based, as a spreadsheet shows it (the header is row 0 in a CSV)
    kind: str
    params: dict[str, Any]  # the schema request's fields as given, seed filled in
    stem: str  # output file stem, unique in the batch
    suffix: str  # output extension
    bundle_identity: str  # the bundle's hash: a changed bundle makes new jobs
    id: str = ""

    @property
    def output(self) -> str:
        return self.stem + self.suffix


@dataclass
class SpecProblem:
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column}: {self.message}"


class SpecInvalid(Exception):
    """Everything wrong with a spec; nothing ran."""

    def __init__(self, problems: list[SpecProblem]):
        self.problems = problems
        lines = [str(p) for p in problems[:50]] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        super().__init__(f"the batch spec has {len(problems)} problem(s); nothing ran:\n  " + "\n  ".join(lines))


@dataclass
class Spec:
    jobs: list[BatchJob] = field(default_factory=list)
    source: str = ""


# ---- reading ---------------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``.csv``, ``.jsonl`` or ``.json`` spec, as given (CSV cells are text)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecInvalid([SpecProblem(0, "file", f"{path} cannot be read: {exc}")]) from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        return [{k.strip(): v for k, v in row.items() if k is not None and v not in (None, "")} for row in reader]
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SpecInvalid([SpecProblem(n, "line", f"not JSON: {exc.msg}")]) from None
        return rows
    if suffix == ".json":
        try:
            return expand(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SpecInvalid([SpecProblem(exc.lineno, "line", f"not JSON: {exc.msg}")]) from None
    raise SpecInvalid([SpecProblem(0, "file", f"{path.name}: a .csv, .jsonl or .json spec")])


def expand(data: Any) -> list[dict[str, Any]]:
    """The JSON form's rows: ``rows`` as given, then every combination of ``product``'s lists, each over
    ``defaults``."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict) or not set(data) <= {"defaults", "rows", "product"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise SpecInvalid([SpecProblem(0, "spec", f"{keys!r}: a list of rows, or an object with defaults, rows "
                                                  "and product")])
    defaults, rows, product = data.get("defaults", {}), data.get("rows", []), data.get("product", {})
    if not isinstance(defaults, dict) or not isinstance(rows, list) or not isinstance(product, dict) or \
            not all(isinstance(v, list) and v for v in product.values()):
        raise SpecInvalid([SpecProblem(0, "spec", "defaults is an object, rows a list, product an object of "
                                                  "non-empty lists")])
    out = [{**defaults, **r} if isinstance(r, dict) else r for r in rows]
    if product:
        names = list(product)
        out += [{**defaults, **dict(zip(names, combo))} for combo in itertools.product(*product.values())]
    return out


# ---- checking --------------------------------------------------------------------------------------------------
def known_columns() -> list[str]:
    names = list(EXTRA_COLUMNS)
    for cls in schema.KINDS.values():
        names += [f.name for f in schema.fields(cls) if f.name not in names]
    return names


def _coerce(cls: type, name: str, value: Any) -> Any:
    """A CSV cell as its field's type (text that does not parse stays text, so the schema names it)."""
    if not isinstance(value, str):
        return value
    base, optional = schema.unwrap(schema.field_types(cls)[name])
    text = value.strip()
    if optional and text.lower() == "none":
        return None
    try:
        if base is bool:
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower(),
                                                                                                      value)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if typing.get_origin(base) is tuple:  # several values in one cell: separated by ";"
            convert = typing.get_args(base)[0]
            return tuple(convert(x.strip()) for x in text.split(";") if x.strip())
    except ValueError:
        return value
    return value


def derived_seed(kind: str, params: dict[str, Any]) -> int:
    """A seed from the row's content, so a row without one makes the same file on every run."""
    digest = hashlib.sha256(json.dumps([kind, params], sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (schema.MAX_SEED + 1)


def job_id(kind: str, params: dict[str, Any], bundle_identity: str, output: str) -> str:
    canonical = json.dumps([kind, params, bundle_identity, output], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "untitled"


def check_row(n: int, row: Any, base: Path) -> tuple[BatchJob | None, list[SpecProblem]]:
    """One row as a job, or its problems."""
    from ..core import bundle as bundles
    from ..core.errors import SfumatoError

    if not isinstance(row, dict):
        return None, [SpecProblem(n, "row", f"{type(row).__name__}: an object of column -> value")]
    kind = row.get("kind", "image")
    if kind not in schema.KINDS:
        return None, [SpecProblem(n, "kind", f"{kind!r}: {schema.one_of(schema.KINDS)}")]
    cls = schema.KINDS[kind]
    known = {f.name for f in schema.fields(cls)}
    problems = []
    for column in row:
        if column in known or column in EXTRA_COLUMNS:
            continue
        owners = [k for k, c in schema.KINDS.items() if column in {f.name for f in schema.fields(c)}]
        if owners:
            problems.append(SpecProblem(n, str(column), f"not a {kind} column ({schema.one_of(owners)} jobs take "
                                                        "it): leave it empty in this row"))
        else:
            close = difflib.get_close_matches(str(column), known_columns(), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known_columns())}"
            problems.append(SpecProblem(n, str(column), f"unknown column{hint}"))
    params = {k: _coerce(cls, k, v) for k, v in row.items() if k in known}
    for name, f in ((f.name, f) for f in schema.fields(cls)):
        if schema.spec_of(f).path and isinstance(params.get(name), str) and params[name]:
            params[name] = str((base / params[name]).resolve())  # relative to the spec's folder
    if "seed" not in params:
        params["seed"] = derived_seed(kind, params)
    req, found = schema.parse(cls, params)
    found = found or schema.field_problems(req, files=True)
    problems += [SpecProblem(n, p.field, str(p)) for p in found]
    if problems:
        return None, problems
    try:
        bundle = bundles.resolve(req.bundle)
    except SfumatoError as exc:
        return None, [SpecProblem(n, "bundle", str(exc))]
    problems += [SpecProblem(n, p.field, str(p)) for p in schema.cross_problems(schema.complete(req,
                                                                                            bundle.default_steps))]
    name = str(row.get("name", "")).strip()
    stem, suffix = _output_name(kind, name, params)
    if suffix not in EXTENSIONS[kind]:
        problems.append(SpecProblem(n, "name", f"{name!r}: a {kind} is written as {' or '.join(EXTENSIONS[kind])}"))
    if name and (Path(stem).name != stem or stem.startswith(".")):
        problems.append(SpecProblem(n, "name", f"{name!r}: a file name, not a path"))
    if problems:
        return None, problems
    job = BatchJob(n, kind, params, stem, suffix, bundle.identity())
    job.id = job_id(kind, params, job.bundle_identity, job.output)
    if not name:
        job.stem = f"{_slug(str(params.get('prompt', kind)))}-{job.id[:8]}"
    return job, []


def _output_name(kind: str, name: str, params: dict[str, Any]) -> tuple[str, str]:
    suffix = Path(name).suffix.lower()
    if name and suffix:
        return name[:-len(suffix)], suffix
    return name, EXTENSIONS[kind][0]


def load(path: Path) -> Spec:
    """The spec at ``path``, every row checked; ``SpecInvalid`` lists all problems."""
    rows = read_rows(Path(path))
    if not rows:
        raise SpecInvalid([SpecProblem(0, "spec", "no rows: at least one job")])
    if len(rows) > MAX_ROWS:
        raise SpecInvalid([SpecProblem(0, "spec", f"{len(rows)} rows: at most {MAX_ROWS}")])
    first = 2 if Path(path).suffix.lower() == ".csv" else 1  # as a spreadsheet numbers a CSV's lines
    jobs, problems, seen = [], [], {}
    for n, row in enumerate(rows, first):
        job, found = check_row(n, row, Path(path).parent)
        problems += found
        if job is None:
            continue
        key = job.stem.lower()  # a job may write several files with its stem (a texture: .glb, .png, .json)
        if key in seen:
            what = "the same job as" if seen[key].id == job.id else "the same file as"
            problems.append(SpecProblem(n, "name", f"{job.output!r}: {what} row {seen[key].row}"))
            continue
        seen[key] = job
        jobs.append(job)
    if problems:
        raise SpecInvalid(problems)
    return Spec(jobs, str(path))

