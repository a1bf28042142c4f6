"""The parameters of ``anytime_node``, described once (type, default, range or choices, description, whether they
can change at run time) and validated in one place.

The node declares every entry of :data:`PARAMETERS` with a ``ParameterDescriptor`` (so ``ros2 param describe``
shows the description, range and read-only flag), reads them into a typed :class:`Settings`, and runs
:func:`check` on every change: a bad value is rejected with a reason and the node keeps running. Ranges are also
enforced by rclpy itself; choices, cross-parameter rules and the per-camera parameters only by :func:`check`.

Per-camera parameters (``cameras.<name>.priority``, ``cameras.<name>.deadline_ms``) exist for each name in
``cameras``; :func:`camera_parameters` describes them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..models.execution import EXECUTION_NAMES
from ..runtime.policies import REGISTRY as POLICY_REGISTRY
from ..runtime.policies import Policies

#: The special ``checkpoint`` value meaning: no trained weights; draw untrained weights calibrated on the shipped
#: clip so that confidence masks and compute fractions are realistic (labels are meaningless).
CALIBRATED_UNTRAINED = "calibrated-untrained"
#: The ``checkpoint`` value meaning: the weights shipped inside the package for ``model`` (the person models).
SHIPPED_WEIGHTS = "pretrained"

CONFIDENCE_ENCODINGS = ("32FC1", "mono8")
MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any                       # also fixes the type (bool, int, float, str; list[str] via `kind`)
    description: str
    read_only: bool = False            # True: fixed after start-up (restart the node, or re-configure a lifecycle one)
    range: tuple[float, float] | None = None   # inclusive, for int and float parameters
    choices: tuple[str, ...] | None = None     # for string parameters
    kind: str | None = None            # "string_array" for list parameters

    @property
    def type_name(self) -> str:
        if self.kind:
            return self.kind
        return {bool: "bool", int: "integer", float: "double", str: "string"}[type(self.default)]


def _policy_names(kind: str) -> tuple[str, ...]:
    return tuple(POLICY_REGISTRY[kind])


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- model (public: model, checkpoint, device) ---
    ParamSpec("model", "adpc_hrnet_w18s_person_seg",
              "model name (`anytime-perception list`): *_seg models publish segmentation, *_pose models pose; "
              "the default is the shipped person model (background/person, trained on two clips)",
              read_only=True),
    ParamSpec("checkpoint", SHIPPED_WEIGHTS,
              f"weights: '{SHIPPED_WEIGHTS}' = the weights shipped with the package for `model` (the *_person_* "
              f"models); a weights file (e.g. the authors' Cityscapes checkpoint); '{CALIBRATED_UNTRAINED}' = no "
              "trained weights: untrained weights calibrated on the shipped clip so that masks and compute are "
              "realistic while labels are MEANINGLESS; '' = the network's initialisation (near-uniform outputs)",
              read_only=True),
    ParamSpec("device", "cpu", "torch device: cpu, cuda or cuda:N", read_only=True),
    ParamSpec("execution", "auto", "how masked convolutions run: 'auto' = the fastest measured backend for the "
              "device ('sparse' with its C++ extension on the CPU when it loads, else 'emulate'; on CUDA with Triton "
              "the faster of 'emulate' and 'triton', timed at warm-up at input_height x input_width, else "
              "'emulate'); 'sparse' computes only the pixels not yet confident (C++ kernels on CPU, the Triton tile "
              "kernels on CUDA when Triton imports, else PyTorch gather/scatter ops); 'triton' those GPU kernels "
              "by name; 'emulate' computes every pixel and masks, as the authors' code does (same outputs); the "
              "backend that runs is logged and in /diagnostics", read_only=True,
              choices=EXECUTION_NAMES),
    ParamSpec("input_height", 0, "frames are resized to input_height x input_width for the model (outputs cover "
              "the same field of view); 0 = each frame's own size", read_only=True, range=(0, 8192)),
    ParamSpec("input_width", 0, "see input_height; both 0 or both set", read_only=True, range=(0, 8192)),
    ParamSpec("torch_threads", 0, "PyTorch intra-op threads of this process; 0 = PyTorch's default",
              read_only=True, range=(0, 256)),
    # --- time and priority (public: deadline_ms, priority) ---
    ParamSpec("deadline_ms", 0.0, "budget per frame of the `image` input, measured from header.stamp; "
              "0 = no deadline", range=(0.0, 3_600_000.0)),
    ParamSpec("priority", 0, "priority of the `image` input's frames; larger runs first and preempts smaller",
              range=(-1000, 1000)),
    ParamSpec("cameras", [], "names of several camera inputs, each subscribing <name>/image (and "
              "<name>/image/compressed) and publishing under <name>/; not set or empty = one input on `image`",
              read_only=True, kind="string_array"),
    # --- runtime policies ---
    ParamSpec("policies.frames", "newest_wins", "what a newer frame of the same input does to older ones",
              choices=_policy_names("frames")),
    ParamSpec("policies.deadline", "predictive", "when a frame stops for its deadline",
              choices=_policy_names("deadline")),
    ParamSpec("policies.priority", "priority_edf", "which waiting job runs next and whether it preempts",
              choices=_policy_names("priority")),
    ParamSpec("policies.suspend", "drop", "whether work preempted by priority is kept and resumed",
              choices=_policy_names("suspend")),
    ParamSpec("policies.min_exits_before_preempt", 1, "newest_wins: exits a frame delivers before a newer frame "
              "of its input may preempt it", range=(0, 16)),
    ParamSpec("policies.max_queued", 16, "fifo frames: waiting frames kept per input", range=(1, 10000)),
    ParamSpec("policies.safety_factor", 1.0, "predictive: multiplies the predicted time to the next exit",
              range=(0.01, 100.0)),
    ParamSpec("policies.preempt", True, "priority_edf: a strictly higher priority preempts running work"),
    ParamSpec("policies.max_suspended", 2, "suspend: preempted jobs kept at most", range=(1, 64)),
    ParamSpec("policies.max_age_s", 1.0, "suspend: a kept job older than this (stamp to now) is dropped as stale",
              range=(0.001, 3600.0)),
    # --- input ---
    ParamSpec("subscribe_compressed", False, "also accept sensor_msgs/CompressedImage (JPEG, PNG) on "
              "image/compressed (use it instead of, not next to, a raw image publisher)", read_only=True),
    ParamSpec("max_stamp_skew_s", 10.0, "frames whose header.stamp is further than this from the node clock "
              "are counted (bad_stamp), warned about once, and timed from their arrival instead (deadlines, "
              "latencies); 0 = trust every stamp", range=(0.0, 1e9)),
    ParamSpec("max_image_pixels", 16_777_216, "input frames with more pixels are rejected (counted and logged)",
              range=(1, 1 << 28)),
    # --- outputs ---
    ParamSpec("per_exit_topics", False, "also publish every exit on exit_<k>/... and the final one on final/...",
              read_only=True),
    ParamSpec("lazy_outputs", True, "build image and marker outputs only while something subscribes to them "
              "(the segmentation / pose messages are always published)"),
    ParamSpec("output_size", "input", "size of the output images: 'input' = the input frame's size (masks resized "
              "back: labels and computed nearest, confidence bilinear; overlay on the input frame), 'exit' = the "
              "exit's own resolution, 1/4 of the model input (16x fewer bytes; overlay at the model input size); "
              "camera_info always matches", read_only=True, choices=("input", "exit")),
    ParamSpec("publish_overlay", True, "publish overlay/image (class colours or skeleton drawn on the input)"),
    ParamSpec("overlay_alpha", 0.5, "opacity of the class colours in overlay/image", range=(0.0, 1.0)),
    ParamSpec("confidence_encoding", "32FC1", "confidence images: 32FC1 (values in [0, 1]) or mono8 (0..255)",
              choices=CONFIDENCE_ENCODINGS),
    ParamSpec("keypoint_min_score", 0.0, "pose: keypoints below this score are left out of markers and overlay",
              range=(0.0, 1e6)),
    ParamSpec("marker_scale", 0.02, "pose_markers line width and sphere size, metres at unit depth",
              range=(1e-6, 10.0)),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics", range=(0.05, 3600.0)),
    # --- action ---
    ParamSpec("max_concurrent_goals", 4, "perceive action goals in flight at once; more are rejected",
              read_only=True, range=(1, 64)),
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}


def camera_parameters(camera: str, priority: int, deadline_ms: float) -> tuple[ParamSpec, ...]:
    """The per-camera parameters of camera ``camera``, defaulting to the node-wide values."""
    return (
        ParamSpec(f"cameras.{camera}.priority", int(priority),
                  f"priority of camera {camera!r}'s frames (default: priority)", range=(-1000, 1000)),
        ParamSpec(f"cameras.{camera}.deadline_ms", float(deadline_ms),
                  f"budget per frame of camera {camera!r} from header.stamp, 0 = none (default: deadline_ms)",
                  range=(0.0, 3_600_000.0)),
    )


def spec_of(name: str) -> ParamSpec | None:
    """The spec of a declared parameter name, including per-camera ones."""
    if name in SPECS:
        return SPECS[name]
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "cameras" and parts[2] in ("priority", "deadline_ms"):
        return {s.name.rsplit(".", 1)[1]: s for s in camera_parameters(parts[1], 0, 0.0)}[parts[2]]
    return None


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``spec`` (None when it is)."""
    kind = spec.type_name
    if kind == "bool":
        if not isinstance(value, bool):
            return f"{spec.name} must be true or false, got {value!r}"
        return None
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{spec.name} must be an integer, got {value!r}"
    elif kind == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{spec.name} must be a finite number, got {value!r}"
    elif kind == "string":
        if not isinstance(value, str):
            return f"{spec.name} must be a string, got {value!r}"
    elif kind == "string_array":
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{spec.name} must be a list of strings, got {value!r}"
        return _check_camera_names(list(value))
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        return f"{spec.name} must lie in [{spec.range[0]:g}, {spec.range[1]:g}], got {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    return None


def _check_camera_names(names: list[str]) -> str | None:
    for name in names:
        if not name or not all(c.isalnum() or c == "_" for c in name) or name[0].isdigit():
            return (f"camera name {name!r} is not usable as a ROS name token (letters, digits and _, not starting "
                    "with a digit)")
    if len(set(names)) != len(names):
        return f"camera names must be unique, got {names}"
    return None


def policies_config(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Runtime `Policies.from_config` input from the ``policies.*`` parameter values (each policy gets only the
    parameters it takes)."""
    frames = {"name": values["policies.frames"]}
    if frames["name"] == "newest_wins":
        frames["min_exits_before_preempt"] = values["policies.min_exits_before_preempt"]
    elif frames["name"] == "fifo":
        frames["max_queued"] = values["policies.max_queued"]
    deadline = {"name": values["policies.deadline"]}
    if deadline["name"] == "predictive":
        deadline["safety_factor"] = values["policies.safety_factor"]
    priority = {"name": values["policies.priority"]}
    if priority["name"] == "priority_edf":
        priority["preempt"] = values["policies.preempt"]
    suspend = {"name": values["policies.suspend"]}
    if suspend["name"] == "suspend":
        suspend["max_suspended"] = values["policies.max_suspended"]
        suspend["max_age"] = values["policies.max_age_s"]
    return {"frames": frames, "deadline": deadline, "priority": priority, "suspend": suspend}


def check(values: Mapping[str, Any], changed: Iterable[str] = ()) -> str | None:
    """Why the set of parameter ``values`` (all of them, after a change of the names in ``changed``) is not
    acceptable, or None. Checks each changed value and the rules between parameters."""
    names = list(changed) or list(values)
    for name in names:
        spec = spec_of(name)
        if spec is None:
            continue          # not ours (use_sim_time, qos_overrides.*): rclpy and its owners check those
        reason = check_value(spec, values[name])
        if reason:
            return reason
    if (values["input_height"] == 0) != (values["input_width"] == 0):
        return (f"input_height and input_width must both be 0 (each frame's own size) or both be set, got "
                f"{values['input_height']}x{values['input_width']}")
    device = values["device"]
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        return f"device must be cpu, cuda or cuda:N, got {device!r}"
    try:
        Policies.from_config(policies_config(values))
    except ValueError as error:
        return f"policies: {error}"
    return None


@dataclass
class Settings:
    """The parameter values as typed fields (names with dots become underscores: ``policies.frames`` ->
    ``policies_frames``). Per-camera values are in ``camera_priority`` / ``camera_deadline_ms``."""

    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        key = name.replace("policies_", "policies.", 1) if name.startswith("policies_") else name
        if key in values:
            return values[key]
        raise AttributeError(name)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) frames are resized to, None = each frame's own size."""
        if self.values["input_height"] and self.values["input_width"]:
            return int(self.values["input_height"]), int(self.values["input_width"])
        return None

    @property
    def camera_names(self) -> list[str]:
        return list(self.values.get("cameras") or [])

    def camera_priority(self, camera: str) -> int:
        return int(self.values.get(f"cameras.{camera}.priority", self.values["priority"]))

    def camera_deadline_ms(self, camera: str) -> float:
        return float(self.values.get(f"cameras.{camera}.deadline_ms", self.values["deadline_ms"]))

    def policies(self) -> Policies:
        return Policies.from_config(policies_config(self.values))


def defaults() -> dict[str, Any]:
    """Every parameter at its default (tests, documentation)."""
    return {p.name: (list(p.default) if isinstance(p.default, list) else p.default) for p in PARAMETERS}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def markdown_table() -> str:
    """The parameter table of the README (kept in sync by a test)."""
    rows = ["| parameter | type | default | changeable | description |", "|---|---|---|---|---|"]
    for p in PARAMETERS:
        default = "not set" if p.kind == "string_array" else f"`{p.default!r}`" if isinstance(p.default, str) else (
            f"`{str(p.default).lower()}`" if isinstance(p.default, bool) else f"`{p.default}`")
        extra = f" (range {_num(p.range[0])}..{_num(p.range[1])})" if p.range else ""
        extra += f" (one of {', '.join(p.choices)})" if p.choices else ""
        rows.append(f"| `{p.name}` | {p.type_name} | {default} | {'no' if p.read_only else 'yes'} | "
                    f"{p.description}{extra} |")
    return "\n".join(rows)
