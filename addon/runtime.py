"""The add-on's live state: one engine session, the current job, and the main-thread timer.

Interactive: a job's reader thread (``engine.Session.start``) puts events into a queue; ``tick``, a
``bpy.app.timers`` function, drains it on the main thread, updates the progress and the step
preview, and applies results. In background mode timers never run, so operators take the blocking
path instead (``engine.Session.run``); a test may drive ``tick`` by hand to exercise the
interactive path headless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bpy

from . import engine, scene_io

log = logging.getLogger("sfumato.addon")

SESSION = engine.Session()
CURRENT: engine.JobState | None = None  # the panel's job (the latest one started)
TASKS: list[engine.JobState] = []  # everything started asynchronously and not yet applied
CHECK: dict[str, Any] = {}  # the last "Check engine" outcome: {"info": {...}} or {"error": "..."}
LAST_MESSAGE: tuple[str, bool] | None = None  # a note for the panel (released, ...), alert flag
_previews = None  # bpy.utils.previews collection for the step preview
INTERVAL = 0.1
SILENT = 15.0  # seconds without a line from the engine (it sends a heartbeat every 5) before the panel warns
_redrawn = 0.0  # when ``tick`` last redrew without an event (the clock and the silence warning move on their own)


def busy() -> bool:
    return CURRENT is not None and CURRENT.active


def bundle_capability(name: str, key: str) -> list[str] | None:
    """A list the last Check engine said of bundle ``name`` (its ``controlnets``, its ``loras``); None when not
    known yet."""
    for caps in CHECK.get("info", {}).get("capabilities", []):
        if caps.get("name") == name:
            return list(caps.get(key, []))
    return None


def known_bundles() -> list[str]:
    return list(CHECK.get("info", {}).get("bundles", []))


def engine_check_lines() -> list[tuple[str, bool]]:
    if "error" in CHECK:
        return [(line, True) for line in engine.wrap(CHECK["error"], 90)]
    info = CHECK.get("info")
    if not info:
        return [("Checking...", False)] if CHECK.get("running") else [("Not checked yet", False)]
    lines = [(f"Engine {info.get('version')} (protocol {info.get('protocol')}) at {info.get('python', '?')}", False),
             (f"Device: {info.get('device')}, dtype {info.get('dtype')}", False),
             ("Bundles: " + (", ".join(info.get("bundles", [])) or "none found"), not info.get("bundles"))]
    for caps in info.get("capabilities", []):  # an engine older than the capabilities in info sends none
        for number, part in enumerate(engine.wrap(bundle_line(caps), 90)):
            lines.append(("    " + part if number else part, "error" in caps))
    return lines


def bundle_line(caps: dict[str, Any]) -> str:
    """One bundle's capabilities (the worker's ``info``, ``core/capabilities.py``) as one line of text."""
    if "error" in caps:
        return f"{caps.get('name')}: cannot tell what it can do: {caps['error']}"
    return (f"{caps.get('name')} ({caps.get('family')}, {caps.get('native_size')} px, "
            f"{caps.get('default_steps')} steps): " + ", ".join(caps.get("can", []))
            + ("; no " + ", no ".join(caps["cannot"]) if caps.get("cannot") else ""))


# ---- step preview -----------------------------------------------------------------------------------
def preview_icon(path: str | None) -> int:
    """An icon id for the step preview at ``path`` (0 when there is none)."""
    if not path or _previews is None:
        return 0
    if path not in _previews:
        _previews.clear()
        try:
            _previews.load(path, path, 'IMAGE')
        except (KeyError, RuntimeError):
            return 0
    return _previews[path].icon_id


# ---- the timer --------------------------------------------------------------------------------------
def apply_events() -> list[tuple[engine.JobState, dict[str, Any]]]:
    """Drain the session's queue and hand each job's final event to the finisher it carries; returns the
    events (for tests)."""
    events = SESSION.drain()
    TASKS[:] = [t for t in TASKS if t.active]
    for state, event in events:
        kind = event.get("event")
        if kind in FINAL_EVENTS and state.on_final is not None:
            state.on_final(state, kind)
    return events


FINAL_EVENTS = ("result", "error", "cancelled", "failed", "worker_exited")


def applying(finish: Callable[[engine.JobState], Any], what: str,
             note: Callable[[Any], str | None] = lambda done: None) -> Callable[[engine.JobState, str], None]:
    """A finisher that applies a job's result with ``finish`` (an undo step of its own; ``note`` says what was
    made, for the panel); when applying fails, the files are there and the panel says what went wrong."""
    def on_final(state: engine.JobState, kind: str) -> None:
        global LAST_MESSAGE
        if kind != "result":
            return
        try:
            done = finish(state)
        except Exception as exc:  # the result files are there; say what went wrong applying them
            log.exception("applying the %s result failed", what)
            state.status, state.message = "error", f"could not apply the {what}: {exc}"
            return
        _undo_push(f"Sfumato {what}")
        message = note(done)
        if message:
            LAST_MESSAGE = (message, False)

    return on_final


def check_done(state: engine.JobState, kind: str) -> None:
    """The finisher of "Check engine"."""
    CHECK.clear()
    CHECK.update({"info": state.result} if kind == "result" else {"error": state.message})


def release_done(state: engine.JobState, kind: str) -> None:
    """The finisher of "Release memory"."""
    global LAST_MESSAGE
    LAST_MESSAGE = ("GPU memory released", False) if kind == "result" else (state.message, True)


def _undo_push(message: str) -> None:
    """Make data created outside an operator an undo step of its own, so Ctrl-Z does not drop it."""
    if bpy.app.background:
        return
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:  # no window context (e.g. while a file loads): nothing to undo into
        pass


def tick() -> float | None:
    """The ``bpy.app.timers`` function: apply events, redraw (on events, and once a second while a job runs, for
    its clock and a silence warning), and keep running while work is pending."""
    global _redrawn
    import time

    events = apply_events()
    if events or (busy() and time.monotonic() - _redrawn > 1.0):
        _redrawn = time.monotonic()
        scene_io.redraw()
    return INTERVAL if TASKS or not SESSION.events.empty() else None


def silence() -> str | None:
    """The panel's warning while the running job's engine says nothing, not even its heartbeat: frozen (stopped,
    swapping, stuck in one long library call). None while it answers."""
    quiet = SESSION.silent_for()
    if not busy() or CURRENT is None or CURRENT.status == "starting" or quiet < SILENT:
        return None
    return (f"The engine has not answered for {int(quiet)} s: it may be frozen. Stop ends it after "
            f"{int(engine.STOP_GRACE)} s, keeping the finished files")


def stop() -> None:
    """Stop the panel's job for sure: cancel it, and end the engine if it has not stopped after
    ``engine.STOP_GRACE`` seconds (``engine.Session.stop``); the timer applies the end as for any job."""
    if CURRENT is None or not CURRENT.active:
        return
    CURRENT.stop_requested = True
    SESSION.stop(CURRENT, engine.STOP_GRACE)


def track(state: engine.JobState) -> engine.JobState:
    """Follow an asynchronous task until its events are applied."""
    TASKS.append(state)
    ensure_timer()
    return state


def run_job(config: engine.EngineConfig, kind: str, job: Any, title: str, on_event=None) -> engine.JobState:
    """Blocking: run one head's ``job`` (``imaging.Prepared``) to its result; the panel shows it unless
    it is already following a job it started itself."""
    global CURRENT
    state = engine.JobState(tag=kind, context={**job.context, "params": job.params}, title=title)
    if not busy():
        CURRENT = state
    state.result = SESSION.run(config, state, kind, job.params, job.output, on_event=on_event)
    return state


def start_job(config: engine.EngineConfig, kind: str, job: Any, title: str,
              on_final: Callable[[engine.JobState, str], None]) -> engine.JobState:
    """Interactive: start one head's ``job``, shown in the panel; ``tick`` hands its final event to ``on_final``."""
    global CURRENT, LAST_MESSAGE
    state = engine.JobState(tag=kind, context={**job.context, "params": job.params}, title=title, on_final=on_final)
    CURRENT, LAST_MESSAGE = state, None
    track(state)
    SESSION.start(config, state, kind, job.params, job.output, preview_every=1)
    return state


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=INTERVAL, persistent=True)


def register() -> None:
    global _previews
    import bpy.utils.previews

    _previews = bpy.utils.previews.new()


def unregister() -> None:
    global _previews, CURRENT, LAST_MESSAGE
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if CURRENT is not None and CURRENT.active:
        SESSION.cancel(CURRENT)
    SESSION.shutdown()
    while not SESSION.events.empty():
        SESSION.events.get_nowait()
    CURRENT, LAST_MESSAGE = None, None
    TASKS.clear()
    CHECK.clear()
    if _previews is not None:
        bpy.utils.previews.remove(_previews)
        _previews = None
