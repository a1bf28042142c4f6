"""Record topics to a real rosbag2 MCAP bag and read it back, without rosbag2 (``rosbags`` from PyPI).

The bags are rosbag2 version 9 (ROS 2 Kilted) with MCAP storage: ``ros2 bag info/play`` and Foxglove open them.
This package's messages (AnytimeSegmentation, AnytimePose, ...) are registered from their .msg definitions, so a
bag carries their schemas and type hashes like any other type.

Recording from a live graph::

    recorder = TopicRecorder(node, "out/demo_bag", {"segmentation": AnytimeSegmentation, "image": Image})
    ...spin...
    recorder.close()

Writing messages you already hold: :class:`BagWriter`. Reading: :func:`read_bag`.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from .resources import PACKAGE, _SOURCE_ROOT, share_dir

__all__ = ["BagMessage", "BagWriter", "TopicRecorder", "read_bag", "make_typestore", "type_name", "import_type"]

BAG_VERSION = 9   # rosbag2 metadata version of ROS 2 Kilted


def type_name(msg_type: Any) -> str:
    """``'sensor_msgs/msg/Image'`` for the rclpy message class (or instance) ``sensor_msgs.msg.Image``."""
    cls = msg_type if isinstance(msg_type, type) else type(msg_type)
    package, kind = cls.__module__.split(".")[:2]
    return f"{package}/{kind}/{cls.__name__}"


def import_type(name: str) -> type:
    """The rclpy message class for ``'pkg/msg/Name'`` (also accepts ``'pkg/Name'``)."""
    parts = name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"not a ROS type name: {name!r}")
    package, kind, cls_name = parts
    return getattr(importlib.import_module(f"{package}.{kind}"), cls_name)


def _msg_dir() -> Path:
    try:
        installed = share_dir() / "msg"
        if any(installed.glob("*.msg")):
            return installed
    except FileNotFoundError:
        pass
    return _SOURCE_ROOT / "msg"


def make_typestore(msg_dir: Path | None = None):
    """A rosbags typestore of ROS 2 Kilted plus this package's messages (from ``msg_dir``, default: the installed
    share/anytime_perception/msg, else the source tree's msg/)."""
    store = get_typestore(Stores.ROS2_KILTED)
    directory = Path(msg_dir) if msg_dir is not None else _msg_dir()
    types: dict = {}
    for path in sorted(directory.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    if not types:
        raise FileNotFoundError(f"no .msg files in {directory}")
    store.register(types)
    return store


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str          # e.g. 'anytime_perception/msg/AnytimeSegmentation'
    timestamp_ns: int     # receive (record) time
    message: Any          # rclpy message, rosbags dataclass or raw CDR bytes, as read_bag() was asked


class BagWriter:
    """A rosbag2 bag (MCAP by default) that takes rclpy messages or serialized CDR bytes. Thread-safe."""

    def __init__(self, path: str | Path, storage: str = "mcap", typestore=None):
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; rosbag2 writes a new folder")
        self.typestore = typestore if typestore is not None else make_typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msg_type: Any) -> None:
        """Declare a topic with its type (rclpy class or 'pkg/msg/Name'); once per topic."""
        name = msg_type if isinstance(msg_type, str) else type_name(msg_type)
        with self._lock:
            if topic in self._connections:
                if self._connections[topic].msgtype != name:
                    known = self._connections[topic].msgtype
                    raise ValueError(f"topic {topic} already recorded as {known}, not {name}")
                return
            if name not in self.typestore.types:
                raise KeyError(f"type {name} is unknown to the typestore; register its .msg definition")
            self._connections[topic] = self._writer.add_connection(topic, name, typestore=self.typestore)
            self.counts[topic] = 0

    def write(self, topic: str, message: Any, timestamp_ns: int) -> None:
        """Write an rclpy message (serialized here) or CDR bytes on a declared topic."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            data = bytes(message)
        else:
            from rclpy.serialization import serialize_message

            data = serialize_message(message)
        with self._lock:
            connection = self._connections.get(topic)
            if connection is None:
                raise KeyError(f"topic {topic} was not added")
            if self._writer is None:
                raise RuntimeError("bag is closed")
            self._writer.write(connection, int(timestamp_ns), data)
            self.counts[topic] += 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TopicRecorder:
    """Subscribe to topics on an rclpy node and write every message, serialized as received (raw subscriptions:
    no deserialization), into a bag stamped with the node clock at reception.

    ``topics`` maps topic names (resolved like the node's own: relative names get the node's namespace) to rclpy
    message classes. QoS per topic, unless given in ``qos``: reliable, or best-effort when a publisher offers only
    best effort; transient-local when every publisher is (latched topics such as ``label_info``). Publishers that
    appear later are matched with that choice, as ``ros2 bag record`` does.
    """

    def __init__(self, node, path: str | Path, topics: Mapping[str, type], storage: str = "mcap",
                 qos: Mapping[str, Any] | None = None, depth: int = 100):
        self.node = node
        self.bag = BagWriter(path, storage=storage)
        self._subscriptions = []
        for topic, msg_type in topics.items():
            resolved = node.resolve_topic_name(topic)
            self.bag.add_topic(resolved, msg_type)
            profile = (qos or {}).get(topic) or self._adapted_qos(resolved, depth)
            self._subscriptions.append(node.create_subscription(
                msg_type, resolved, lambda data, t=resolved: self._on_message(t, data), profile, raw=True))

    def _adapted_qos(self, topic: str, depth: int):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        offered = [info.qos_profile for info in self.node.get_publishers_info_by_topic(topic)]
        reliability = ReliabilityPolicy.RELIABLE
        if any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in offered):
            reliability = ReliabilityPolicy.BEST_EFFORT
        durability = DurabilityPolicy.VOLATILE
        if offered and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered):
            durability = DurabilityPolicy.TRANSIENT_LOCAL
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)

    def _on_message(self, topic: str, data: bytes) -> None:
        self.bag.write(topic, data, self.node.get_clock().now().nanoseconds)

    @property
    def counts(self) -> dict[str, int]:
        """Messages written per topic."""
        return dict(self.bag.counts)

    def close(self) -> None:
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        self.bag.close()


def read_bag(path: str | Path, topics: Iterable[str] | None = None, deserialize: str = "rclpy",
             typestore=None) -> Iterator[BagMessage]:
    """Messages of a rosbag2 bag (MCAP or SQLite3) in time order.

    ``deserialize``: ``"rclpy"`` (rclpy message objects; needs the types importable, e.g. the generated
    ``anytime_perception.msg``), ``"rosbags"`` (rosbags dataclasses; needs no ROS at all) or ``"none"`` (CDR bytes).
    ``topics`` restricts to those topic names.
    """
    if deserialize not in ("rclpy", "rosbags", "none"):
        raise ValueError(f"deserialize must be 'rclpy', 'rosbags' or 'none', got {deserialize!r}")
    wanted = set(topics) if topics is not None else None
    with Reader(Path(path)) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        store = None
        if deserialize == "rosbags":
            store = typestore if typestore is not None else make_typestore()
        classes: dict[str, type] = {}
        if deserialize == "rclpy":
            from rclpy.serialization import deserialize_message
        for connection, timestamp, data in reader.messages(connections=connections):
            if deserialize == "rclpy":
                if connection.msgtype not in classes:
                    classes[connection.msgtype] = import_type(connection.msgtype)
                cls = classes[connection.msgtype]
                message = deserialize_message(bytes(data), cls)
            elif deserialize == "rosbags":
                message = store.deserialize_cdr(bytes(data), connection.msgtype)
            else:
                message = bytes(data)
            yield BagMessage(connection.topic, connection.msgtype, timestamp, message)
