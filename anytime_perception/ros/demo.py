"""``anytime-demo``: the shipped clip through ``anytime_node``, recorded to a rosbag2 MCAP bag, checked and shown.

    anytime-demo --output demo_output

What it does:

1. starts ``anytime_node`` (person segmentation, ``adpc_hrnet_w18s_person_seg`` at 432x576, one torch thread) in its own
   process, with a private ROS_DOMAIN_ID, discovery on loopback only and the Fast DDS large-image profile;
2. records every output topic of the node (and the input frames as JPEG, camera_info, /diagnostics, /rosout)
   from this process into ``<output>/bag`` (rosbag2, MCAP);
3. plays the shipped clip (30 frames of OpenCV's vtest.avi) twice with ``anytime_player``, each time in its own
   process: pass ``all_exits`` at 1 fps with no deadline (every frame gets every exit), then pass ``realtime`` at the
   clip's 10 fps with a 400 ms deadline, newest frame wins, predictive deadlines (frames are cut short by newer
   frames and by deadlines) -- the deadline is changed between the passes through the node's parameter service;
4. after each pass waits until the node has accounted for every frame (its /diagnostics), then stops the node;
5. checks the bag: for every frame sent, every exit (1, 2, ... in order, with the input's header), or a reason why
   not that the node counted (a final message's stop_reason, or the node's end-reason counters for frames that ended
   between exits or before their first exit);
6. writes ``<output>/strip_<pass>_frame<NN>.png`` for sampled frames (input, then per exit: the published overlay,
   the confidence, the pixels this exit computed) and ``<output>/summary.md`` (also printed): per-exit latency,
   GFLOPs, computed fraction, deadline hits, and how frames ended.

Exit status 0 only if the check passes; 1 if it fails; 2 if the demo could not run.

The weights are the shipped person model's (``pretrained``; its card: ``anytime_perception/assets/models/``), and
the clip's frames are ones it never trained on. ``--model adpc_hrnet_w18s_seg --checkpoint calibrated-untrained``
shows the Cityscapes-sized network with untrained weights (realistic masks and compute, meaningless classes).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NAMESPACE = "/demo"
NODE_NAME = "anytime_node"
CLIP_FRAMES = 30


@dataclass
class Pass:
    name: str
    rate: float              # player frames per second
    deadline_ms: float       # node deadline_ms during the pass
    description: str


def default_passes(realtime_rate: float = 10.0, deadline_ms: float = 150.0, relaxed_rate: float = 2.0):
    return [Pass("all_exits", relaxed_rate, 0.0, f"{relaxed_rate:g} fps, no deadline: every exit of every frame"),
            Pass("realtime", realtime_rate, deadline_ms,
                 f"{realtime_rate:g} fps (the clip's rate), {deadline_ms:g} ms deadline: newer frames and deadlines "
                 "cut frames short")]


# ----- progress ----------------------------------------------------------------------------------------------------
class Progress:
    """The demo's progress on stderr, as a tqdm bar (redrawn at most every 3 s when stderr is not a terminal, so a
    log file gets a line now and then rather than a stream of redraws)."""

    def __init__(self, label: str, total: int | None, stream=None):
        from tqdm import tqdm

        stream = stream or sys.stderr
        self._bar = tqdm(total=total, desc=label, file=stream, mininterval=0.2 if stream.isatty() else 3.0,
                         dynamic_ncols=True, leave=True)

    def update(self, done: int, note: str = "") -> None:
        self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self, note: str = "") -> None:
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.close()


# ----- the run -------------------------------------------------------------------------------------------------------
def _child_env(domain_id: int) -> dict:
    from .fastdds import use_large_image_profile

    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("ROS_PYTHON_CHECK_FIELDS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    use_large_image_profile(env)
    return env


def node_command(args) -> list[str]:
    params = {"model": args.model, "checkpoint": args.checkpoint, "input_height": args.input_size[0],
              "input_width": args.input_size[1], "torch_threads": args.torch_threads, "deadline_ms": 0.0,
              "diagnostics_period_s": 0.5, "policies.frames": "newest_wins", "policies.deadline": "predictive",
              "lazy_outputs": False,
              # masks at the exit's resolution: the strips scale them anyway, and at the input's size (768x576)
              # every exit's images would make the bag ~10x larger (~1 GB) and the 2-core run slower
              "output_size": "exit"}
    command = [sys.executable, "-m", "anytime_perception.ros.process", "--ros-args", "-r", f"__ns:={NAMESPACE}",
               "-r", f"__node:={NODE_NAME}"]
    for name, value in params.items():
        text = (f"{value:.1f}" if isinstance(value, float) else str(value))
        command += ["-p", f"{name}:={text}"]
    return command


def player_command(rate: float, frames: int) -> list[str]:
    return [sys.executable, "-m", "anytime_perception.ros.player", "--ros-args", "-r", f"__ns:={NAMESPACE}",
            "-p", f"rate:={rate:.3f}", "-p", f"count:={frames}", "-p", "frame_id:=vtest_camera",
            "-p", "publish_compressed:=true", "-p", "wait_for_subscribers:=1",
            "-p", "wait_for_compressed_subscribers:=1", "-p", "wait_timeout_s:=30.0"]


def output_topics() -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.msg import Log
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from ..msg import AnytimeSegmentation, LabelInfo

    # the input frames as the player's JPEGs (the same headers as the raw frames the node takes, 1/20 of the size)
    topics = {"image/compressed": CompressedImage, "camera_info": CameraInfo, "segmentation": AnytimeSegmentation,
              "label_info": LabelInfo, "/diagnostics": DiagnosticArray, "/rosout": Log}
    for kind in ("labels", "confidence", "computed", "overlay"):
        topics[f"{kind}/image"] = Image
        topics[f"{kind}/camera_info"] = CameraInfo
    return topics


class DemoError(RuntimeError):
    pass


class _Watcher:
    """The demo process's ROS side: the bag recorder, /diagnostics, and a parameter client for the node."""

    def __init__(self, bag_path: Path):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node("anytime_demo_recorder", namespace=NAMESPACE)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.bag_path = bag_path
        self.recorder = None
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.diag_lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg) -> None:
        with self.diag_lock:
            for status in msg.status:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def input_values(self) -> dict[str, str]:
        with self.diag_lock:
            return dict(self.diagnostics.get(f"{NODE_NAME}: input image", {}))

    def node_ready(self) -> bool:
        return (self.node.count_publishers(f"{NAMESPACE}/segmentation") > 0
                and self.node.count_publishers(f"{NAMESPACE}/overlay/image") > 0
                and self.node.count_subscribers(f"{NAMESPACE}/image") > 0)

    def start_recording(self) -> None:
        from .bag import TopicRecorder

        self.recorder = TopicRecorder(self.node, self.bag_path, output_topics(), depth=200)

    def set_node_parameter(self, name: str, value) -> None:
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(self.node, f"{NAMESPACE}/{NODE_NAME}")
        if not client.wait_for_services(timeout_sec=10.0):
            raise DemoError("the node's parameter services did not appear")
        future = client.set_parameters([Parameter(name, value=value)])
        end = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        if not future.done() or not future.result().results[0].successful:
            raise DemoError(f"could not set {name} to {value!r} on the node")

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def _wait(predicate, timeout: float, what: str, process=None, progress: Progress | None = None,
          count=None) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise DemoError(f"{what}: the process exited with status {process.returncode}")
        if time.monotonic() > end:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
        if progress is not None and count is not None:
            progress.update(count())
        time.sleep(0.05)


def settled(values: dict, frames: int) -> bool:
    """Whether the node's input counters (from /diagnostics) account for ``frames`` frames: each one received
    (or counted lost) was rejected or submitted, and each submitted one has ended."""
    received = _int(values, "received")
    jobs = _int(values, "jobs.completed") + _int(values, "jobs.preempted") + _int(values, "jobs.dropped")
    return (received + _int(values, "lost") >= frames and _int(values, "accepted") + _int(values, "rejected") ==
            received and jobs == _int(values, "accepted") and _int(values, "jobs.in_flight") == 0)


def _int(values: dict, key: str) -> int:
    try:
        return int(values.get(key, "0"))
    except ValueError:
        return 0


def run(args) -> int:
    output = Path(args.output)
    bag_path = output / "bag"
    if bag_path.exists():
        if not (bag_path / "metadata.yaml").is_file():
            print(f"anytime-demo: {bag_path} exists and is not a bag; choose another --output", file=sys.stderr)
            return 2
        import shutil

        shutil.rmtree(bag_path)               # the previous demo's bag in the demo's own folder
    for old in output.glob("strip_*.png"):
        old.unlink()
    output.mkdir(parents=True, exist_ok=True)
    logs = output / "logs"
    logs.mkdir(exist_ok=True)
    domain_id = args.domain_id if args.domain_id is not None else random.SystemRandom().randint(1, 232)
    env = _child_env(domain_id)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE")})
    os.environ.pop("ROS_PYTHON_CHECK_FIELDS", None)
    passes = default_passes(args.rate, args.deadline_ms, args.relaxed_rate)
    frames = args.frames
    print(f"anytime-demo: {args.model} at {args.input_size[0]}x{args.input_size[1]}, weights {args.checkpoint}, "
          f"ROS_DOMAIN_ID={domain_id} (loopback only); output in {output}/")

    node_log = open(logs / "node.log", "w")
    node = subprocess.Popen(node_command(args), env=env, stdout=node_log, stderr=subprocess.STDOUT)
    watcher = None
    sent: dict[str, int] = {}
    try:
        watcher = _Watcher(bag_path)
        progress = Progress("starting anytime_node (loading the model, warming up)", None)
        began = time.monotonic()
        _wait(watcher.node_ready, args.startup_timeout, "anytime_node to start (see logs/node.log)", node, progress,
              lambda: int(time.monotonic() - began))
        progress.close("ready")
        watcher.start_recording()
        for index, demo_pass in enumerate(passes):
            watcher.set_node_parameter("deadline_ms", float(demo_pass.deadline_ms))
            before = _int(watcher.input_values(), "received")
            progress = Progress(f"pass {index + 1}/{len(passes)} {demo_pass.name} ({demo_pass.rate:g} fps, "
                                f"deadline {demo_pass.deadline_ms:g} ms)", frames)
            with open(logs / f"player_{demo_pass.name}.log", "w") as player_log:
                player = subprocess.Popen(player_command(demo_pass.rate, frames), env=env, stdout=player_log,
                                          stderr=subprocess.STDOUT)
                try:
                    timeout = frames / demo_pass.rate + 60.0
                    _wait(lambda: player.poll() is not None, timeout, "the player", None, progress,
                          lambda: watcher.recorder.counts.get(f"{NAMESPACE}/image/compressed", 0) - sum(sent.values()))
                finally:
                    if player.poll() is None:
                        player.send_signal(signal.SIGINT)
                        player.wait(10)
            if player.returncode != 0:
                raise DemoError(f"anytime_player exited with {player.returncode} (logs/player_{demo_pass.name}.log)")
            sent[demo_pass.name] = frames
            progress.update(frames, "waiting for the last results")

            _wait(lambda: settled(watcher.input_values(), before + frames), 60.0,
                  "the node to account for every frame", node)
            progress.close("every frame accounted for")
        time.sleep(1.0)       # the last /diagnostics and results reach the recorder
    except DemoError as error:
        print(f"\nanytime-demo: {error}", file=sys.stderr)
        _tail(logs / "node.log")
        return 2
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        node_log.close()
        if watcher is not None:
            watcher.close()
    if node.returncode != 0:
        print(f"anytime-demo: anytime_node exited with status {node.returncode} (logs/node.log)", file=sys.stderr)
        return 2

    print(f"recorded {bag_path}; checking it and writing the summary and strips")
    report = analyse(bag_path, passes, sent)
    summary = summary_markdown(report, args, domain_id)
    (output / "summary.md").write_text(summary)
    print(summary)
    strips = write_strips(report, output, args.samples)
    print(f"strips: {', '.join(str(p) for p in strips)}")
    if report.problems:
        print("anytime-demo: CHECK FAILED:\n  " + "\n  ".join(report.problems), file=sys.stderr)
        return 1
    print("anytime-demo: check passed: every frame sent has every exit or a counted reason why not")
    return 0


def _tail(path: Path, lines: int = 15) -> None:
    try:
        text = path.read_text().splitlines()[-lines:]
    except OSError:
        return
    print("\n".join(f"  | {line}" for line in text), file=sys.stderr)


# ----- analysis --------------------------------------------------------------------------------------------------------
@dataclass
class FrameRecord:
    stamp: int                               # header stamp, nanoseconds
    pass_name: str
    index: int                               # position in its pass (0-based)
    image: object = None                     # the input frame (the player's CompressedImage of it)
    exits: list = field(default_factory=list)        # AnytimeSegmentation messages, in bag order
    overlays: list = field(default_factory=list)     # overlay Image messages, in bag order


@dataclass
class Report:
    frames: list
    passes: list
    sent: dict
    diagnostics: dict                        # pass name -> the node's input counters at the end of the pass
    runtime: dict                            # the node's runtime status values at the end
    topic_counts: dict
    label_info: object
    problems: list
    bag_path: Path
    bag_bytes: int
    silent_reasons: dict     # pass name -> end reasons of the frames that ended without a final message


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def analyse(bag_path: Path, passes: list[Pass], sent: dict[str, int]) -> Report:
    """Read the bag and check it: every frame sent has every exit in order (1..k without gaps, each with the
    input's header), and the frames with fewer exits than the model has are explained by a final message's
    stop_reason or by the node's end-reason counters of that pass."""
    from .bag import read_bag

    frames: dict[int, FrameRecord] = {}
    order: list[int] = []
    counts: dict[str, int] = defaultdict(int)
    diag_by_time: list[tuple[int, dict, dict]] = []
    label_info = None
    overlays: dict[int, list] = defaultdict(list)
    segmentations: list = []
    for item in read_bag(bag_path):
        counts[item.topic] += 1
        topic = item.topic[len(NAMESPACE) + 1:] if item.topic.startswith(NAMESPACE + "/") else item.topic
        msg = item.message
        if topic == "image/compressed":
            stamp = _stamp_ns(msg.header)
            frames[stamp] = FrameRecord(stamp, "", 0, image=msg)
            order.append(stamp)
        elif topic == "segmentation":
            segmentations.append(msg)
        elif topic == "overlay/image":
            overlays[_stamp_ns(msg.header)].append(msg)
        elif topic == "label_info":
            label_info = msg
        elif topic == "/diagnostics":
            inputs = {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}
            diag_by_time.append((item.timestamp_ns, inputs.get(f"{NODE_NAME}: input image", {}),
                                 inputs.get(f"{NODE_NAME}: runtime", {})))
    problems: list[str] = []
    # passes: the image messages in recording order, `sent[pass]` frames each
    position = 0
    for demo_pass in passes:
        count = sent.get(demo_pass.name, 0)
        for i, stamp in enumerate(order[position:position + count]):
            frames[stamp].pass_name, frames[stamp].index = demo_pass.name, i
        got = len(order[position:position + count])
        if got != count:
            problems.append(f"pass {demo_pass.name}: {count} frames sent, {got} recorded on image/compressed")
        position += count
    if position != len(order):
        problems.append(f"{len(order) - position} frames recorded that no pass sent")
    for msg in segmentations:
        stamp = _stamp_ns(msg.header)
        if stamp not in frames:
            problems.append(f"an exit for a frame that was never sent (stamp {stamp})")
            continue
        frames[stamp].exits.append(msg)
    for stamp, msgs in overlays.items():
        if stamp in frames:
            frames[stamp].overlays = msgs

    # the node's counters at the end of each pass: the last /diagnostics whose received count covers the pass
    diagnostics: dict[str, dict] = {}
    runtime: dict = diag_by_time[-1][2] if diag_by_time else {}
    cumulative = 0
    previous: dict = {}
    for demo_pass in passes:
        cumulative += sent.get(demo_pass.name, 0)
        final = None
        for _, values, _ in diag_by_time:
            if settled(values, cumulative):
                final = values
                break
        if final is None:
            problems.append(f"pass {demo_pass.name}: no /diagnostics accounting for all of its frames")
            final = {}
        diagnostics[demo_pass.name] = _difference(final, previous)
        previous = final

    # every frame: exits 1..k in order with its header, and a reason for the missing ones
    silent_reasons: dict[str, dict[str, int]] = {}
    for demo_pass in passes:
        mine = [f for f in frames.values() if f.pass_name == demo_pass.name]
        ended = {k[len("ended."):]: v for k, v in diagnostics[demo_pass.name].items() if k.startswith("ended.")}
        unexplained = dict(ended)
        silent = 0                       # frames whose end no message says (between exits, or before exit 1)
        for f in mine:
            indices = [m.exit_index for m in f.exits]
            if indices != list(range(1, len(indices) + 1)):
                problems.append(f"{demo_pass.name} frame {f.index}: exits {indices}, not 1..k in order")
            if any(m.header != f.image.header for m in f.exits):
                problems.append(f"{demo_pass.name} frame {f.index}: an exit's header differs from the input's")
            finals = [m for m in f.exits if m.is_final]
            if finals and finals[-1] is not f.exits[-1]:
                problems.append(f"{demo_pass.name} frame {f.index}: an exit after the final one")
            if f.exits and f.exits[-1].is_final:
                reason = f.exits[-1].stop_reason
                if f.exits[-1].exit_index != f.exits[-1].num_exits and reason == "last_exit":
                    problems.append(f"{demo_pass.name} frame {f.index}: last_exit before the last exit")
                unexplained[reason] = unexplained.get(reason, 0) - 1
            else:
                silent += 1
        negative = {r: n for r, n in unexplained.items() if n < 0}
        if negative:
            problems.append(f"pass {demo_pass.name}: final messages with reasons the node did not count: {negative}")
        if unexplained.get("last_exit", 0) > 0:      # a job that ran every exit always publishes a final one
            problems.append(f"pass {demo_pass.name}: the node counted {unexplained['last_exit']} frame(s) ending "
                            "with last_exit whose final message is not in the bag")
            unexplained["last_exit"] = 0
        counted = sum(n for n in unexplained.values() if n > 0)
        silent_reasons[demo_pass.name] = {r: n for r, n in unexplained.items() if n > 0}
        if counted != silent:
            problems.append(f"pass {demo_pass.name}: {silent} frames ended without a final message, but the node "
                            f"counted {counted} such ends ({unexplained})")
        received = _int(diagnostics[demo_pass.name], "received")
        if received != sent.get(demo_pass.name, 0):
            lost = _int(diagnostics[demo_pass.name], "lost") + _int(diagnostics[demo_pass.name], "rejected")
            if received + lost < sent.get(demo_pass.name, 0):
                problems.append(f"pass {demo_pass.name}: {sent.get(demo_pass.name, 0)} sent, the node received "
                                f"{received} and counted {lost} lost or rejected")
    ordered = sorted(frames.values(), key=lambda f: f.stamp)
    size = sum(p.stat().st_size for p in Path(bag_path).rglob("*") if p.is_file())
    return Report(ordered, passes, sent, diagnostics, runtime, dict(counts), label_info, problems, Path(bag_path),
                  size, silent_reasons)


def _difference(now: dict, before: dict) -> dict:
    out = {}
    for key, value in now.items():
        try:
            out[key] = int(value) - int(before.get(key, "0"))
        except ValueError:
            out[key] = value
    return out


# ----- summary ---------------------------------------------------------------------------------------------------------
def _pct(values, q) -> str:
    return f"{np.percentile(values, q):.0f}" if len(values) else "-"


def summary_markdown(report: Report, args, domain_id: int) -> str:
    lines = ["# anytime-demo summary", ""]
    weights = report.runtime.get("weights", args.checkpoint)
    lines += [f"- model `{args.model}` at {args.input_size[0]}x{args.input_size[1]} on CPU, "
              f"{args.torch_threads} torch thread(s); policies: newest frame wins, predictive deadline",
              f"- weights: {weights}",
              f"- bag: `{report.bag_path}` ({report.bag_bytes / 1e6:.1f} MB, "
              f"{sum(report.topic_counts.values())} messages on {len(report.topic_counts)} topics)",
              f"- latency = from the frame's header stamp to the exit's publication (`end_to_end_ms`); "
              f"model = `exit_time_ms` (this exit's own compute)", ""]
    for demo_pass in report.passes:
        mine = [f for f in report.frames if f.pass_name == demo_pass.name]
        diag = report.diagnostics.get(demo_pass.name, {})
        lines += [f"## pass `{demo_pass.name}`: {demo_pass.description}", ""]
        lines += ["| exit | delivered | latency p50 / p90 / max ms | model ms (mean) | GFLOPs (mean) | computed "
                  "fraction (mean) | in time |", "|---|---|---|---|---|---|---|"]
        by_exit: dict[int, list] = defaultdict(list)
        for f in mine:
            for m in f.exits:
                by_exit[m.exit_index].append(m)
        num_exits = max((m.num_exits for f in mine for m in f.exits), default=4)
        for k in range(1, num_exits + 1):
            msgs = by_exit.get(k, [])
            e2e = [m.end_to_end_ms for m in msgs]
            in_time = [m.end_to_end_ms <= m.deadline_ms for m in msgs if m.deadline_ms > 0]
            if not msgs:
                lines.append(f"| {k} | 0/{len(mine)} | - | - | - | - | - |")
                continue
            hits = f"{sum(in_time)}/{len(in_time)}" if in_time else "no deadline"
            lines.append(
                f"| {k} | {len(msgs)}/{len(mine)} | {_pct(e2e, 50)} / {_pct(e2e, 90)} / {max(e2e):.0f} | "
                f"{np.mean([m.exit_time_ms for m in msgs]):.1f} | {np.mean([m.gflops for m in msgs]):.2f} | "
                f"{np.mean([m.computed_fraction for m in msgs]):.2f} | {hits} |")
        outcomes: dict[str, int] = defaultdict(int)
        for f in mine:
            if f.exits and f.exits[-1].is_final:
                outcomes[f"{len(f.exits)} exits, final: {f.exits[-1].stop_reason}"] += 1
            else:
                outcomes[f"{len(f.exits)} exits, ended without a final message"] += 1
        lines += ["", "| how frames ended (from the bag) | frames |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(outcomes.items())]
        ended = {k[len("ended."):]: v for k, v in diag.items() if k.startswith("ended.") and v}
        lines += ["", f"Node accounting for this pass: {diag.get('received', '?')} frames received, "
                  f"{diag.get('jobs.completed', '?')} completed, {diag.get('jobs.preempted', '?')} preempted, "
                  f"{diag.get('jobs.dropped', '?')} dropped, {diag.get('rejected', 0)} rejected, "
                  f"{diag.get('lost', 0)} lost; end reasons: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(ended.items())) or "none")
                  + ". Reasons: `last_exit` every exit; `preempted` a newer frame took over (after at least one "
                  "exit); `predicted_miss` the next exit would have finished after the deadline; `deadline` the "
                  "deadline passed; `superseded`/`expired` dropped before the first exit.", ""]
    if report.problems:
        lines += ["## check FAILED", ""] + [f"- {p}" for p in report.problems]
    else:
        lines += ["Check passed: every frame sent has every exit, in order, with its input header, or a reason why "
                  "not that the node counted."]
    return "\n".join(lines) + "\n"


# ----- strips ----------------------------------------------------------------------------------------------------------
def _panel(image: np.ndarray, title: str, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST)
    bar = np.full((24, w, 3), 30, np.uint8)
    cv2.putText(bar, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def _placeholder(text: str, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    panel = np.full((h, w, 3), 60, np.uint8)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        cv2.putText(panel, line, (10, h // 2 - 10 * len(lines) + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (200, 200, 200), 1, cv2.LINE_AA)
    return panel


def _confidence_rgb(msg) -> np.ndarray:
    import cv2

    from .image_codec import image_to_array

    conf = image_to_array(msg).astype(np.float32)
    if msg.encoding == "mono8":
        conf = conf / 255.0
    # the max-softmax confidence lies in [1/K, 1]; show 0.5..1 (the 0.998 threshold sits at the top end)
    scaled = np.clip((conf - 0.5) / 0.5, 0.0, 1.0)
    return cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[:, :, ::-1]


def _computed_rgb(msg, rgb: np.ndarray) -> np.ndarray:
    import cv2

    from .image_codec import image_to_array

    mask = image_to_array(msg) > 127
    h, w = rgb.shape[:2]
    up = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = (rgb.astype(np.float32) * 0.35).astype(np.uint8)
    out[up] = (0.4 * rgb[up] + 0.6 * np.array([255, 140, 0])).astype(np.uint8)
    return out


def write_strip(frame: FrameRecord, path: Path, num_exits: int = 4, banner: str = "",
                silent: dict | None = None) -> Path:
    import cv2

    from .image_codec import compressed_to_rgb, image_to_array

    rgb = compressed_to_rgb(frame.image)
    size = (frame.overlays[0].height, frame.overlays[0].width) if frame.overlays else (288, 384)
    rows = [[_panel(rgb, f"input ({frame.pass_name} frame {frame.index})", size)],
            [_placeholder("confidence of each exit\n(0.5 dark .. 1.0 yellow)", size)],
            [_placeholder("orange: pixels this exit computed\ndark: carried over (confident)", size)]]
    rows[1][0] = _panel(rows[1][0], "", size)
    rows[2][0] = _panel(rows[2][0], "", size)
    final = frame.exits[-1] if frame.exits else None
    for k in range(1, num_exits + 1):
        msg = next((m for m in frame.exits if m.exit_index == k), None)
        if msg is None:
            counted = "\n".join(f"  {r}: {n}" for r, n in sorted((silent or {}).items()))
            where = "between exits" if frame.exits else "before exit 1"
            why = (f"not computed:\n{final.stop_reason} after exit {final.exit_index}" if final is not None and
                   final.is_final else f"not computed: ended {where}\nsuch ends in this pass\n(node counters):\n"
                   f"{counted}")
            for row in rows:
                row.append(_panel(_placeholder(why, size), f"exit {k}", size))
            continue
        overlay = image_to_array(frame.overlays[k - 1]) if len(frame.overlays) >= k else \
            cv2.resize(rgb, (size[1], size[0]))
        rows[0].append(_panel(overlay, f"exit {k}: {msg.end_to_end_ms:.0f} ms, {msg.gflops:.2f} GFLOPs", size))
        rows[1].append(_panel(_confidence_rgb(msg.confidence), f"exit {k} confidence", size))
        rows[2].append(_panel(_computed_rgb(msg.computed, cv2.resize(rgb, (size[1], size[0]))),
                              f"exit {k}: computed {msg.computed_fraction:.0%}"
                              + (f", final: {msg.stop_reason}" if msg.is_final else ""), size))
    grid = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    if banner:
        top = np.full((28, grid.shape[1], 3), 90, np.uint8)
        cv2.putText(top, banner, (8, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 230, 120), 1, cv2.LINE_AA)
        grid = np.concatenate([top, grid], axis=0)
    cv2.imwrite(str(path), np.ascontiguousarray(grid[:, :, ::-1]))
    return path


def write_strips(report: Report, output: Path, samples: int) -> list[Path]:
    paths = []
    banner = ("UNTRAINED weights (calibrated-untrained): class colours are meaningless; masks, compute and timing "
              "are real") if "untrained" in report.runtime.get("weights", "untrained") else ""
    for demo_pass in report.passes:
        mine = [f for f in report.frames if f.pass_name == demo_pass.name]
        if not mine or samples <= 0:
            continue
        picks = sorted({round(i * (len(mine) - 1) / max(samples - 1, 1)) for i in range(samples)})
        for i in picks:
            frame = mine[i]
            path = output / f"strip_{demo_pass.name}_frame{frame.index:02d}.png"
            paths.append(write_strip(frame, path, banner=banner,
                                     silent=report.silent_reasons.get(demo_pass.name)))
    return paths


# ----- command line ----------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    from ..argtypes import parse_size

    parser = argparse.ArgumentParser(prog="anytime-demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--output", default="demo_output",
                        help="output folder (default: demo_output); a previous demo's bag and strips there are replaced")
    parser.add_argument("--model", default="adpc_hrnet_w18s_person_seg", help="a segmentation model name")
    parser.add_argument("--checkpoint", default="pretrained",
                        help="weights: pretrained (the shipped ones, default), calibrated-untrained or a file")
    parser.add_argument("--input-size", type=parse_size, default=(432, 576),
                        help="model input HxW (default 432x576: 3/4 of the clip's frames, inside the shipped "
                             "model's training scales)")
    parser.add_argument("--deadline-ms", type=float, default=400.0, help="deadline of the realtime pass")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second of the realtime pass")
    parser.add_argument("--relaxed-rate", type=float, default=1.0, help="frames per second of the all_exits pass")
    parser.add_argument("--frames", type=int, default=CLIP_FRAMES, help="frames per pass (default: the clip's 30)")
    parser.add_argument("--samples", type=int, default=3, help="PNG strips per pass")
    parser.add_argument("--torch-threads", type=int, default=1, help="PyTorch threads of the node")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: a random one)")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the node")
    args = parser.parse_args(argv)
    if not 1 <= args.frames <= 10000:
        parser.error("--frames must lie in 1..10000")
    if args.rate <= 0 or args.relaxed_rate <= 0:
        parser.error("rates must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("anytime-demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
