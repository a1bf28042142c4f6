"""Progressive human pose estimation on a camera topic.

    ros2 launch anytime_perception pose.launch.py image:=/camera/image_raw device:=cuda checkpoint:=/path/w.pth
    ros2 launch anytime_perception pose.launch.py player:=true rviz:=true     # the shipped clip, shown in rviz2

Outputs: pose, pose_markers, overlay, label_info, /diagnostics, ...
Every argument is described by `ros2 launch anytime_perception pose.launch.py --show-args`; the
description itself is anytime_perception/ros/launch_description.py, shared with the other task's file.
"""
from anytime_perception.ros.launch_description import anytime_launch_description


def generate_launch_description():
    return anytime_launch_description("pose")
