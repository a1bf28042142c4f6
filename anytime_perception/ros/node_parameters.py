"""The node's parameters on rclpy: declared from :data:`.params.PARAMETERS` with descriptors, checked on every
change, applied to the node, and every refused change logged by the node.

rclpy refuses some changes itself before any node callback runs (read-only, wrong type, out of range), and only the
caller hears why. A pre-set callback sees every change first, so the node checks each change there with the same
rules (descriptors and :func:`.params.check`) and logs the reason of any refusal; the on-set callback then makes the
refusals of :func:`.params.check` binding.
"""
from __future__ import annotations

from typing import Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from .params import PARAMETERS, ParamSpec, Settings, camera_parameters, check, spec_of

PARAMETER_TYPES = {"bool": ParameterType.PARAMETER_BOOL, "integer": ParameterType.PARAMETER_INTEGER,
                   "double": ParameterType.PARAMETER_DOUBLE, "string": ParameterType.PARAMETER_STRING,
                   "string_array": ParameterType.PARAMETER_STRING_ARRAY}


class ConfigurationError(RuntimeError):
    """The node cannot start as configured (bad parameter, model or checkpoint); the message says why."""


def descriptor_of(spec: ParamSpec) -> ParameterDescriptor:
    description = spec.description + (f" (one of: {', '.join(spec.choices)})" if spec.choices else "")
    descriptor = ParameterDescriptor(name=spec.name, type=PARAMETER_TYPES[spec.type_name], description=description,
                                     read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.range is not None and spec.type_name == "integer":
        descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    elif spec.range is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                              to_value=float(spec.range[1]), step=0.0)]
    return descriptor


class NodeParameters:
    """Declares the parameters on ``node`` into ``settings`` and calls ``on_change(names)`` after accepted changes."""

    def __init__(self, node, settings: Settings, on_change: Callable[[set[str]], None]):
        self.node = node
        self.settings = settings
        self.log = node.get_logger()
        self._on_change = on_change

    def declare(self) -> None:
        """Declare every parameter with its descriptor; raises ConfigurationError for a bad initial value."""
        for spec in PARAMETERS:
            self._declare(spec)
        for camera in self.settings.camera_names:
            for spec in camera_parameters(camera, self.settings.values["priority"],
                                          self.settings.values["deadline_ms"]):
                self._declare(spec)
        reason = check(self.settings.values)
        if reason:
            raise ConfigurationError(f"bad parameter: {reason}")
        self.node.add_pre_set_parameters_callback(self._log_refusals)
        self.node.add_on_set_parameters_callback(self._validate)
        self.node.add_post_set_parameters_callback(self._apply)

    def _declare(self, spec: ParamSpec) -> None:
        default = Parameter.Type.STRING_ARRAY if spec.type_name == "string_array" else spec.default
        try:
            value = self.node.declare_parameter(spec.name, default, descriptor_of(spec)).value
        except InvalidParameterTypeException as error:
            raise ConfigurationError(f"parameter {spec.name} must be of type {spec.type_name} "
                                     f"(e.g. {spec.default!r}): {error}") from None
        except InvalidParameterValueException as error:
            raise ConfigurationError(f"bad value for parameter {spec.name}: {error}") from None
        self.settings.values[spec.name] = [] if value is None and spec.type_name == "string_array" else value

    def refusal(self, parameters: list[Parameter]) -> str | None:
        """Why this change is refused (by rclpy's descriptor checks or by ours), or None."""
        values = dict(self.settings.values)
        changed = []
        for parameter in parameters:
            spec = spec_of(parameter.name)
            if spec is None:
                continue          # not ours (use_sim_time, qos_overrides.*): rclpy and its owners check those
            if parameter.name not in values:
                return (f"{parameter.name} is not a parameter of this node (per-camera parameters exist for the "
                        "names in `cameras`)")
            if spec.read_only:
                return f"parameter {parameter.name} is read-only (set it at start-up)"
            if parameter.type_ != Parameter.Type.from_parameter_value(spec.default if spec.type_name != "string_array"
                                                                      else ["x"]):
                return (f"parameter {parameter.name} must be of type {spec.type_name}, got {parameter.value!r} "
                        f"({parameter.type_.name})")
            values[parameter.name] = parameter.value
            changed.append(parameter.name)
        return check(values, changed) if changed else None

    def _log_refusals(self, parameters: list[Parameter]) -> list[Parameter]:
        reason = self.refusal(parameters)
        if reason:
            self.log.warning(f"rejected parameter change: {reason}")
        return parameters

    def _validate(self, parameters: list[Parameter]) -> SetParametersResult:
        reason = self.refusal(parameters)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply(self, parameters: list[Parameter]) -> None:
        changed = [p for p in parameters if p.name in self.settings.values]
        for parameter in changed:
            self.settings.values[parameter.name] = parameter.value
            self.log.info(f"parameter {parameter.name} set to {parameter.value!r}")
        self._on_change({p.name for p in changed})
