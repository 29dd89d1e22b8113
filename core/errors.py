"""Errors that teach: every failure a user can cause names the field, the value and what is allowed.

Each error has a stable ``code`` so the worker can put it into an ``error`` event and a client
(the Blender add-on) can react without parsing English.
"""

from __future__ import annotations

from typing import Any

from .schema import message


class SfumatoError(Exception):
    """Base of every error the engine reports to a user.

    ``code`` is machine readable (``bad_parameter``, ``bundle_corrupt``, ...), ``hint`` says what to
    do about it.
    """

    code = "error"

    def __init__(self, message: str, *, hint: str = "", code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message + (f" ({self.hint})" if self.hint else "")

    def to_event(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class BadParameter(SfumatoError):
    """A request field has a value outside what is allowed."""

    code = "bad_parameter"

    def __init__(self, field: str, value: Any, allowed: str, *, hint: str = ""):
        super().__init__(message(field, value, allowed), hint=hint)
        self.field = field
        self.value = value
        self.allowed = allowed


class BundleNotFound(SfumatoError):
    code = "bundle_not_found"


class BundleCorrupt(SfumatoError):
    """A bundle exists but a file in it is missing, truncated, mis-hashed or mis-shaped."""

    code = "bundle_corrupt"

    def __init__(self, path: Any, problem: str, *, hint: str = ""):
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = str(path)
        self.problem = problem


class PickleRefused(SfumatoError):
    code = "pickle_refused"

    def __init__(self, path: Any, *, can_allow: bool = True):
        """``can_allow``: the command that met it takes ``--allow-pickle`` (``bundle import`` does; jobs that read
        LoRAs and motion modules do not, so their hint says only what works)."""
        allow = (", or pass --allow-pickle (allow_pickle=True) to load it with torch.load(weights_only=True) if "
                 "you trust its source") if can_allow else (" with a tool you trust (for instance safetensors' "
                                                            "save_file on the loaded state dict); jobs load "
                                                            "safetensors only")
        super().__init__(
            f"{path}: refusing to load a pickled checkpoint; pickle files can run arbitrary code when "
            "loaded",
            hint="convert it to .safetensors" + allow,
        )
        self.path = str(path)


class Cancelled(SfumatoError):
    """Raised from a step callback to stop a job between two denoising steps."""

    code = "cancelled"

    def __init__(self, message: str = "cancelled by the user"):
        super().__init__(message)


class OutOfMemory(SfumatoError):
    code = "out_of_memory"


class ComponentMissing(SfumatoError):
    """A job needs a model component (e.g. a depth ControlNet) that the bundle does not have."""

    code = "component_missing"
