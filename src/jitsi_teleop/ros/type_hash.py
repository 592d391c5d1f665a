"""RIHS01 type hashes (REP 2011/2016) computed from the generated message class itself.

The transport announces each topic's type hash to the peer, which refuses a stream whose hash
differs from its own (different message definitions). Reading the hash back from the ROS graph
after creating an endpoint depends on when the middleware updates its local graph (Cyclone DDS:
a moment later; Humble: never, no hashes at all), so the hash is computed here instead, the way
rosidl's type-description generator does at build time:

1. the type description: for the type and, transitively, every nested type, its name and its
   fields in declaration order, each as ``type_id`` (type_description_interfaces/FieldType),
   ``capacity`` (array size or sequence bound), ``string_capacity`` (string bound) and
   ``nested_type_name``; referenced types sorted by name, each once; default values left out;
2. that structure as JSON with ``", "`` and ``": "`` separators, keys in the order above,
   ASCII only;
3. ``RIHS01_`` + the SHA-256 of it in lower-case hex.

The fields come from the class's ``SLOT_TYPES`` (rosidl_parser definitions, present in every
generated Python message class since Foxy), so Humble computes the same value as Jazzy or Kilted
for the same definition. Only ``rosidl_parser`` and the message packages are imported.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from functools import cache
from typing import Any

from rosidl_parser import definition as idl

__all__ = ["RIHS01_PREFIX", "TypeHashError", "message_class", "type_description", "type_hash"]

RIHS01_PREFIX = "RIHS01_"

#: type_description_interfaces/msg/FieldType: the id of each element type ...
_ELEMENT_ID = {
    "nested": 1,
    "int8": 2,
    "uint8": 3,
    "int16": 4,
    "uint16": 5,
    "int32": 6,
    "uint32": 7,
    "int64": 8,
    "uint64": 9,
    "float": 10,
    "double": 11,
    "long double": 12,
    "char": 13,
    "wchar": 14,
    "boolean": 15,
    "octet": 16,
    "string": 17,
    "wstring": 18,
    "bounded string": 21,
    "bounded wstring": 22,
}
#: ... plus this for a fixed array, a bounded or an unbounded sequence of them
_CONTAINER_OFFSET = {idl.Array: 48, idl.BoundedSequence: 96, idl.UnboundedSequence: 144}
#: rosidl gives a message without fields this one (the middleware's structs cannot be empty)
_EMPTY_MEMBER = "structure_needs_at_least_one_member"


class TypeHashError(ValueError):
    """The type cannot be described: not installed, or uses what RIHS01 has no id for."""


def message_class(ros_type: str) -> Any:
    """``pkg/msg/Type`` -> the generated class (by importlib: no rosidl_runtime_py needed)."""
    parts = ros_type.split("/")
    if len(parts) != 3 or not all(parts):
        raise TypeHashError(f"{ros_type!r} is not a type name like pkg/msg/Type")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError):
        raise TypeHashError(f"type {ros_type} is not installed at this site") from None


def _type_name(cls: Any) -> str:
    """``sensor_msgs.msg._joint_state.JointState`` -> ``sensor_msgs/msg/JointState``."""
    parts = getattr(cls, "__module__", "").split(".")
    if len(parts) < 2 or not hasattr(cls, "SLOT_TYPES"):
        raise TypeHashError(f"{cls!r} is not a generated ROS message class")
    return f"{parts[0]}/{parts[1]}/{cls.__name__}"


def _field_type(t: Any, where: str) -> dict[str, Any]:
    element, offset, capacity = t, 0, 0
    if isinstance(t, idl.AbstractNestedType):
        element, offset = t.value_type, _CONTAINER_OFFSET[type(t)]
        if isinstance(t, idl.Array):
            capacity = t.size
        elif isinstance(t, idl.BoundedSequence):
            capacity = t.maximum_size
    string_capacity, nested = 0, ""
    if isinstance(element, idl.NamespacedType):
        kind, nested = "nested", "/".join(element.namespaced_name())
    elif isinstance(element, (idl.BoundedString, idl.BoundedWString)):
        wide = isinstance(element, idl.BoundedWString)
        kind = "bounded wstring" if wide else "bounded string"
        string_capacity = element.maximum_size
    elif isinstance(element, idl.UnboundedString):
        kind = "string"
    elif isinstance(element, idl.UnboundedWString):
        kind = "wstring"
    elif isinstance(element, idl.BasicType):
        kind = element.typename
    else:
        kind = type(element).__name__
    if kind not in _ELEMENT_ID:
        raise TypeHashError(f"{where}: RIHS01 has no field type for {kind!r}")
    return {
        "type_id": _ELEMENT_ID[kind] + offset,
        "capacity": capacity,
        "string_capacity": string_capacity,
        "nested_type_name": nested,
    }


@cache
def _individual(cls: Any) -> tuple[tuple[str, ...], str]:
    """(names of the nested types, JSON of the type's own description)."""
    name = _type_name(cls)
    fields_and_types = cls.get_fields_and_field_types()
    if len(fields_and_types) != len(cls.SLOT_TYPES):
        raise TypeHashError(f"{name}: the generated class's fields and SLOT_TYPES disagree")
    fields = []
    for field, t in zip(fields_and_types, cls.SLOT_TYPES):
        fields.append({"name": field, "type": _field_type(t, f"{name}.{field}")})
    if not fields:
        fields.append({"name": _EMPTY_MEMBER, "type": _field_type(idl.BasicType("uint8"), name)})
    nested = tuple(f["type"]["nested_type_name"] for f in fields if f["type"]["nested_type_name"])
    return nested, json.dumps({"type_name": name, "fields": fields})


def type_description(msg: Any) -> dict[str, Any]:
    """The hashed form of the type description of ``msg`` (a class or ``pkg/msg/Type``):
    ``{"type_description": ..., "referenced_type_descriptions": [...]}``, no default values."""
    cls = message_class(msg) if isinstance(msg, str) else msg
    nested, text = _individual(cls)
    seen: dict[str, str] = {}
    todo = list(nested)
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        more, seen[ref] = _individual(message_class(ref))
        todo.extend(more)
    return {
        "type_description": json.loads(text),
        "referenced_type_descriptions": [json.loads(seen[n]) for n in sorted(seen)],
    }


@cache
def _hash_of(cls: Any) -> str:
    text = json.dumps(type_description(cls), separators=(", ", ": "), ensure_ascii=True)
    return RIHS01_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def type_hash(msg: Any) -> str:
    """``RIHS01_<64 hex>`` of ``msg`` (a class or ``pkg/msg/Type``), what ``ros2 topic info -v``
    shows on Iron and later; the same computation on Humble, whose graph has none."""
    return _hash_of(message_class(msg) if isinstance(msg, str) else msg)


def main(argv: list[str] | None = None) -> int:
    """``python3 -m jitsi_teleop.ros.type_hash pkg/msg/Type ...``: each type's RIHS01 hash as
    this site computes and announces it, to compare with the peer's (also on Humble, whose
    ``ros2 topic info -v`` shows none)."""
    import sys

    names = sys.argv[1:] if argv is None else argv
    if not names:
        print("usage: python3 -m jitsi_teleop.ros.type_hash pkg/msg/Type ...", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        try:
            print(f"{name} {type_hash(name)}")
        except TypeHashError as e:
            print(f"{name}: {e}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
