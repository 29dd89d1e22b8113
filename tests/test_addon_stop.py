"""A way out of any job, in real Blender (``bpy``, headless, the timer driven by hand): a frozen engine (SIGSTOP)
is said in the panel ("has not answered for N s"), and the panel's Stop gives the UI back within its grace
period, keeping what was finished; the engine's estimate shows before the progress bar moves."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from test_addon_blender import NAME, Layout, _draw_main_panel, bpy, enabled, pump, runtime, scene  # noqa: F401

pytestmark = pytest.mark.usefixtures("enabled")


class Buttons(Layout):
    """``Layout`` that also notes the operators drawn, as ("op:<idname>", False)."""

    def __getattr__(self, name):
        call = super().__getattr__(name)

        def recorded(*args, **kwargs):
            if name == "operator":
                self.log.append((f"op:{args[0]}", False))
            out = call(*args, **kwargs)
            return Buttons(self.log) if isinstance(out, Layout) else out

        return recorded


def test_stop_gets_the_panel_back_from_a_frozen_engine_within_the_grace_period(scene, monkeypatch):
    engine = sys.modules[f"{NAME}.engine"]
    monkeypatch.setattr(engine, "STOP_GRACE", 2.0)
    monkeypatch.setattr(runtime(), "SILENT", 1.0)
    scene.sfumato.steps = 400
    assert bpy.ops.sfumato.image(mode="text", blocking="OFF") == {"FINISHED"}
    state = runtime().CURRENT
    pump(lambda: state.step >= 1 or not state.active)
    assert state.status == "running", state.message
    assert state.estimate and state.estimate["seconds"] > 0 and state.estimate["peak_bytes"] > 0
    pid = runtime().SESSION.client.proc.pid
    os.kill(pid, signal.SIGSTOP)  # frozen: no step, no heartbeat, no answer to a cancel
    try:
        pump(lambda: runtime().silence() is not None, timeout=10)
        lines = _draw_main_panel()
        assert any(alert and "The engine has not answered for" in text for text, alert in lines), lines
        buttons: list = []
        sys.modules[f"{NAME}.ui"].draw_progress(Buttons(buttons))
        assert ("op:sfumato.stop", False) in buttons
        started = time.monotonic()
        assert bpy.ops.sfumato.stop() == {"FINISHED"}
        assert "(stopping)" in state.status_lines()[0][0]
        pump(lambda: not state.active, timeout=10)
        took = time.monotonic() - started
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert took < 2.0 + 1.5, took
    assert state.status == "cancelled" and "did not answer the cancel and was ended" in state.message
    assert bpy.ops.sfumato.image.poll() and not runtime().silence()  # the UI is back
    scene.sfumato.steps = 2
    assert bpy.ops.sfumato.image(mode="text") == {"FINISHED"}  # on a fresh engine
    assert runtime().SESSION.client.proc.pid != pid


def test_the_estimate_shows_before_the_progress_moves():
    engine = sys.modules[f"{NAME}.engine"]
    state = engine.JobState(tag="image", status="running", stage="loading", started=time.monotonic() - 5)
    state.apply({"event": "estimate", "id": "j", "seconds": 420.0, "peak_bytes": 3 << 30, "text": "about 7 min, "
                 "3.0 GiB of memory at peak"})
    state.apply({"event": "an_event_of_a_newer_engine", "id": "j"})  # ignored, as old add-ons ignore estimate
    runtime().CURRENT = state
    try:
        lines = [text for text, _ in _draw_main_panel()]
    finally:
        runtime().CURRENT = None
    assert "0:05, estimated 7:00 in all" in lines and "Estimate: about 7 min, 3.0 GiB of memory at peak" in lines
