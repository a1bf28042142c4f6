"""anytime-demo: the README's main command, end to end in small (player, node and recorder in separate processes, a
real rosbag2 MCAP bag), and its bag check on hand-made bags (every exit of every frame, or a counted reason)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import cv2
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    from anytime_perception.msg import AnytimeSegmentation
    from anytime_perception.ros.bag import BagWriter, read_bag
    from anytime_perception.ros.demo import NAMESPACE, NODE_NAME, Pass, analyse
    from anytime_perception.ros.image_codec import labels_to_image
except ImportError as error:  # pragma: no cover - depends on the environment
    dependency_missing(error, "ROS 2, rosbags or the generated messages")


def test_demo_runs_records_checks_and_draws(tmp_path):
    output = tmp_path / "demo"
    env = dict(os.environ)
    env.pop("ROS_DOMAIN_ID", None)                  # the demo picks its own
    run = subprocess.run([sys.executable, "-m", "anytime_perception.ros.demo", "--output", str(output),
                          "--frames", "4", "--input-size", "64x96", "--rate", "20", "--relaxed-rate", "5",
                          "--samples", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "check passed" in run.stdout
    bag = output / "bag"
    assert (bag / "metadata.yaml").is_file() and list(bag.glob("*.mcap"))
    summary = (output / "summary.md").read_text()
    assert "pass `all_exits`" in summary and "pass `realtime`" in summary and "Check passed" in summary
    strips = sorted(output.glob("strip_*.png"))
    assert [p.name for p in strips] == ["strip_all_exits_frame00.png", "strip_realtime_frame00.png"]
    image = cv2.imread(str(strips[0]))
    assert image.shape[0] > 3 * 64 and image.shape[1] >= 5 * 96          # input + 4 exits, 3 rows
    # the bag holds every output topic, and the relaxed pass every exit of every frame
    topics = {m.topic for m in read_bag(bag, deserialize="none")}
    for topic in ("segmentation", "labels/image", "labels/camera_info", "confidence/image", "overlay/image",
                  "overlay/camera_info", "computed/image", "label_info", "image/compressed", "camera_info"):
        assert f"{NAMESPACE}/{topic}" in topics, topic
    assert "/diagnostics" in topics
    report = analyse(bag, [Pass("all_exits", 5, 0, ""), Pass("realtime", 20, 150, "")],
                     {"all_exits": 4, "realtime": 4})
    assert report.problems == []
    relaxed = [f for f in report.frames if f.pass_name == "all_exits"]
    assert [[m.exit_index for m in f.exits] for f in relaxed] == [[1, 2, 3, 4]] * 4
    assert all(len(f.overlays) == 4 for f in relaxed)


# ----- the check on hand-made bags ------------------------------------------------------------------------------
def _header(i):
    h = Header(frame_id="cam")
    h.stamp.sec, h.stamp.nanosec = 1000 + i, 0
    return h


def _exit(i, k, final=False, reason="none"):
    header = _header(i)
    return AnytimeSegmentation(header=header, exit_index=k, num_exits=4, is_final=final, stop_reason=reason,
                               labels=labels_to_image(np.zeros((2, 3), np.uint8), header))


def _diagnostics(received, ended):
    values = {"received": received, "accepted": received, "rejected": 0, "lost": 0, "jobs.in_flight": 0,
              "jobs.completed": sum(n for r, n in ended.items() if r in ("last_exit", "deadline", "predicted_miss")),
              "jobs.preempted": ended.get("preempted", 0),
              "jobs.dropped": sum(n for r, n in ended.items() if r not in ("last_exit", "deadline", "predicted_miss",
                                                                           "preempted"))}
    values.update({f"ended.{r}": n for r, n in ended.items()})
    status = DiagnosticStatus(name=f"{NODE_NAME}: input image",
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(status=[status])


def _bag(path, exits, ended, frames=2):
    with BagWriter(path) as bag:
        bag.add_topic(f"{NAMESPACE}/image/compressed", CompressedImage)
        bag.add_topic(f"{NAMESPACE}/segmentation", AnytimeSegmentation)
        bag.add_topic("/diagnostics", DiagnosticArray)
        t = 1
        for i in range(frames):
            bag.write(f"{NAMESPACE}/image/compressed", CompressedImage(header=_header(i), format="jpeg"), t)
            t += 1
        for msg in exits:
            bag.write(f"{NAMESPACE}/segmentation", msg, t)
            t += 1
        bag.write("/diagnostics", _diagnostics(frames, ended), t)
    return analyse(path, [Pass("p", 1.0, 0.0, "")], {"p": frames})


def test_check_accepts_every_exit_or_a_counted_reason(tmp_path):
    complete = [_exit(0, 1), _exit(0, 2), _exit(0, 3), _exit(0, 4, True, "last_exit")]
    report = _bag(tmp_path / "a", complete + [_exit(1, 1), _exit(1, 2, True, "predicted_miss")],
                  {"last_exit": 1, "predicted_miss": 1})
    assert report.problems == []
    # frame 1 ended between exits: no final message, but the node counted a preemption
    report = _bag(tmp_path / "b", complete + [_exit(1, 1)], {"last_exit": 1, "preempted": 1})
    assert report.problems == [] and report.silent_reasons == {"p": {"preempted": 1}}


@pytest.mark.parametrize("exits, ended, problem", [
    ([_exit(0, 1, True, "predicted_miss"), _exit(1, 1, True, "deadline")], {"deadline": 2}, "did not count"),
    ([_exit(0, 1), _exit(0, 2, True, "last_exit"), _exit(1, 1, True, "deadline")], {"last_exit": 1, "deadline": 1},
     "last_exit before the last exit"),
    ([_exit(0, 1), _exit(0, 3, True, "deadline"), _exit(1, 1, True, "deadline")], {"deadline": 2}, "not 1..k"),
    ([_exit(0, 1), _exit(1, 1)], {"last_exit": 1, "preempted": 1}, "final message is not in the bag"),
    ([_exit(0, 1, True, "deadline"), _exit(0, 2), _exit(1, 1, True, "deadline")], {"deadline": 2}, "after the final"),
    ([_exit(0, 1, True, "deadline"), _exit(5, 1, True, "deadline")], {"deadline": 2}, "never sent"),
])
def test_check_flags_missing_exits_and_uncounted_ends(tmp_path, exits, ended, problem):
    report = _bag(tmp_path / "bag", exits, ended)
    assert any(problem in p for p in report.problems), report.problems
