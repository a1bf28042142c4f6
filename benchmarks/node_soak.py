"""anytime_node under sustained load: RSS over time and the frame accounting, from separate processes.

    .venv/bin/python benchmarks/node_soak.py                      # 10 minutes each, 1 then 3 cameras
    .venv/bin/python benchmarks/node_soak.py --minutes 2 --cameras 1

The node runs as its console script (its own process, the Fast DDS large-image profile, one torch thread,
input 512x1024, `output_size: exit`); this process publishes 1024x2048 rgb8 frames at 30 Hz per camera (each
stamped at publication) on `<camera>/image` and listens to `/diagnostics`. Frames arrive faster than the node
finishes them, so `newest_wins` preempts and supersedes all the time. The node's resident memory (VmRSS of its
process) is sampled every 5 s; the slope is a least-squares fit from minute 2 (after warm-up) to the end.
The accounting comes from the node's last report before it stops: per camera, frames published by this process
must equal received + lost (lost = gaps in the publisher's sequence numbers, counted from the first frame the node
received: a few frames published before the node's subscription matched are not part of it and are shown apart).
Prints one markdown table row per run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

SIZE = (1024, 2048)
RATE_HZ = 30.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def slope_mb_per_min(samples: list[tuple[float, float]], after_s: float) -> float:
    points = [(t, r) for t, r in samples if t >= after_s]
    if len(points) < 3:
        return float("nan")
    t, r = np.asarray(points).T
    return float(np.polyfit(t / 60.0, r, 1)[0])


def at_minute(samples, minute: float) -> float:
    return min(samples, key=lambda s: abs(s[0] - minute * 60.0))[1] if samples else float("nan")


def soak(cameras: int, minutes: float, input_size: tuple[int, int] = (512, 1024)) -> dict:
    """Run the node under load for ``minutes`` with ``cameras`` cameras; returns what was measured (see main)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from anytime_perception.msg import FrameEnd
    from anytime_perception.ros.fastdds import use_large_image_profile
    from anytime_perception.ros.image_codec import array_to_image

    names = [f"cam{i}" for i in range(cameras)]
    namespace = f"/soak_{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    use_large_image_profile(env)
    command = [sys.executable, "-m", "anytime_perception.ros.process", "--ros-args", "-r", f"__ns:={namespace}",
               "-p", "torch_threads:=1", "-p", f"input_height:={input_size[0]}", "-p", f"input_width:={input_size[1]}",
               "-p", "output_size:=exit", "-p", f"cameras:=[{','.join(names)}]", "-p", "diagnostics_period_s:=1.0"]
    # The node's log goes to a file: a pipe nobody reads during the run fills up and blocks the node's logging.
    log = tempfile.TemporaryFile(mode="w+")
    node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    use_large_image_profile()
    context = rclpy.Context()
    rclpy.init(context=context)
    client = rclpy.create_node("soak_client", namespace=namespace, context=context)
    latest: dict[str, dict[str, str]] = {}
    first_seen: dict[str, int] = {}
    ends: dict[str, list[int]] = {name: [] for name in names}
    published = {name: 0 for name in names}

    def on_diagnostics(msg):
        for status in msg.status:
            latest[status.name] = {kv.key: kv.value for kv in status.values}

    def on_frame_end(camera, msg):
        number = int(msg.header.frame_id.rsplit("_", 1)[1])
        first_seen[camera] = min(first_seen.get(camera, number), number)
        ends[camera].append(number)

    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    publishers = {}
    for name in names:
        publishers[name] = client.create_publisher(Image, f"{name}/image", qos_profile_sensor_data)
        client.create_subscription(FrameEnd, f"{name}/frame_end", lambda m, c=name: on_frame_end(c, m), 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    rng = np.random.default_rng(0)
    frames = [array_to_image(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8), "rgb8", Header()) for _ in range(4)]
    try:
        while not all(p.get_subscription_count() for p in publishers.values()):
            if node.poll() is not None:
                log.seek(0)
                raise RuntimeError("the node exited:\n" + log.read()[-3000:])
            time.sleep(0.2)
        samples: list[tuple[float, float]] = []
        began = time.monotonic()
        next_frame = began
        next_sample = began
        count = 0
        while time.monotonic() - began < minutes * 60.0:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - began, rss_mb(node.pid)))
                next_sample += 5.0
            for name in names:
                msg = frames[count % len(frames)]
                stamp = time.time_ns()
                msg.header.stamp.sec, msg.header.stamp.nanosec = stamp // 10**9, stamp % 10**9
                published[name] += 1
                msg.header.frame_id = f"{name}_{published[name]}"
                publishers[name].publish(msg)
            count += 1
            next_frame += 1.0 / RATE_HZ
            time.sleep(max(0.0, next_frame - time.monotonic()))
        time.sleep(5.0)                              # the backlog drains; two more reports
        idle_rss = rss_mb(node.pid)
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
        node.wait(timeout=60)
        log.seek(0)
        output = log.read()
        log.close()
        executor.shutdown(timeout_sec=5)
        # the spinning thread must be gone before the interpreter exits: a daemon thread still inside rclpy's wait
        # set when the process ends aborts it ("terminate called without an active exception", exit -6)
        spinner.join(timeout=10)
        client.destroy_node()
        rclpy.try_shutdown(context=context)
    errors = [line for line in output.splitlines() if "[ERROR]" in line or "Traceback" in line]
    per_camera = {}
    for name in names:
        values = next((v for k, v in latest.items() if k.endswith(f"camera {name}")), {})
        per_camera[name] = {
            "published": published[name],
            "published_before_first_received": first_seen.get(name, 1) - 1,
            "received": int(values.get("received", 0)), "lost": int(values.get("lost", 0)),
            "accepted": int(values.get("accepted", 0)), "completed": int(values.get("jobs.completed", 0)),
            "preempted": int(values.get("jobs.preempted", 0)), "dropped": int(values.get("jobs.dropped", 0)),
            "frame_ends": len(ends[name]), "frames_ended": len(set(ends[name]))}
    return {"cameras": per_camera, "rss_mb": samples, "idle_rss_mb": idle_rss, "errors": errors,
            "exit_code": node.returncode}


def table_row(result: dict, minutes: float, load: str) -> str:
    samples = result["rss_mb"]
    rows = []
    for name, c in result["cameras"].items():
        counted = c["published"] - c["published_before_first_received"]
        total = c["received"] + c["lost"]
        rows.append(f"{name}: {c['published']} published ({c['published_before_first_received']} before the first "
                    f"received), {c['received']} received + {c['lost']} lost = {total} "
                    f"({'=' if total == counted else '!='} {counted}); {c['accepted']} accepted, {c['completed']} "
                    f"completed, {c['preempted']} preempted, {c['dropped']} dropped; {c['frame_ends']} frame_end")
    return (f"| {len(result['cameras'])} | {minutes:g} | {at_minute(samples, 1):.0f} | "
            f"{at_minute(samples, min(5, minutes)):.0f} | {at_minute(samples, minutes):.0f} | "
            f"{slope_mb_per_min(samples, min(120.0, minutes * 30.0)):+.1f} | {result['idle_rss_mb']:.0f} | "
            f"{'; '.join(rows)} | {len(result['errors'])} | {load} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--input", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"),
                        help="the model's input size (frames are resized to it)")
    parser.add_argument("--json", action="store_true", help="print each run's measurements as one JSON line")
    opts = parser.parse_args(argv)
    if opts.json:
        for cameras in opts.cameras:
            print(json.dumps(soak(cameras, opts.minutes, tuple(opts.input))), flush=True)
        return 0
    print("| cameras | minutes | RSS 1 min (MB) | RSS 5 min | RSS end | slope after 2 min (MB/min) | RSS 5 s after "
          "the load | accounting (per camera) | ERROR lines | load average at start |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cameras in opts.cameras:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(table_row(soak(cameras, opts.minutes, tuple(opts.input)), opts.minutes, load), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
