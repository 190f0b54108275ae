"""napari dock widget: the matting panel (the trimap tools: :mod:`._trimap_widget`).

A thin magicgui container: every computation lives in the library and in the Qt-free
job of :mod:`napari_hrmatt._job`. Matting runs in a napari ``thread_worker`` so the
viewer stays responsive; it reports progress per block and can be cancelled between
blocks, and it adds layers only when it has finished. Bad input ends in one napari
notification with the library's message.

The panel remembers its settings between sessions (a small JSON file in the user
config directory, :func:`settings_path`), replaces the previous run's result layers
instead of piling them up, and gives memory back when results are removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Layer
from napari.utils.notifications import show_error, show_info

from . import _layers
from ._job import Failure, MattingJob, Progress
from ._layers import RUN_KEY, is_output, layer_geometry
from ._threads import use_passive_wait
from ._widget_parts import (
    is_image,
    is_trimap_candidate,
    release_if_output,
    release_memory,
    reports_errors,
    set_status,
    status_label,
    track_layers,
    trimap_array,
    trimap_rank,
)
from .models import DEFAULT_MODEL

# Idle solver threads sleep instead of spinning and stealing the GUI's core; takes effect
# only if torch is not loaded yet (napari imports this module before any run).
use_passive_wait()

if TYPE_CHECKING:
    import napari

__all__ = ["MattingWidget"]

# Background colours offered for the composite preview (RGB in [0, 1]).
COMPOSITE_COLORS = {
    "none": None,
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "green": (0.0, 0.69, 0.31),
    "blue": (0.0, 0.28, 0.67),
}


# Pixels added around the visible part for "current view only" previews.
VIEW_MARGIN = 16

# Pixels a "current view only" preview solves (when the global size setting is larger):
# the visible part is matted at full resolution when it has at most this many pixels,
# else downsampled to it, in one global pass (docs/napari.md, "Preview").
PREVIEW_GLOBAL_SIZE = 250_000

# One line per model, shown under the model choice (unknown models: a generic line).
MODEL_HELP = {
    "ifm": "information-flow matting: a solver, no training; the best alpha here (the default)",
    "cf": "closed-form matting: a solver, no training; faster than ifm, a less accurate alpha",
    "hdmatt": "our small trained network: good on ~1 MP photos, weaker on high-resolution ones",
}

# napari's progress bar counts steps (global pass, alpha, cutout, composite) in these
# units each, so its total is known before the run starts and never changes.
STEP_UNITS = 100

DOCS = Path(__file__).resolve().parents[2] / "docs" / "napari.md"

# Settings remembered between sessions, with their defaults.
DEFAULTS = {
    "model": DEFAULT_MODEL,
    "device": "auto",
    "chunk": 512,
    "overlap": 0,
    "global_size": 1.0,
    "view_only": False,
    "cutout": False,
    "composite": "none",
    "replace": True,
}


def settings_path() -> Path:
    """The JSON file where the matting panel keeps its settings (user config dir)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-hrmatt", appauthor=False)) / "matting.json"


class MattingWidget(Container):
    """Estimate the alpha matte of an image layer from a trimap layer.

    Runs :func:`napari_hrmatt.engine.estimate_alpha` block by block in a thread
    worker; adds an alpha layer (and optionally a cutout and a composite preview)
    with the image's scale and translate when it finishes. With "replace previous
    result" (the default) the new layers take the place of the previous run's for the
    same image (and the same view); every output layer records the image, trimap and
    settings that made it in ``metadata["napari_hrmatt_run"]``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from .models import list_models

        super().__init__(labels=True)
        self._viewer = viewer
        self.worker = None
        self.job: MattingJob | None = None
        # Blocks computed per step (None: one per CPU core); cancel waits for a step.
        self.batch: int | None = None
        # Run stores kept per (image layer, trimap layer) for full runs: a rerun after a
        # trimap edit computes only the blocks the edit touched. Deleted at exit.
        self._run_dir: Path | None = None
        self._run_stores: dict[tuple[int, int], Path] = {}
        self._pbar = None
        self._latest: Progress | None = None
        self._updating = False
        self._started = 0.0
        self._loading = False
        self.image = ComboBox(
            label="image",
            choices=self._image_choices,
            tooltip="a 2D grey or RGB(A) image layer (uint8, uint16 or float in [0, 1])",
        )
        self.trimap = ComboBox(
            label="trimap",
            choices=self._trimap_choices,
            tooltip="Labels (0 unknown, 1 background, 2 foreground) or a grey 0/128/255 "
            "image, same size as the image; make one with 'Trimap tools'",
        )
        models = list_models()
        self.model = ComboBox(
            label="model",
            choices=models,
            value=DEFAULT_MODEL if DEFAULT_MODEL in models else models[0],
            tooltip="\n".join(f"{m}: {MODEL_HELP.get(m, 'a registered model')}" for m in models),
        )
        self.model_help = Label(value="")
        self.model_help.native.setWordWrap(True)
        self.weights = FileEdit(
            label="weights",
            mode="r",
            filter="*.pt",
            value="",
            visible=False,
            tooltip="your own weights file (hrmatt train --export); empty = the shipped one "
            "(shown for models that take weights)",
        )
        self.device = ComboBox(
            label="device",
            choices=["auto", "cpu", "cuda"],
            value="auto",
            tooltip="auto = CUDA when torch sees a GPU, else the CPU",
        )
        self.chunk = SpinBox(
            label="chunk (px)",
            value=512,
            min=32,
            max=8192,
            step=32,
            tooltip="block side of the full-resolution pass: larger blocks use more memory "
            "per core and cancel less often",
        )
        self.overlap = SpinBox(
            label="overlap (px)",
            value=0,
            min=0,
            max=2048,
            tooltip="context each block sees beyond its edge; 0 = derived from the model "
            "(recommended)",
        )
        self.global_size = FloatSpinBox(
            label="global size (MP)",
            value=1.0,
            min=0.01,
            max=64.0,
            step=0.25,
            tooltip="working size of the low-resolution global pass over the whole image, "
            "in megapixels: larger sees finer structure, costs more time",
        )
        self.view_only = CheckBox(
            text="current view only (quick preview)",
            value=False,
            tooltip="a quick look at the visible part (+16 px): solved in one pass at up to "
            f"{PREVIEW_GLOBAL_SIZE / 1e6:g} MP, so at full resolution once you zoom in far "
            "enough, coarser when zoomed out",
        )
        self.cutout = CheckBox(
            text="add cutout (RGBA)",
            value=False,
            tooltip="also estimate the foreground colours: an RGBA layer (colours + alpha)",
        )
        self.composite = ComboBox(
            label="composite over",
            choices=list(COMPOSITE_COLORS),
            value="none",
            tooltip="also show the foreground over a plain colour (to judge the edges)",
        )
        self.replace = CheckBox(
            text="replace previous result",
            value=True,
            tooltip="the new layers take the place of the previous run's for this image "
            "(and view); untick to keep every run",
        )
        self.run_button = PushButton(text="Run matting", tooltip="start (the viewer stays usable)")
        self.cancel_button = PushButton(
            text="Cancel",
            enabled=False,
            tooltip="stop after the blocks being computed now; no layer is added",
        )
        self.reset_button = PushButton(
            text="Reset to defaults", tooltip="the settings above back to their defaults"
        )
        self.status = status_label()
        self.help = Label(value=self._help_text())
        self.help.native.setOpenExternalLinks(True)
        self.help.native.setWordWrap(True)
        self.extend(
            [
                self.image,
                self.trimap,
                self.model,
                self.model_help,
                self.weights,
                self.device,
                self.chunk,
                self.overlap,
                self.global_size,
                self.view_only,
                self.cutout,
                self.composite,
                self.replace,
                self.run_button,
                self.cancel_button,
                self.reset_button,
                self.status,
                self.help,
            ]
        )
        self.model.changed.connect(self._on_model)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.reset_button.changed.connect(self.reset_settings)
        for name in DEFAULTS:
            getattr(self, name).changed.connect(self.save_settings)
        track_layers(viewer, self, on_removed=release_if_output)
        self.reset_choices()
        self.load_settings()
        self._on_model(self.model.value)

    # ------------------------------------------------------------------ choices

    def _image_choices(self, _widget=None):
        # Source images first; the plugin's outputs (cutouts...) last.
        layers = [ly for ly in self._viewer.layers if is_image(ly)]
        layers.sort(key=is_output)
        return [(ly.name, ly) for ly in layers]

    def _trimap_choices(self, _widget=None):
        layers = [ly for ly in self._viewer.layers if is_trimap_candidate(ly)]
        # Label layers first (the usual trimap), then grey images named like trimaps;
        # never the chosen image itself.
        layers.sort(key=trimap_rank)
        image = getattr(self, "image", None)
        chosen = image.value if image is not None else None
        return [(ly.name, ly) for ly in layers if ly is not chosen]

    @staticmethod
    def _help_text() -> str:
        if DOCS.is_file():
            return (
                f"<a href='{DOCS.as_uri()}'>Help: docs/napari.md</a> (hover a control for a tip)"
            )
        return "Help: docs/napari.md in the napari-hrmatt sources (hover a control for a tip)"

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict:
        """The current values of the remembered settings."""
        return {name: getattr(self, name).value for name in DEFAULTS}

    def save_settings(self, *_) -> None:
        """Write the settings to :func:`settings_path` (silently skipped if not writable)."""
        if self._loading:
            return
        path = settings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.settings(), indent=1))
        except OSError:
            pass

    def load_settings(self) -> None:
        """Restore the settings saved by an earlier session (unknown values are skipped)."""
        try:
            saved = json.loads(settings_path().read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict):
            self._apply(saved)

    def reset_settings(self, *_) -> None:
        """Every remembered setting back to its default (and remember that)."""
        self._apply(DEFAULTS)
        self.save_settings()

    def _apply(self, values: dict) -> None:
        self._loading = True
        try:
            for name, default in DEFAULTS.items():
                if name not in values:
                    continue
                with contextlib.suppress(ValueError, TypeError):  # e.g. a model now gone
                    getattr(self, name).value = type(default)(values[name])
        finally:
            self._loading = False

    # ------------------------------------------------------------------ the job

    def make_job(self) -> MattingJob:
        """Check the inputs and build the job (raises ValueError with a clear message)."""
        image = self.image.value
        if image is None:
            raise ValueError("no image layer: open an image and choose it under 'image'")
        trimap = self.trimap.value
        if trimap is None:
            raise ValueError(
                "no trimap layer: make one with 'Trimap tools' (new, from a mask, or import) "
                "and choose it under 'trimap'"
            )
        data, shape = _layers.image_data(image)
        tdata, labels = trimap_array(trimap)
        if tuple(tdata.shape) != shape:
            raise ValueError(
                f"trimap {trimap.name!r} is {tdata.shape[0]} x {tdata.shape[1]} pixels but image "
                f"{image.name!r} is {shape[0]} x {shape[1]}; make the trimap from this image "
                "with 'Trimap tools'"
            )
        geometry = layer_geometry(image)
        name = image.name
        global_size = int(round(self.global_size.value * 1e6))
        view = None
        if self.view_only.value:
            rows, cols = self._visible_slices(image, shape)
            data, tdata = data[rows, cols], tdata[rows, cols]
            geometry = geometry.shifted(rows.start, cols.start)
            name = f"{image.name} (view)"
            view = [rows.start, rows.stop, cols.start, cols.stop]
            global_size = min(global_size, PREVIEW_GLOBAL_SIZE)
        # Full runs that replace their previous result keep a run store (a preview's
        # crop changes with the view; kept results must not change under the user).
        store = self.run_store(image, trimap) if view is None and self.replace.value else None
        info = {
            "output": name,
            "image": image.name,
            "trimap": trimap.name,
            "view": view,
            "model": self.model.value,
            "weights": (self._model_options() or {}).get("weights"),
            "device": self.device.value,
            "chunks": int(self.chunk.value),
            "overlap": int(self.overlap.value) or None,
            "global_size": global_size,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return MattingJob(
            image=data,
            trimap=tdata,
            labels=labels,
            name=name,
            geometry=geometry,
            model=self.model.value,
            device=self.device.value,
            chunks=int(self.chunk.value),
            overlap=int(self.overlap.value) or None,
            global_size=global_size,
            model_options=self._model_options(),
            cutout=bool(self.cutout.value),
            background=COMPOSITE_COLORS[self.composite.value],
            batch=self.batch,
            preview=view is not None,
            store=store,
            info=info,
        )

    def run_store(self, image: Layer, trimap: Layer) -> Path:
        """The run store (a Zarr directory in a temporary folder) for this layer pair."""
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix="hrmatt-runs-"))
            # Deleted with the panel, or at exit (layers may still read it until then).
            weakref.finalize(self, shutil.rmtree, self._run_dir, ignore_errors=True)
        key = (id(image), id(trimap))
        if key not in self._run_stores:
            name = f"run-{len(self._run_stores)}.zarr"
            self._run_stores[key] = self._run_dir / name
        return self._run_stores[key]

    def _on_model(self, name: str) -> None:
        from .models import model_options

        self.weights.visible = "weights" in model_options(name)
        self.model_help.value = MODEL_HELP.get(name, "a registered model")

    def _model_options(self) -> dict | None:
        from .models import model_options

        path = str(self.weights.value or "")
        if path in ("", ".") or "weights" not in model_options(self.model.value):
            return None
        return {"weights": path}

    def _visible_slices(self, image: Image, shape) -> tuple[slice, slice]:
        corners = np.asarray(image.corner_pixels, float)
        if image.multiscale:  # corner_pixels are in the currently drawn level
            corners = corners * np.asarray(image.downsample_factors[image.data_level])
        # A margin gives the solver some context beyond the window's edge.
        return _layers.crop_to_view(corners, shape, margin=VIEW_MARGIN)

    @reports_errors
    def run(self, *_):
        """Start matting in a thread worker; returns the worker (None on bad input)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise ValueError("matting is already running: wait for it or press Cancel")
        job = self.make_job()
        worker = create_worker(
            job.steps,
            _start_thread=False,
            _connect={
                "yielded": self._on_progress,
                "returned": self._on_returned,
                "aborted": self._on_aborted,
                "errored": self._on_errored,
                "finished": self._on_finished,
            },
        )
        self.job, self.worker = job, worker
        self._latest = None
        self._started = time.perf_counter()
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        set_status(self.status, "starting…")
        worker.start()
        return worker

    def cancel(self, *_) -> None:
        """Stop after the blocks being computed now; no layer is added."""
        if self.worker is not None:
            set_status(self.status, "cancelling…")
            self.worker.quit()

    # ------------------------------------------------------------------ progress

    def describe(self, step: Progress) -> str:
        """The status line for a step: "global pass (3 s)", "alpha 3/12", ..."""
        key = step.description.split(":")[0]
        if step.step is None:
            return f"{key} ({time.perf_counter() - self._started:.0f} s)"
        if step.description.endswith("pyramid"):
            return f"{key} pyramid"
        return f"{key} {step.step[0]}/{step.step[1]}"

    def bar_position(self, step: Progress) -> tuple[int, int]:
        """``(n, total)`` of napari's progress bar: STEP_UNITS per step of the job's plan."""
        plan = self.job.plan if self.job is not None else [step.description]
        key = step.description.split(":")[0]
        index = plan.index(key) if key in plan else 0
        fraction = step.step[0] / step.step[1] if step.step and step.step[1] else 0.0
        return index * STEP_UNITS + int(fraction * STEP_UNITS), len(plan) * STEP_UNITS

    def _on_progress(self, step: Progress) -> None:
        if self.worker is None:  # a late event from a run that has ended
            return
        self._latest = step
        # Status first: updating napari's progress bar processes Qt events, so this
        # handler (and the run's "finished") may run again inside pbar.update().
        set_status(self.status, self.describe(step))
        if self._updating:
            return  # the outer call applies the latest step when update() returns
        self._updating = True
        try:
            while self.worker is not None and self._latest is not None:
                step = self._latest
                pbar = self._progress_bar()
                n, total = self.bar_position(step)
                pbar.set_description(f"hrmatt: {step.description}")
                if n > pbar.n:  # never backwards
                    pbar.update(n - pbar.n)  # may re-enter (events)
                if self._latest is step:
                    break
        finally:
            self._updating = False

    def _progress_bar(self):
        from napari.utils import progress

        if self._pbar is None:
            plan = self.job.plan if self.job is not None else ["alpha"]
            self._pbar = progress(total=len(plan) * STEP_UNITS, desc="hrmatt")
        return self._pbar

    # ------------------------------------------------------------------ results

    def _previous_outputs(self, output: str) -> list[Layer]:
        """The layers an earlier run added for the same output name (image or view)."""
        return [
            ly
            for ly in self._viewer.layers
            if is_output(ly) and ly.metadata.get(RUN_KEY, {}).get("output") == output
        ]

    def _on_returned(self, result) -> None:
        if isinstance(result, Failure):
            set_status(self.status, "failed")
            show_error(result.message)
            return
        seconds = time.perf_counter() - self._started
        index = None
        if self.replace.value and self.job is not None:
            old = self._previous_outputs(self.job.name)
            if old:
                index = min(self._viewer.layers.index(ly) for ly in old)
                for layer in old:
                    self._viewer.layers.remove(layer)
        added = []
        for data, kwargs, layer_type in result:
            kwargs["metadata"].setdefault(RUN_KEY, {})["seconds"] = round(seconds, 2)
            layer = getattr(self._viewer, f"add_{layer_type}")(data, **kwargs)
            if index is not None:  # where the previous result was
                self._viewer.layers.move(self._viewer.layers.index(layer), index)
                index += 1
            added.append(layer.name)
        roles = ", ".join(kw["metadata"]["napari_hrmatt"] for _, kw, _ in result)
        factor = (result[0][1]["metadata"].get(RUN_KEY) or {}).get("factor", 1)
        if factor > 1:
            roles += f" (preview at 1/{factor} resolution: zoom in for full detail)"
        report = self.job.report if self.job is not None else None
        if report is not None and report.reused:
            roles += f" (recomputed {report.computed} of {report.blocks} alpha blocks)"
        set_status(self.status, f"done in {seconds:.0f} s: {roles}")
        self.status.tooltip = f"done in {seconds:.1f} s: added {', '.join(added)}"

    def _on_aborted(self) -> None:
        if self.job is not None:
            self.job.discard()
        set_status(self.status, "cancelled")
        show_info("matting cancelled; no layer was added")

    def _on_errored(self, exc: Exception) -> None:
        # napari's worker already shows the error (with its traceback: this is
        # an unexpected failure, not bad input).
        if self.job is not None:
            self.job.discard()
        set_status(self.status, f"failed: {type(exc).__name__}")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            if self._latest is not None:
                # "finished" may run inside the last step's pbar update (Qt events):
                # show that step before closing, without processing events again.
                self._pbar.n = max(self._pbar.n, self.bar_position(self._latest)[0])
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.job = None
        self._latest = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        release_memory()
