"""Launch files, parameter files, the rviz2 config and the build description, checked without ROS 2's `launch`
package (not installable here): each launch file is imported with small stand-ins for `launch` / `launch_ros`
that accept only names and keyword arguments those packages have, and its OpaqueFunction is run with the declared
defaults. The parameter files are parsed by rcl's own YAML parser (a node started with --params-file)."""
import ast
import contextlib
import importlib.util
import os
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import dependency_missing

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = {"seg.launch.py": "seg.yaml", "pose.launch.py": "pose.yaml"}
SHARED_DESCRIPTION = ROOT / "anytime_perception" / "ros" / "launch_description.py"
REQUIRED_ARGS = {"model", "checkpoint", "device", "image", "namespace", "params_file", "use_sim_time"}
PUBLIC_PARAMETERS = {"model": str, "checkpoint": str, "device": str, "deadline_ms": float, "priority": int}


# ----- stand-ins for launch / launch_ros -----------------------------------------------------------------------
class Fake:
    """Records its arguments; rejects keywords the real class does not take."""

    KEYWORDS: tuple = ()
    POSITIONAL: int = 0

    def __init__(self, *args, **kwargs):
        if len(args) > self.POSITIONAL:
            raise TypeError(f"{type(self).__name__} takes at most {self.POSITIONAL} positional arguments")
        unknown = set(kwargs) - set(self.KEYWORDS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword(s) {sorted(unknown)}")
        self.args, self.kwargs = args, kwargs

    def __repr__(self):
        return f"{type(self).__name__}{self.args}"


def _fake(name, positional=0, keywords=()):
    return type(name, (Fake,), {"POSITIONAL": positional, "KEYWORDS": tuple(keywords) + ("condition",)})


class Context:
    def __init__(self, configurations):
        self.launch_configurations = configurations


def perform(value, context) -> str:
    """What launch would make of a substitution (or a list of them) in `context`."""
    if isinstance(value, (list, tuple)):
        return "".join(perform(v, context) for v in value)
    if isinstance(value, str):
        return value
    name = type(value).__name__
    if name == "LaunchConfiguration":
        return context.launch_configurations[value.args[0]]
    if name == "PathJoinSubstitution":
        return "/".join(perform(v, context) for v in value.args[0])
    if name == "FindPackageShare":
        return f"<share of {value.args[0]}>"
    if name == "NotEqualsSubstitution":
        return str(perform(value.args[0], context) != perform(value.args[1], context)).lower()
    raise AssertionError(f"unexpected substitution {value!r}")


def fake_launch_modules() -> dict:
    node_keywords = ("package", "executable", "name", "namespace", "parameters", "remappings", "arguments",
                     "output", "emulate_tty", "ros_arguments", "respawn", "respawn_delay", "exec_name",
                     "additional_env")
    launch = types.ModuleType("launch")
    launch.LaunchDescription = _fake("LaunchDescription", 1, ("deprecated_reason",))
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = _fake("DeclareLaunchArgument", 1, ("default_value", "description", "choices"))
    actions.SetEnvironmentVariable = _fake("SetEnvironmentVariable", 2, ("name", "value"))
    actions.OpaqueFunction = _fake("OpaqueFunction", 0, ("function", "args", "kwargs"))
    actions.GroupAction = _fake("GroupAction", 1, ("scoped", "forwarding", "launch_configurations"))
    actions.LogInfo = _fake("LogInfo", 0, ("msg",))
    conditions = types.ModuleType("launch.conditions")
    conditions.IfCondition = _fake("IfCondition", 1)
    conditions.UnlessCondition = _fake("UnlessCondition", 1)
    substitutions = types.ModuleType("launch.substitutions")
    for name, positional in [("LaunchConfiguration", 1), ("PathJoinSubstitution", 1), ("TextSubstitution", 0),
                             ("PythonExpression", 1), ("EqualsSubstitution", 2), ("NotEqualsSubstitution", 2),
                             ("EnvironmentVariable", 1)]:
        setattr(substitutions, name, _fake(name, positional, ("default", "text", "name", "default_value")))
    launch.actions, launch.conditions, launch.substitutions = actions, conditions, substitutions
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = _fake("Node", 0, node_keywords)
    ros_actions.PushRosNamespace = _fake("PushRosNamespace", 1, ("namespace",))
    ros_actions.SetParameter = _fake("SetParameter", 0, ("name", "value"))
    ros_substitutions = types.ModuleType("launch_ros.substitutions")
    ros_substitutions.FindPackageShare = _fake("FindPackageShare", 1, ("package",))
    launch_ros.actions, launch_ros.substitutions = ros_actions, ros_substitutions
    return {"launch": launch, "launch.actions": actions, "launch.conditions": conditions,
            "launch.substitutions": substitutions, "launch_ros": launch_ros, "launch_ros.actions": ros_actions,
            "launch_ros.substitutions": ros_substitutions}


@contextlib.contextmanager
def fake_launch():
    """`launch` and `launch_ros` replaced by the stand-ins while the block runs."""
    modules = fake_launch_modules()
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def load_launch_description(path: Path):
    with fake_launch():
        spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()


def console_scripts() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    for entry in ast.literal_eval(value):
                        name, target = (s.strip() for s in entry.split("="))
                        scripts[name] = target
    return scripts


def cmake_executables() -> dict:
    text = (ROOT / "CMakeLists.txt").read_text()
    return dict(re.findall(r'"(\w+):(anytime_perception(?:\.\w+)+)"', text))


# ----- launch files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("launch_file, params", sorted(LAUNCH_FILES.items()))
def test_launch_file_structure(launch_file, params):
    description = load_launch_description(ROOT / "launch" / launch_file)
    entities = description.args[0]
    declared = {e.args[0]: e for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert REQUIRED_ARGS <= set(declared)
    assert all(e.kwargs.get("description") for e in declared.values())

    # every LaunchConfiguration used is declared
    source = (ROOT / "launch" / launch_file).read_text() + SHARED_DESCRIPTION.read_text()
    used = set(re.findall(r'LaunchConfiguration\("(\w+)"\)', source)) | set(re.findall(r'cfg\["(\w+)"\]', source)) \
        | set(re.findall(r'cfg\.get\("(\w+)"', source))
    assert used <= set(declared), used - set(declared)

    defaults = {name: e.kwargs.get("default_value", "") for name, e in declared.items()}
    context = Context({})
    context.launch_configurations = {name: perform(value, context) for name, value in defaults.items()}
    assert context.launch_configurations["params_file"] == f"<share of anytime_perception>/config/{params}"
    assert (ROOT / "config" / params).is_file()
    assert context.launch_configurations["use_sim_time"] == "false"

    # Fast DDS profile set for the processes launched afterwards, unless the argument is empty
    env = [e for e in entities if type(e).__name__ == "SetEnvironmentVariable"]
    assert [e.args[0] for e in env] == ["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert perform(env[0].args[1], context).endswith("/config/fastdds_large_images.xml")
    assert perform(env[0].kwargs["condition"].args[0], context) == "true"
    assert (ROOT / "config" / "fastdds_large_images.xml").is_file()

    # the node, as the OpaqueFunction makes it with the defaults and with overrides
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1 and entities.index(opaque[0]) > entities.index(env[0])
    (node,) = opaque[0].kwargs["function"](context)
    assert (node.kwargs["package"], node.kwargs["executable"]) == ("anytime_perception", "anytime_node")
    assert node.kwargs["name"] == "anytime_" + launch_file.split(".")[0]
    assert node.kwargs["parameters"][0] == context.launch_configurations["params_file"]
    assert node.kwargs["parameters"][1] == {"use_sim_time": False}           # empty args keep the file's values
    assert dict(node.kwargs["remappings"]) == {"image": "image", "image/compressed": "image/compressed",
                                               "camera_info": "camera_info"}
    context.launch_configurations.update(model="m", checkpoint="/w.pth", device="cuda", deadline_ms="50",
                                         priority="3", use_sim_time="true", image="/cam/image_raw",
                                         namespace="robot1", player="true")
    node, player = opaque[0].kwargs["function"](context)
    assert node.kwargs["parameters"][1] == {"model": "m", "checkpoint": "/w.pth", "device": "cuda",
                                            "deadline_ms": 50.0, "priority": 3, "use_sim_time": True}
    assert dict(node.kwargs["remappings"]) == {"image": "/cam/image_raw",
                                               "image/compressed": "/cam/image_raw/compressed",
                                               "camera_info": "/cam/camera_info"}
    assert node.kwargs["namespace"] == "robot1"
    assert player.kwargs["executable"] == "anytime_player"
    assert dict(player.kwargs["remappings"])["image"] == "/cam/image_raw"

    # executables exist as console scripts (pip) and as lib/anytime_perception programs (CMake)
    rviz = [e for e in entities if type(e).__name__ == "Node"]
    assert [n.kwargs["executable"] for n in rviz] == ["rviz2"]
    assert perform(rviz[0].kwargs["arguments"], context).endswith("/rviz/anytime.rviz")
    for executable in (node.kwargs["executable"], player.kwargs["executable"]):
        assert executable in console_scripts()
        assert cmake_executables()[executable] == console_scripts()[executable].split(":")[0]


def test_shared_description_rejects_an_unknown_task():
    from anytime_perception.ros.launch_description import anytime_launch_description
    with fake_launch(), pytest.raises(ValueError, match="task must be one of"):
        anytime_launch_description("depth")


def test_console_scripts_point_at_modules_with_main():
    scripts = console_scripts()
    assert {"anytime_node", "anytime_player"} <= set(scripts)
    for name in ("anytime_node", "anytime_player"):
        module, function = scripts[name].split(":")
        path = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), name


# ----- parameter files -----------------------------------------------------------------------------------------
def _flatten(prefix, mapping):
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            yield from _flatten(name, value)
        else:
            yield name, value


@pytest.mark.parametrize("params", sorted(set(LAUNCH_FILES.values())))
def test_parameter_files_are_ros_params_yaml(params):
    data = yaml.safe_load((ROOT / "config" / params).read_text())
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]
    values = dict(_flatten("", data["/**"]["ros__parameters"]))
    for name, kind in PUBLIC_PARAMETERS.items():
        assert isinstance(values[name], kind), name
    for name, value in values.items():
        assert isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and len({type(v) for v in value}) == 1), name
    task = "seg" if params == "seg.yaml" else "pose"
    assert values["model"].endswith(f"_{task}")
    assert {k.split(".", 1)[1] for k in values if k.startswith("policies.")} >= {"frames", "deadline", "priority",
                                                                                 "suspend"}


@pytest.mark.parametrize("params", sorted(set(LAUNCH_FILES.values())))
def test_parameter_files_load_with_rcl(params):
    try:
        import rclpy
    except ImportError as error:  # pragma: no cover - depends on the environment
        dependency_missing(error, "rclpy")
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(ROOT / "config" / params)])
    try:
        node = rclpy.create_node("any_name", context=context, automatically_declare_parameters_from_overrides=True)
        expected = dict(_flatten("", yaml.safe_load((ROOT / "config" / params).read_text())["/**"]["ros__parameters"]))
        loaded = {name: node.get_parameter(name).value for name in expected}
        assert loaded == expected
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


# ----- rviz2 config and build description -----------------------------------------------------------------------
def test_rviz_config_shows_the_outputs_without_plugins():
    config = yaml.safe_load((ROOT / "rviz" / "anytime.rviz").read_text())
    displays = {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}
    for name in ("overlay", "labels", "confidence", "computed"):
        assert displays[name]["Class"] == "rviz_default_plugins/Image"
        assert displays[name]["Topic"]["Value"] == f"/{name}/image"      # image_transport-style namespaces
        assert displays[name]["Topic"]["Reliability Policy"] == "Best Effort"   # matches any publisher
    markers = [d for d in displays.values() if d["Class"] == "rviz_default_plugins/MarkerArray"]
    assert len(markers) == 1 and markers[0]["Topic"]["Value"] == "/pose_markers"
    assert all(d["Class"].startswith("rviz_default_plugins/") for d in displays.values())


def test_cmake_and_package_xml_describe_one_package():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    interfaces = re.findall(r'"((?:msg|action)/\w+\.(?:msg|action))"', cmake)
    on_disk = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("msg/*.msg"), *ROOT.glob("action/*.action")])
    assert sorted(interfaces) == on_disk
    assert "project(anytime_perception)" in cmake and "ament_package()" in cmake
    assert "install(DIRECTORY launch config rviz" in cmake
    package = ET.parse(ROOT / "package.xml").getroot()
    assert package.findtext("name") == "anytime_perception"
    assert package.find("export/build_type").text == "ament_cmake"
    assert package.findtext("member_of_group") == "rosidl_interface_packages"
    depends = {e.text for e in package if e.tag.endswith("depend")}
    assert {"rosidl_default_generators", "rosidl_default_runtime", "std_msgs", "sensor_msgs", "action_msgs",
            "rclpy", "launch_ros"} <= depends
