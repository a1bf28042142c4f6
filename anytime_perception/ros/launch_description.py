"""The launch description behind launch/seg.launch.py and launch/pose.launch.py: one implementation, the task picks
the parameter file and the node's name. `launch` / `launch_ros` are imported when a description is made (they
come with a ROS 2 install, not with pip), so importing this module needs neither.

Arguments left empty keep the value of the parameter file (params_file, default config/<task>.yaml). The node's
outputs are relative names, so they follow `namespace`. Every process started here uses the Fast DDS large-image
profile unless fastdds_profile:=''.
"""
PACKAGE = "anytime_perception"
TASKS = {"seg": ("seg.yaml", "anytime_seg"), "pose": ("pose.yaml", "anytime_pose")}
OVERRIDABLE = ("model", "checkpoint", "device", "deadline_ms", "priority")


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _sibling(topic: str, name: str) -> str:
    """`name` in the namespace of `topic` (camera_info next to image_raw, as image_transport pairs them)."""
    head, _, _ = topic.rpartition("/")
    return f"{head}/{name}" if head or topic.startswith("/") else name


def _overrides(cfg) -> dict:
    overrides = {}
    for name in OVERRIDABLE:
        value = cfg.get(name, "")
        if value != "":
            overrides[name] = float(value) if name == "deadline_ms" else int(value) if name == "priority" else value
    overrides["use_sim_time"] = _truthy(cfg.get("use_sim_time", "false"))
    return overrides


def anytime_launch_description(task: str):
    """The LaunchDescription of the anytime node for `task` ('seg' or 'pose'), with an optional player and rviz2."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration, NotEqualsSubstitution, PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    params_file, node_name = TASKS[task]

    def nodes(context):
        cfg = context.launch_configurations
        overrides = _overrides(cfg)
        image = cfg["image"]
        camera_info = cfg.get("camera_info", "") or _sibling(image, "camera_info")
        started = [
            Node(
                package=PACKAGE,
                executable="anytime_node",
                name=node_name,
                namespace=cfg.get("namespace", ""),
                parameters=[cfg["params_file"], overrides],
                remappings=[
                    ("image", image),
                    ("image/compressed", f"{image}/compressed"),
                    ("camera_info", camera_info),
                ],
                output="screen",
                emulate_tty=True,
            )
        ]
        if _truthy(cfg.get("player", "false")):
            started.append(
                Node(
                    package=PACKAGE,
                    executable="anytime_player",
                    name="anytime_player",
                    namespace=cfg.get("namespace", ""),
                    parameters=[{"source": cfg.get("player_source", ""), "loop": True,
                                 "use_sim_time": overrides["use_sim_time"]}],
                    remappings=[("image", image), ("camera_info", camera_info)],
                    output="screen",
                )
            )
        return started

    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("model", default_value="", description="model name (default: the params file's)"),
        DeclareLaunchArgument("checkpoint", default_value="", description="weights: pretrained (the shipped ones), calibrated-untrained or a file (default: the params file's)"),
        DeclareLaunchArgument("device", default_value="", description="cpu, cuda, cuda:N (default: the params file's)"),
        DeclareLaunchArgument("deadline_ms", default_value="", description="per-frame budget in ms, 0 = none"),
        DeclareLaunchArgument("priority", default_value="", description="priority of this input's frames"),
        DeclareLaunchArgument("image", default_value="image", description="input sensor_msgs/Image topic"),
        DeclareLaunchArgument("camera_info", default_value="",
                              description="input CameraInfo topic (default: camera_info next to `image`)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", params_file]),
                              description="ROS parameter file of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
        DeclareLaunchArgument("fastdds_profile",
                              default_value=PathJoinSubstitution([share, "config", "fastdds_large_images.xml"]),
                              description="Fast DDS profile for large images between processes; '' keeps the default"),
        DeclareLaunchArgument("player", default_value="false",
                              description="also play a clip on `image` with anytime_player (looping)"),
        DeclareLaunchArgument("player_source", default_value="",
                              description="what the player plays: folder or video; '' = the shipped clip"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with rviz/anytime.rviz"),
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
            condition=IfCondition(NotEqualsSubstitution(LaunchConfiguration("fastdds_profile"), ""))),
        OpaqueFunction(function=nodes),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", PathJoinSubstitution([share, "rviz", "anytime.rviz"])],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
