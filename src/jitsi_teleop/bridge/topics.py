"""The topic configuration: which ROS topics cross the room, in which direction and how.

One YAML file serves both sites (docs/topics.md). Each entry names the sending site (``from``),
the local topic there, the name on the wire (``remote``, default: the topic without its leading
slash), the ROS type, the delivery class, the sender's rate and age limits, and the QoS the
receiving site republishes with. The receiver republishes under ``<peer_prefix>/<remote>``
(default prefix: ``/<peer role>``), so ``joint_states`` from the leader appears as
``/leader/joint_states`` at the follower, next to the follower's own ``/joint_states``.

Why one file for both ends: the two configs must agree on type and delivery per topic, and one
file makes that the default; the session still checks the peer's announcement (type name and
type hash) against this end's expectations and refuses a mismatch by topic name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROLES = ("leader", "follower")
DELIVERIES = ("latest", "reliable")
RELIABILITIES = ("reliable", "best_effort")
DURABILITIES = ("volatile", "transient_local")
_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*/msg/[A-Za-z][A-Za-z0-9_]*")
_NAME_RE = re.compile(r"/?[A-Za-z~][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")
_TOPIC_KEYS = {
    "topic",
    "from",
    "remote",
    "publish_as",
    "type",
    "delivery",
    "max_rate_hz",
    "max_age_s",
    "qos",
}
_QOS_KEYS = {"reliability", "durability", "depth"}


class TopicConfigError(ValueError):
    """The topic file is not usable; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class QosSpec:
    """QoS of the republishing publisher at the receiving site (what local subscribers see).

    The default (reliable, volatile, depth 10) matches any subscriber; ``transient_local``
    lets a late subscriber get the last sample (e-stop)."""

    reliability: str = "reliable"
    durability: str = "volatile"
    depth: int = 10


@dataclass(frozen=True)
class TopicSpec:
    """One stream of the configuration."""

    topic: str  #: local topic at the sending site
    sender: str  #: ``leader`` or ``follower``
    ros_type: str  #: ``pkg/msg/Type``
    remote: str  #: name on the wire (the stream descriptor's topic)
    delivery: str = "latest"
    max_rate_hz: float = 100.0
    max_age_s: float = 0.5
    qos: QosSpec = field(default_factory=QosSpec)
    publish_as: str | None = None  #: explicit topic at the receiver (default: prefix + remote)

    def receive_topic(self, peer_prefix: str) -> str:
        """Where the receiving site republishes this stream."""
        if self.publish_as:
            return self.publish_as
        return (
            f"{peer_prefix.rstrip('/')}/{self.remote}"
            if peer_prefix.strip("/")
            else ("/" + self.remote)
        )


@dataclass(frozen=True)
class TopicsConfig:
    topics: tuple[TopicSpec, ...]
    source: str = "<memory>"

    def outgoing(self, role: str) -> list[TopicSpec]:
        """What ``role`` sends, in file order (the order fixes the stream ids)."""
        return [t for t in self.topics if t.sender == role]

    def incoming(self, role: str) -> list[TopicSpec]:
        """What ``role`` receives from its peer."""
        return [t for t in self.topics if t.sender != role]


def peer_of(role: str) -> str:
    if role not in ROLES:
        raise TopicConfigError(f"role must be leader or follower, not {role!r}")
    return "follower" if role == "leader" else "leader"


def default_peer_prefix(role: str) -> str:
    """``/leader`` at the follower, ``/follower`` at the leader."""
    return "/" + peer_of(role)


def load_topics(path: str | Path) -> TopicsConfig:
    """Read and validate a topic file; every problem is a :class:`TopicConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise TopicConfigError(f"{p}: cannot read the topic file: {e.strerror}") from None
    return parse_topics(text, source=str(p))


def parse_topics(text: str, source: str = "<memory>") -> TopicsConfig:
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:  # RecursionError: deeply nested YAML
        raise TopicConfigError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("topics"), list):
        raise TopicConfigError(f"{source}: expected a mapping with a 'topics' list")
    unknown = set(doc) - {"topics"}
    if unknown:
        raise TopicConfigError(f"{source}: unknown top-level keys {sorted(map(str, unknown))}")
    specs = [_topic(source, i, item) for i, item in enumerate(doc["topics"])]
    if not specs:
        raise TopicConfigError(f"{source}: the 'topics' list is empty")
    _check_unique(source, specs)
    return TopicsConfig(tuple(specs), source)


def _topic(source: str, index: int, item: Any) -> TopicSpec:
    where = f"{source}: topics[{index}]"
    if not isinstance(item, Mapping):
        raise TopicConfigError(f"{where}: expected a mapping")
    unknown = set(item) - _TOPIC_KEYS
    if unknown:
        raise TopicConfigError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    topic = item.get("topic")
    if not isinstance(topic, str) or not _NAME_RE.fullmatch(topic):
        raise TopicConfigError(f"{where}: 'topic' must be a ROS topic name, got {topic!r}")
    where = f"{source}: topic {topic}"
    sender = item.get("from")
    if sender not in ROLES:
        raise TopicConfigError(f"{where}: 'from' must be leader or follower, got {sender!r}")
    ros_type = item.get("type")
    if not isinstance(ros_type, str) or not _TYPE_RE.fullmatch(ros_type):
        raise TopicConfigError(f"{where}: 'type' must look like pkg/msg/Type, got {ros_type!r}")
    remote = item.get("remote", topic.lstrip("/"))
    if (
        not isinstance(remote, str)
        or not _NAME_RE.fullmatch(remote)
        or remote.startswith(("/", "~"))
    ):
        raise TopicConfigError(f"{where}: 'remote' must be a relative topic name, got {remote!r}")
    if topic.startswith("~"):
        raise TopicConfigError(f"{where}: private (~) topics cannot cross")
    publish_as = item.get("publish_as")
    if publish_as is not None and (
        not isinstance(publish_as, str) or not _NAME_RE.fullmatch(publish_as)
    ):
        raise TopicConfigError(f"{where}: 'publish_as' must be a topic name, got {publish_as!r}")
    delivery = item.get("delivery", "latest")
    if delivery not in DELIVERIES:
        raise TopicConfigError(f"{where}: 'delivery' must be latest or reliable, got {delivery!r}")
    rate = _positive(where, "max_rate_hz", item.get("max_rate_hz", 100.0))
    age = _positive(where, "max_age_s", item.get("max_age_s", 0.5))
    return TopicSpec(
        topic=topic,
        sender=sender,
        ros_type=ros_type,
        remote=remote,
        delivery=delivery,
        max_rate_hz=rate,
        max_age_s=age,
        qos=_qos(where, item.get("qos", {}), delivery),
        publish_as=publish_as,
    )


def _positive(where: str, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise TopicConfigError(f"{where}: '{name}' must be a positive number, got {v!r}")
    return float(v)


#: republisher depth of a ``reliable``, volatile topic when the file names none: every message
#: must reach local subscribers, and a KEEP_LAST 10 writer overwrites samples a slow
#: subscriber has not acknowledged yet during a burst (as the transport's own reliable
#: subscription keeps 1000)
RELIABLE_DEPTH = 1000


def _qos(where: str, q: Any, delivery: str = "latest") -> QosSpec:
    if q is None:
        q = {}
    if not isinstance(q, Mapping):
        raise TopicConfigError(f"{where}: 'qos' must be a mapping")
    unknown = set(q) - _QOS_KEYS
    if unknown:
        raise TopicConfigError(f"{where}: unknown qos keys {sorted(map(str, unknown))}")
    rel = q.get("reliability", "reliable")
    if rel not in RELIABILITIES:
        raise TopicConfigError(f"{where}: qos reliability must be one of {RELIABILITIES}")
    dur = q.get("durability", "volatile")
    if dur not in DURABILITIES:
        raise TopicConfigError(f"{where}: qos durability must be one of {DURABILITIES}")
    default_depth = RELIABLE_DEPTH if delivery == "reliable" and dur == "volatile" else 10
    depth = q.get("depth", default_depth)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 10_000:
        raise TopicConfigError(f"{where}: qos depth must be an integer from 1 to 10000")
    return QosSpec(rel, dur, depth)


def _check_unique(source: str, specs: Sequence[TopicSpec]) -> None:
    seen_remote: dict[tuple[str, str], str] = {}
    seen_local: set[tuple[str, str]] = set()
    for s in specs:
        key = (s.sender, s.remote)
        if key in seen_remote:
            raise TopicConfigError(
                f"{source}: topic {s.topic}: wire name {s.remote!r} from the {s.sender} is "
                f"already used by {seen_remote[key]}"
            )
        seen_remote[key] = s.topic
        if (s.sender, s.topic) in seen_local:
            raise TopicConfigError(f"{source}: topic {s.topic} from the {s.sender} listed twice")
        seen_local.add((s.sender, s.topic))
