"""ROS 2 adapter of anytime_perception (rclpy).

- :mod:`.node`: ``anytime_node``, the perception node's coordinator (its core is shared with :mod:`.lifecycle`);
  :mod:`.process` the console script (arguments, signals, an orderly end). The parts it owns, one concern each:
  :mod:`.intake` camera inputs (decoding, stamps, priority events, submission, lost-frame counts),
  :mod:`.publishing` the output thread, QoS and the camera sink (topics and ``frame_end``),
  :mod:`.perceive_action` the action and its goal sink, :mod:`.task_outputs` the messages of each task,
  :mod:`.node_parameters` the parameters on rclpy (:mod:`.params` describes and checks them),
  :mod:`.diagnostics` ``/diagnostics``, :mod:`.outputs` exits -> message contents, :mod:`.weights` model loading.
- :mod:`.demo`: ``anytime-demo``, the shipped clip through the node, recorded, checked and drawn.
- :mod:`.testing`: a gated stand-in model for deterministic node tests.
- :mod:`.image_codec`: sensor_msgs/Image and CompressedImage <-> numpy, CameraInfo scaling (no cv_bridge).
- :mod:`.player`: ``anytime_player``, a folder, a video or the shipped clip -> sensor_msgs/Image.
- :mod:`.bag`: record and read rosbag2 MCAP files with ``rosbags``, including this package's message types.
- :mod:`.fastdds`: the Fast DDS profile for large images between processes.
- :mod:`.resources`: where the package's share/ files and the shipped clip are.

The messages are ``anytime_perception.msg`` (AnytimeSegmentation, AnytimePose, FrameEnd, Keypoint, PriorityEvent,
LabelInfo, ClassLabel) and ``anytime_perception.action.Perceive``, generated from msg/ and action/ by rosidl
(colcon on a ROS 2 install, tools/build-messages.sh in the dev venv). Nothing here is imported by
``import anytime_perception``, so the model core works without ROS.
"""
