"""Figures of an evaluation: accuracy against GFLOPs per exit (the paper's Fig. 3) and, per image, every exit's
prediction, confidence and computed pixels (the paper's Fig. 5).

Matplotlib is imported inside the functions and drawn through its Agg canvas, without pyplot's global state, so
this works headless and in DataLoader-free worker processes alike.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

PAPER_POINTS = "assets/paper/paper_points.csv"  # inside the package, transcribed from the paper's Tables 1-2

METRIC_LABELS = {"miou": "mIoU (%)", "pckh": "PCKh@0.5 (%)"}
GFLOPS_LABEL = "GFLOPs per image (GMACs / 2^30, cumulative to the exit)"


@dataclass(frozen=True)
class PaperPoint:
    """One figure the paper reports: `exit` is the exit index in this package's model, or "mean" (over exits)."""

    model: str
    paper_label: str
    exit: str
    metric: str
    accuracy: float  # %
    gflops: float


def paper_points(model_name: str | None = None) -> list[PaperPoint]:
    """The paper's points, all or those of one registered model name (empty if the paper has no such model)."""
    text = resources.files("anytime_perception").joinpath(PAPER_POINTS).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    points = [PaperPoint(r["model"], r["paper_label"], r["exit"], r["metric"], float(r["accuracy"]),
                         float(r["gflops"])) for r in rows]
    return [p for p in points if model_name is None or p.model == model_name]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


# ----- Fig. 3 -------------------------------------------------------------------------------------------------------
def accuracy_vs_gflops_figure(model_name: str, metric: str, gflops: Sequence[float], accuracy: Sequence[float],
                              *, label: str | None = None, title: str | None = None,
                              paper: Sequence[PaperPoint] | None = None):
    """Accuracy (%) against GFLOPs, one point per exit joined in exit order, as the paper's Fig. 3; the paper's own
    points of the same model (default: looked up by `model_name`) are drawn beside ours. Returns the Figure."""
    if len(gflops) != len(accuracy) or not gflops:
        raise ValueError(f"need one GFLOPs and one accuracy value per exit, got {len(gflops)} and {len(accuracy)}")
    paper = paper_points(model_name) if paper is None else paper
    paper = [p for p in paper if p.metric == metric]
    figure = _new_figure(6.4, 4.8)
    axes = figure.add_subplot(1, 1, 1)
    ours = label or f"{model_name} (this evaluation)"
    if len(gflops) == 1:  # a one-exit baseline is a single point, drawn as the paper's red cross
        axes.plot(gflops, accuracy, "x", color="tab:red", markersize=10, mew=2, label=ours)
    else:
        axes.plot(gflops, accuracy, "o-", color="tab:blue", label=ours)
        for i, (x, y) in enumerate(zip(gflops, accuracy), start=1):
            axes.annotate(f"exit {i}", (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    per_exit = [p for p in paper if p.exit != "mean"]
    if per_exit:
        style = "x" if len(per_exit) == 1 else "s--"
        axes.plot([p.gflops for p in per_exit], [p.accuracy for p in per_exit], style, color="tab:gray",
                  mfc="none", label=f"paper: {per_exit[0].paper_label}")
    for p in (p for p in paper if p.exit == "mean"):
        axes.plot([p.gflops], [p.accuracy], "D", color="tab:gray", mfc="none",
                  label=f"paper: {p.paper_label}, mean over exits")
    axes.set_xlabel(GFLOPS_LABEL)
    axes.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes.set_title(title or f"{model_name}: accuracy vs. computation per exit")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return figure


def save_accuracy_vs_gflops(path: str | Path, model_name: str, metric: str, gflops: Sequence[float],
                            accuracy: Sequence[float], **kwargs) -> Path:
    """`accuracy_vs_gflops_figure` written as a PNG at `path`."""
    path = Path(path)
    accuracy_vs_gflops_figure(model_name, metric, gflops, accuracy, **kwargs).savefig(path, format="png")
    return path


# ----- Fig. 5 -------------------------------------------------------------------------------------------------------
@dataclass
class ExitPanel:
    """What one exit column of the Fig. 5 figure shows; maps may have any resolution (drawn over the image)."""

    index: int
    prediction_rgb: np.ndarray  # (H, W, 3) uint8: the colourised labels or the image with the skeleton drawn
    confidence: np.ndarray  # (h, w) float, the criterion's confidence
    computed: np.ndarray | None  # (h, w) bool, positions computed at this exit; None = all of them
    correct: np.ndarray | None = None  # (H', W') bool where the prediction is right (labelled pixels only)
    labelled: np.ndarray | None = None  # (H', W') bool where ground truth exists
    keypoints: np.ndarray | None = None  # (J, 2) x, y in image pixels, drawn with `skeleton`
    caption: str = ""


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w[, c]) map to `size` (class ids and masks must not blend)."""
    h, w = array.shape[:2]
    if (h, w) == tuple(size):
        return array
    rows = np.minimum(np.arange(size[0]) * h // size[0], h - 1)
    cols = np.minimum(np.arange(size[1]) * w // size[1], w - 1)
    return array[rows][:, cols]


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB through a (K, 3) uint8 palette (ids beyond it take the last)."""
    return colors[np.clip(labels, 0, len(colors) - 1)]


def overlay(image_rgb: np.ndarray, color_map: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """`color_map` over `image_rgb` (both uint8 RGB (H, W, 3)) with opacity `alpha`."""
    mixed = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * color_map.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def computed_pixels_rgb(panel: ExitPanel, size: tuple[int, int]) -> np.ndarray:
    """The bottom row of Fig. 5: positions this exit computed are white (or, with ground truth, white where right
    and black where wrong), positions it carried over from a confident earlier exit are green; unlabelled grey."""
    h, w = size
    out = np.full((h, w, 3), 255, np.uint8)
    if panel.correct is not None:
        correct = _resize_nearest(panel.correct.astype(np.uint8), size).astype(bool)
        out[~correct] = 0
        if panel.labelled is not None:
            out[~_resize_nearest(panel.labelled.astype(np.uint8), size).astype(bool)] = 128
    if panel.computed is not None:
        skipped = ~_resize_nearest(panel.computed.astype(np.uint8), size).astype(bool)
        out[skipped] = (60, 180, 75)
    return out


def exit_strip_figure(image_rgb: np.ndarray, panels: Sequence[ExitPanel], *, truth_rgb: np.ndarray | None = None,
                      skeleton: Sequence[tuple[int, int]] = (), title: str = "",
                      confidence_range: tuple[float, float] | None = (0.0, 1.0), confidence_label: str = "confidence"):
    """The paper's Fig. 4 + 5 for one image: a first column with the input (and the ground truth), then one column
    per exit with its prediction, confidence map (yellow = high) and computed pixels. `confidence_range` fixes the
    colour scale (None: from the maps, e.g. for heatmap peaks). Returns the Figure."""
    if not panels:
        raise ValueError("need at least one exit to draw")
    h, w = image_rgb.shape[:2]
    cols = len(panels) + 1
    figure = _new_figure(2.6 * cols + 0.8, 2.6 * 3 * max(h / w, 0.35) + 0.8)
    grid = figure.subplots(3, cols, squeeze=False)
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    for ax in grid.flat:
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlim(extent[0], extent[1]), ax.set_ylim(extent[2], extent[3])
    grid[0, 0].imshow(image_rgb, extent=extent)
    grid[0, 0].set_title("input", fontsize=9)
    if truth_rgb is not None:
        grid[1, 0].imshow(truth_rgb, extent=extent, interpolation="nearest")
        grid[1, 0].set_title("ground truth", fontsize=9)
    else:
        grid[1, 0].axis("off")
    grid[2, 0].axis("off")
    grid[2, 0].text(0.0, 0.5, "bottom row:\nwhite computed" + (" (right)\nblack wrong" if any(
        p.correct is not None for p in panels) else "") + "\ngreen carried over", transform=grid[2, 0].transAxes,
        fontsize=8, va="center")
    image_mappable = None
    for c, panel in enumerate(panels, start=1):
        grid[0, c].imshow(panel.prediction_rgb, extent=extent, interpolation="nearest")
        if panel.keypoints is not None:
            for a, b in skeleton:
                grid[0, c].plot(panel.keypoints[[a, b], 0], panel.keypoints[[a, b], 1], "-", color="yellow", lw=1.5)
            grid[0, c].plot(panel.keypoints[:, 0], panel.keypoints[:, 1], "o", color="red", ms=3)
        grid[0, c].set_title(f"exit {panel.index}" + (f"\n{panel.caption}" if panel.caption else ""), fontsize=9)
        low, high = confidence_range or (min(float(np.min(p.confidence)) for p in panels),
                                         max(float(np.max(p.confidence)) for p in panels))
        image_mappable = grid[1, c].imshow(panel.confidence, extent=extent, cmap="viridis", vmin=low, vmax=high,
                                           interpolation="nearest")
        share = 1.0 if panel.computed is None else float(np.mean(panel.computed))
        grid[2, c].imshow(computed_pixels_rgb(panel, (h, w)), extent=extent, interpolation="nearest")
        grid[2, c].set_title(f"computed {100 * share:.0f}%", fontsize=9)
    grid[0, 1].set_ylabel("prediction", fontsize=9)
    grid[1, 1].set_ylabel(confidence_label, fontsize=9)
    grid[2, 1].set_ylabel("computed pixels", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.colorbar(image_mappable, ax=list(grid[1, 1:]), shrink=0.9, label=confidence_label)
    return figure


def save_exit_strip(path: str | Path, image_rgb: np.ndarray, panels: Sequence[ExitPanel], **kwargs) -> Path:
    """`exit_strip_figure` written as a PNG at `path`."""
    path = Path(path)
    exit_strip_figure(image_rgb, panels, **kwargs).savefig(path, format="png")
    return path
