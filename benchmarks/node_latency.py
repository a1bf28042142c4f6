"""anytime_node's own latency per exit: image published -> exit received, minus the model's compute.

    .venv/bin/python benchmarks/node_latency.py             # ~4 minutes on 2 CPU cores
    .venv/bin/python benchmarks/node_latency.py --quick     # 512x1024 only, fewer frames, ~1.5 minutes

For each image size (512x1024 and 1024x2048 rgb8, 1.5 and 6.3 MB) and each placement (the node in this process; the
node in another process, both with the Fast DDS large-image profile) frames are published one at a time, each
stamped just before publication, and every exit of every frame is received on `segmentation` (reliable). The
model runs at the image's own size (`adpc_hrnet_w18s_seg`, one torch thread, its initial weights: every exit
computes every pixel, which changes model time only, not the node's work per exit). Per exit:

    latency   = reception time - header.stamp                      (one clock: the same machine)
    model     = model_time_ms of the message (model steps of this frame up to this exit)
    overhead  = latency - model (median, mean, p90), and its mean split into
      input     stamp -> frame submitted to the runtime: image transport, decoding, resizing, normalising
                (the node's /diagnostics `input_mean_ms`)
      output    exit computed -> its messages published, on the node's output thread (`exit_<k>.output_mean_ms`)
      delivery  `segmentation` published -> received by the subscriber: latency - end_to_end_ms
      rest      the remainder: the runtime's work between model steps up to this exit (scheduling, bookkeeping,
                thread hand-offs, waiting for the GIL)

Rows "+ images" also subscribe to labels/confidence/computed/overlay (what rviz2 shows), so the node builds and
publishes those too (it skips outputs nobody subscribes to). Target: overhead < 3 ms per exit at 512x1024 in one
process. Numbers depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

import numpy as np


def _percentile(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


class Client:
    """Publishes frames and receives exits (and, optionally, the image outputs) in this process."""

    def __init__(self, context, namespace, images: bool):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from anytime_perception.msg import AnytimeSegmentation

        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.node = rclpy.create_node("latency_client", namespace=namespace, context=context)
        self.received: list[tuple[int, object]] = []
        self.lock = threading.Lock()
        self.node.create_subscription(AnytimeSegmentation, "segmentation", self._on_exit, reliable)
        from diagnostic_msgs.msg import DiagnosticArray

        self.runtime_values: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        if images:
            for kind in ("labels", "confidence", "computed", "overlay"):
                self.node.create_subscription(Image, f"{kind}/image", lambda m: None, reliable)
        self.publisher = self.node.create_publisher(Image, "image", reliable)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith(": runtime"):
                self.runtime_values = {kv.key: kv.value for kv in status.values}

    def _on_exit(self, msg) -> None:
        now = time.time_ns()
        with self.lock:
            self.received.append((now, msg))

    def finals(self) -> int:
        with self.lock:
            return sum(m.is_final for _, m in self.received)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


def _frame(pixels: np.ndarray, frame_id: str):
    from std_msgs.msg import Header

    from anytime_perception.ros.image_codec import array_to_image

    msg = array_to_image(pixels, "rgb8", Header(frame_id=frame_id))
    now = time.time_ns()                       # stamped just before publication
    msg.header.stamp.sec, msg.header.stamp.nanosec = now // 10**9, now % 10**9
    return msg


def _wait(predicate, timeout, what, process=None):
    end = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the node exited while waiting for {what}")
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _without_warm_up(after: dict, warm: dict) -> dict:
    """The node's mean input and output times over the measured frames only (its histograms include the
    warm-up frame): mean = (total after - total after the warm-up) / (count after - count after the warm-up)."""
    out = {}
    for key in list(after):
        if not key.endswith("_mean_ms"):
            continue
        count_key = key.replace("_mean_ms", "_count")
        n1, n0 = float(after.get(count_key, 0)), float(warm.get(count_key, 0))
        m1, m0 = float(after[key]), float(warm.get(key, 0.0))
        out[key] = str((m1 * n1 - m0 * n0) / (n1 - n0)) if n1 > n0 else "nan"
    return out


def measure(size, placement, frames, images, progress_label, output_size="input") -> dict:
    """One configuration: returns per-exit lists of (latency, model, node, out) in ms."""
    import rclpy

    from anytime_perception.ros.fastdds import use_large_image_profile
    from anytime_perception.ros.node import AnytimeNode, make_executor

    height, width = size
    namespace = f"/lat_{uuid.uuid4().hex[:8]}"
    params = {"input_height": height, "input_width": width, "checkpoint": "", "torch_threads": 1,
              "policies.frames": "fifo", "deadline_ms": 0.0, "diagnostics_period_s": 0.2, "output_size": output_size}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = process = spinner = node_executor = None
    try:
        if placement == "one process":
            from rclpy.parameter import Parameter

            node = AnytimeNode(context=context, namespace=namespace,
                               parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
            node_executor = make_executor(node, context=context)
            spinner = threading.Thread(target=node_executor.spin, daemon=True)
            spinner.start()
        else:
            env = dict(os.environ)
            use_large_image_profile(env)
            command = [sys.executable, "-m", "anytime_perception.ros.process", "--ros-args", "-r", f"__ns:={namespace}"]
            for name, value in params.items():
                command += ["-p", f"{name}:={value if value != '' else repr('')}"]
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Client(context, namespace, images)
        try:
            _wait(lambda: client.publisher.get_subscription_count() > 0, 600, "the node to start", process)
            time.sleep(1.0)          # let discovery settle (all endpoints of both sides matched)
            rng = np.random.default_rng(0)
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            warm_diagnostics = {}
            for i in range(frames + 1):          # the first frame is a warm-up of this configuration, not counted
                before = client.finals()
                client.publisher.publish(_frame(pixels, f"f{i}"))
                _wait(lambda: client.finals() > before, 600, f"frame {i}", process)
                if i == 0:
                    seen = client.runtime_values
                    _wait(lambda: client.runtime_values is not seen and
                          client.runtime_values.get("exit_4.output_count") == "1", 30, "/diagnostics", process)
                    warm_diagnostics = dict(client.runtime_values)
                sys.stderr.write(f"\r{progress_label}: frame {i}/{frames}")
                sys.stderr.flush()
            sys.stderr.write("\n")
            _wait(lambda: client.runtime_values.get("exit_4.output_count") == str(frames + 1), 30, "/diagnostics",
                  process)
            diagnostics = _without_warm_up(dict(client.runtime_values), warm_diagnostics)
        finally:
            client.close()
        per_exit: dict[int, list] = {}
        for received_ns, msg in client.received:
            if msg.header.frame_id == "f0":
                continue
            stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            latency = (received_ns - stamp_ns) / 1e6
            per_exit.setdefault(msg.exit_index, []).append(
                (latency, msg.model_time_ms, msg.end_to_end_ms - msg.model_time_ms, latency - msg.end_to_end_ms))
        return per_exit, diagnostics
    finally:
        if node_executor is not None:
            node_executor.shutdown(timeout_sec=5)
        if node is not None:
            node.destroy_node()
        if process is not None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        rclpy.try_shutdown(context=context)
        if spinner is not None:
            spinner.join(timeout=5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="512x1024 only, 4 frames per configuration")
    parser.add_argument("--frames", type=int, default=None, help="frames per configuration (default 6 / 3)")
    parser.add_argument("--output-size", choices=("input", "exit"), default="input",
                        help="the node's output_size: output images at the input's size (the default) or at the "
                             "exit's resolution (1/4 of the model input)")
    args = parser.parse_args(argv)

    from anytime_perception.ros.fastdds import use_large_image_profile

    use_large_image_profile()                  # this process too (it publishes the images)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.pop("ROS_PYTHON_CHECK_FIELDS", None)
    import torch

    torch.set_num_threads(1)
    configs = [((512, 1024), "one process", False), ((512, 1024), "one process", True),
               ((512, 1024), "two processes", False)]
    if not args.quick:
        configs += [((1024, 2048), "one process", False), ((1024, 2048), "two processes", False)]
    rows = []
    for size, placement, images in configs:
        frames = args.frames or (4 if args.quick else (6 if size[0] <= 512 else 3))
        label = f"{size[0]}x{size[1]} {placement}{' + images' if images else ''}"
        per_exit, diagnostics = measure(size, placement, frames, images, label, args.output_size)
        input_ms = float(diagnostics.get("input_mean_ms", "nan"))
        for k in sorted(per_exit):
            values = per_exit[k]
            latency, model, node, out = (list(v) for v in zip(*values))
            overhead = [a - b for a, b in zip(latency, model)]
            output_ms = float(diagnostics.get(f"exit_{k}.output_mean_ms", "nan"))
            delivery = statistics.mean(out)
            rest = statistics.mean(overhead) - input_ms - output_ms - delivery
            rows.append((label, k, len(values), statistics.median(latency), statistics.median(model),
                         statistics.median(overhead), statistics.mean(overhead), _percentile(overhead, 90),
                         input_ms, output_ms, delivery, rest))
    print(f"\noutput_size: {args.output_size}")
    print("| image, placement | exit | n | latency ms (median) | model ms (median) | overhead median | mean | p90 | "
          "input | output | delivery | rest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, k, n, latency, model, median, mean, p90, input_ms, output_ms, delivery, rest in rows:
        print(f"| {label} | {k} | {n} | {latency:.0f} | {model:.0f} | {median:.1f} | {mean:.1f} | {p90:.1f} | "
              f"{input_ms:.1f} | {output_ms:.1f} | {delivery:.1f} | {rest:.1f} |")
    target = [r for r in rows if r[0] == "512x1024 one process"]
    if target:
        worst = max(r[5] for r in target)
        print(f"\ntarget: overhead < 3 ms per exit at 512x1024 in one process: worst exit median {worst:.2f} ms "
              f"-> {'met' if worst < 3.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
