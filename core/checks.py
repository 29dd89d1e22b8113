"""The one place a request is checked and completed: every field against the schema (and that the files it
reads exist), then the bundle's ``default_steps`` and a random seed filled in, then the checks that tie fields
together (which need the step count).

A job's door (``jobs.open_job``) calls ``checked``; a head called from Python (``image.generate``, ...) calls
``ensure_checked``, which passes a request the door already checked through as it is, so each request is checked
once wherever it starts.
"""

from __future__ import annotations

import weakref
from typing import Any

from . import lora, schema
from .errors import BadParameter

# the requests ``admit`` returned, by identity (a copy made with ``dataclasses.replace`` is not among them)
_ADMITTED: dict[int, weakref.ref] = {}


def raise_first(found: list[schema.Problem]) -> None:
    if found:
        raise BadParameter(found[0].field, found[0].value, found[0].allowed)


def admit(req: Any, bundle: Any = None) -> tuple[Any, Any]:
    """(``req`` checked and completed, its bundle); ``bundle`` (a ``bundle.Bundle``) defaults to the request's
    own, resolved once its field is known to be good."""
    from . import bundle as bundles

    raise_first(schema.field_problems(req, files=True))
    bundle = bundle if bundle is not None else bundles.resolve(req.bundle)
    req = schema.complete(req, bundle.default_steps)
    raise_first(schema.cross_problems(req))
    for entry in req.loras:  # the files exist, before any model loads
        lora.locate(schema.split_scaled(entry)[0], bundle)
    key = id(req)
    _ADMITTED[key] = weakref.ref(req, lambda _, key=key: _ADMITTED.pop(key, None))
    return req, bundle


def checked(req: Any, bundle: Any = None) -> Any:
    """``req`` checked and completed (``admit``)."""
    return admit(req, bundle)[0]


def ensure_checked(req: Any, bundle: Any) -> Any:
    """``req`` as it is when ``checked`` made it, else checked now (a library call starting here)."""
    ref = _ADMITTED.get(id(req))
    return req if ref is not None and ref() is req else checked(req, bundle)
