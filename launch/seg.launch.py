"""Progressive semantic segmentation on a camera topic.

    ros2 launch anytime_perception seg.launch.py image:=/camera/image_raw device:=cuda checkpoint:=/path/w.pth
    ros2 launch anytime_perception seg.launch.py player:=true rviz:=true     # the shipped clip, shown in rviz2

Outputs: segmentation, labels, overlay, confidence, label_info, /diagnostics, ...
Every argument is described by `ros2 launch anytime_perception seg.launch.py --show-args`; the
description itself is anytime_perception/ros/launch_description.py, shared with the other task's file.
"""
from anytime_perception.ros.launch_description import anytime_launch_description


def generate_launch_description():
    return anytime_launch_description("seg")
