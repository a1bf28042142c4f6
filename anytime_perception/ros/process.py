"""The ``anytime_node`` process: arguments, signals, spinning, and an orderly end.

SIGINT and SIGTERM only set an event. The main thread then stops the node in order while its context is still
valid: inputs close, frames and goals in flight end (``shutdown``, each camera frame with its ``frame_end``, each
goal with its result), the executor stops, and rclpy shuts down last. rclpy's own signal handler would shut the
context down first, and the last exits would fail to publish (an ERROR line at every Ctrl-C).
"""
from __future__ import annotations

import signal
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

from .fastdds import use_large_image_profile
from .lifecycle import AnytimeLifecycleNode
from .node import AnytimeNode, ConfigurationError, make_executor

#: How long the end waits for goals in flight to return their results, and for the executor's thread.
SHUTDOWN_TIMEOUT_S = 5.0


def main(argv: list[str] | None = None) -> int:
    """Console script ``anytime_node [--lifecycle] --ros-args ...``; returns the exit status."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    try:
        extra = remove_ros_args(argv)[1:]
    except Exception as error:  # noqa: BLE001 - rclpy's RCLInvalidROSArgsError is not importable by name
        print(f"anytime_node: bad --ros-args: {error}", file=sys.stderr)
        return 2
    lifecycle = "--lifecycle" in extra
    unknown = [a for a in extra if a != "--lifecycle"]
    if unknown:
        print(f"anytime_node: unknown argument(s) {' '.join(unknown)}\nusage: anytime_node [--lifecycle] "
              "[--ros-args -p name:=value -r from:=to --params-file FILE ...]", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    use_large_image_profile()
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = spinner = None
    code = 0
    try:
        node = AnytimeLifecycleNode() if lifecycle else AnytimeNode()
        executor = make_executor(node)
        spinner = threading.Thread(target=_spin, args=(executor, stop), name="executor", daemon=True)
        spinner.start()
        while not stop.wait(0.5):     # a timed wait: Python runs signal handlers between waits
            pass
        node.perception.deactivate()  # the executor still spins: goals in flight receive their results
        node.perception.action.wait_finished(SHUTDOWN_TIMEOUT_S)
    except ConfigurationError:
        code = 1          # logged by the node
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=SHUTDOWN_TIMEOUT_S)
        if spinner is not None:
            spinner.join(timeout=SHUTDOWN_TIMEOUT_S)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _spin(executor, stop: threading.Event) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    finally:
        stop.set()        # the executor ended (external shutdown): end the process as for a signal


if __name__ == "__main__":
    sys.exit(main())
