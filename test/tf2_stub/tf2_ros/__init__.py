"""A stand-in for ``tf2_ros`` (not on PyPI) so the relocalizer's TF modes run over the wire in CI.

Only what the node uses, and only direct transforms (no chains, no interpolation): a transform
is looked up at its exact stamp, the latest one at time 0, and a stamp newer than any waits up to
the timeout. ``tf2_msgs`` is not on PyPI either, so transforms travel one
``geometry_msgs/TransformStamped`` per message on ``/tf_stub`` (and ``/tf_stub_static``,
latched); ``TransformBroadcaster`` publishes on ``/tf_stub_out``. Like tf2, ``clear()`` keeps
static transforms. Lines starting ``tf2 stub:`` on stderr say what the node asked of it.
"""

from __future__ import annotations

import sys
import threading
import time

from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

IN, IN_STATIC, OUT = "/tf_stub", "/tf_stub_static", "/tf_stub_out"
LATCHED = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def _say(text: str) -> None:
    print(f"tf2 stub: {text}", file=sys.stderr, flush=True)


class TransformException(Exception):
    pass


def _ns(stamp) -> int:
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


class Buffer:
    def __init__(self, cache_time=None, node=None) -> None:
        self._lock = threading.Condition()
        self._dynamic: dict[tuple[str, str], dict[int, TransformStamped]] = {}
        self._static: dict[tuple[str, str], TransformStamped] = {}

    def set_transform(self, msg: TransformStamped, authority: str, static: bool = False) -> None:
        key = (msg.header.frame_id, msg.child_frame_id)
        with self._lock:
            if static:
                self._static[key] = msg
            else:
                self._dynamic.setdefault(key, {})[_ns(msg.header.stamp)] = msg
            self._lock.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._dynamic.clear()
        _say("buffer cleared")

    def lookup_transform(self, target_frame, source_frame, time_, timeout=None):
        key = (target_frame, source_frame)
        stamp = int(time_.nanoseconds)
        wait_s = 0.0 if timeout is None else timeout.nanoseconds * 1e-9
        if key in self._static or key not in self._dynamic:
            _say(f"lookup {target_frame}->{source_frame} at {stamp} timeout {wait_s:g}")
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                if key in self._static:
                    return self._static[key]
                stamps = self._dynamic.get(key, {})
                if stamps and stamp == 0:
                    return stamps[max(stamps)]
                if stamp in stamps:
                    return stamps[stamp]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransformException(f"no transform {target_frame} -> {source_frame} at {stamp} (stub)")
                self._lock.wait(left)


class TransformListener:
    def __init__(self, buffer: Buffer, node, spin_thread: bool = False, qos=None, static_qos=None) -> None:
        self.buffer, self.node = buffer, node
        self._warned = False
        node.create_subscription(TransformStamped, IN, lambda m: self._got(m, False), 100)
        node.create_subscription(TransformStamped, IN_STATIC, lambda m: self._got(m, True), LATCHED)
        _say(f"listener on node {node.get_fully_qualified_name()}")
        if spin_thread:
            from rclpy.executors import SingleThreadedExecutor

            self.executor = SingleThreadedExecutor(context=node.context)
            self.executor.add_node(node)
            threading.Thread(target=self._spin, daemon=True).start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context shut down
            pass

    def _got(self, msg: TransformStamped, static: bool) -> None:
        if threading.current_thread() is threading.main_thread() and not self._warned:
            self._warned = True
            _say("callback on the main thread")
        self.buffer.set_transform(msg, "stub", static)


class TransformBroadcaster:
    def __init__(self, node, qos=100) -> None:
        self.pub = node.create_publisher(TransformStamped, OUT, qos)

    def sendTransform(self, transform) -> None:  # noqa: N802 - tf2_ros's name
        for msg in transform if isinstance(transform, list) else [transform]:
            self.pub.publish(msg)
