"""Hypothesis strategies for any protobuf message, derived from its descriptor.

`messages(descriptor, vocabulary)` draws a message of that type: each field present or
absent, and each value random or a boundary: empty and huge strings, resource names built
from the names that exist in the fuzzed registry and from hostile segments (huge numbers,
non-ASCII digits, path tricks), NaN and +-inf, integer extremes (negative and maximal page
sizes), unknown enum numbers, deeply nested Struct JSON, out-of-range Timestamps and
Durations, field masks naming real and made-up fields, and the INVALID_UTF8 sentinel,
which `wire.corrupt` turns into bytes that are not UTF-8 once the message is serialized
(Python cannot put such bytes in a string field).

The strategies depend only on the descriptor and the vocabulary, so a derandomized run
draws the same cases every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

# A string that `wire.corrupt` replaces, byte for byte, with as many bytes that are not
# UTF-8 (so every length prefix of the serialized message stays right).
INVALID_UTF8 = "\x01\x02NOT-UTF8\x03\x04"
INVALID_UTF8_BYTES = b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c"
assert len(INVALID_UTF8.encode()) == len(INVALID_UTF8_BYTES)

HUGE = 10 * 1024 * 1024  # "10 MB metadata": one string field this long (runner.boundary_cases)
LARGE = 100_000

FD = FieldDescriptor
INT_RANGES: dict[int, tuple[int, int]] = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
SPECIAL_FLOATS = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 1.0, 0.5)

# Segments that break naive parsers: empty, separators, huge and non-ASCII numbers,
# uppercase, quotes, controls, right-to-left marks, the stage and role words.
HOSTILE_SEGMENTS = (
    "",
    " ",
    ".",
    "..",
    "/",
    "//",
    "%2F",
    "-1",
    "0",
    "00",
    "1",
    "2",
    "3",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999999999",
    "\u00b2",  # superscript two: str.isdigit() is true, int() refuses it
    "\u0661\u0662",  # Arabic-Indic digits
    "\uff11",  # fullwidth digit one
    "A",
    "Model",
    "x" * 63,
    "x" * 64,
    "x" * 300,
    "\x00",
    "a\x00b",
    "\u00fc",
    "\U0001f600",
    "\u202e",
    "'; DROP TABLE models; --",
    "production",
    "staging",
    "latest",
    "archived",
    "none",
    "champion",
    "deployment",
    "card",
    "stable",
    "canary",
    "default",
    "viewer",
    "trainer",
    "releaser",
    "agent",
    "project-admin",
    "admin",
    "models.read",
    "versions.promote",
    "*",
    INVALID_UTF8,
)
TEMPLATES = (
    "{0}",
    "models/{0}",
    "models/{0}/versions/{1}",
    "models/{0}/versions/{1}/card",
    "models/{0}/deployment",
    "models/{0}/aliases/{1}",
    "models/{0}/gates/{1}",
    "models/{0}/promotionRequests/{1}",
    "projects/{0}",
    "principals/{0}",
    "tokens/{0}",
    "agents/{0}",
    "{0}/{1}",
    "models/{0}/versions/{1}/extra",
)


@dataclass(frozen=True)
class Vocabulary:
    """Names that exist in the fuzzed registry, so cases get past NOT_FOUND to the rules."""

    words: tuple[str, ...]  # ids: models, projects, principals, tokens, aliases, agents
    names: tuple[str, ...]  # full resource names: models/a, models/a/versions/1, ...
    fields: tuple[str, ...]  # field names, for field masks


# Fields that name a resource: mostly a name that exists, so the case reaches the rules.
NAME_FIELDS = {"name", "parent", "model", "model_version", "principal", "project", "token", "resource"}


def strings(vocab: Vocabulary, naming: bool = False) -> st.SearchStrategy[str]:
    segment = st.one_of(
        st.sampled_from(vocab.words),
        st.sampled_from(HOSTILE_SEGMENTS),
        st.integers(-5, 2**70).map(str),
        st.text(max_size=12),
    )
    # A name that exists with one segment swapped for a hostile one gets furthest.
    known = st.sampled_from(vocab.words)
    first = st.integers(0, 1).flatmap(lambda i: known if i else segment)
    templated = st.tuples(st.sampled_from(TEMPLATES), first, segment).map(lambda t: t[0].format(t[1], t[2]))
    options = [
        st.sampled_from(vocab.names),
        st.sampled_from(vocab.words),
        templated,
        st.text(max_size=30),
        st.sampled_from(("", " ", INVALID_UTF8, "x" * 129, "x" * 1025, "y" * LARGE)),
    ]
    anything = st.one_of(*options)
    if naming:
        known = st.one_of(st.sampled_from(vocab.names), st.sampled_from(vocab.words))
        return st.integers(0, 9).flatmap(lambda i: known if i < 6 else anything)
    return anything


def integers(field: FieldDescriptor) -> st.SearchStrategy[int]:
    lo, hi = INT_RANGES[field.type]
    bounds = sorted(
        {v for v in (0, 1, 2, 3, 10, 49, 50, 51, 999, 1000, 1001, lo, lo + 1, hi, hi - 1, -1) if lo <= v <= hi}
    )
    return st.one_of(st.sampled_from(bounds), st.integers(lo, hi), st.integers(max(lo, -3), min(hi, 20)))


def floats(field: FieldDescriptor) -> st.SearchStrategy[float]:
    width = 32 if field.type == FD.TYPE_FLOAT else 64
    return st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(width=width), st.floats(-10, 10, width=width))


def json_values(vocab: Vocabulary) -> st.SearchStrategy[Any]:
    """Struct contents: any JSON (and the NaN/inf a Struct can carry), or one deep chain."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(SPECIAL_FLOATS),
        st.floats(),
        st.text(max_size=10),
        st.just(INVALID_UTF8),
    )
    trees = st.recursive(
        leaves,
        lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)),
        max_leaves=12,
    )

    def chain(depth: int) -> Any:
        value: Any = 1
        for i in range(depth):
            value = {"k": value} if i % 2 else [value]
        return value

    # Python's protobuf refuses to build past 100 levels (a JSON level is two or three
    # message levels); deeper configs go as hand-encoded bytes (`wire.deep_struct`).
    return st.one_of(trees, st.integers(1, 30).map(chain))


def structs(vocab: Vocabulary) -> st.SearchStrategy[Message]:
    from google.protobuf import struct_pb2

    def build(d: dict[str, Any]) -> Message:
        s = struct_pb2.Struct()
        s.update(d)
        return s

    return st.dictionaries(st.one_of(st.text(max_size=8), st.just(INVALID_UTF8)), json_values(vocab), max_size=4).map(
        build
    )


def _seconds_nanos(cls: type[Message]) -> st.SearchStrategy[Message]:
    seconds = st.one_of(
        st.sampled_from((0, -1, 1, 253402300799, 253402300800, -62135596800, -62135596801, 2**63 - 1, -(2**63))),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(0, 4_000_000_000),
    )
    nanos = st.one_of(
        st.sampled_from((0, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31))), st.integers(0, 10**9 - 1)
    )
    return st.builds(cls, seconds=seconds, nanos=nanos)


def well_known(desc: Descriptor, vocab: Vocabulary) -> st.SearchStrategy[Message] | None:
    from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

    name = desc.full_name
    if name == "google.protobuf.Struct":
        return structs(vocab)
    if name == "google.protobuf.Timestamp":
        return _seconds_nanos(timestamp_pb2.Timestamp)
    if name == "google.protobuf.Duration":
        return _seconds_nanos(duration_pb2.Duration)
    if name == "google.protobuf.FieldMask":
        path = st.one_of(st.sampled_from(vocab.fields), st.text(max_size=10), st.just(INVALID_UTF8), st.just("a.b.c"))
        return st.lists(path, max_size=4).map(lambda p: field_mask_pb2.FieldMask(paths=p))
    return None


def _scalar(field: FieldDescriptor, vocab: Vocabulary) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FD.TYPE_STRING:
        return strings(vocab, naming=field.name in NAME_FIELDS)
    if t == FD.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from((b"", b"\x00" * 1024, INVALID_UTF8_BYTES)))
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return floats(field)
    if t == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1), st.integers(-2, max(known) + 3))
    return integers(field)


def _value(field: FieldDescriptor, vocab: Vocabulary, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FD.TYPE_MESSAGE:
        return messages(field.message_type, vocab, depth + 1)
    return _scalar(field, vocab)


def _field(field: FieldDescriptor, vocab: Vocabulary, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        keys = _scalar(key_field, vocab)
        values = _value(value_field, vocab, depth)
        many = st.integers(60, 70).map(lambda n: {f"k{i}": None for i in range(n)})
        if key_field.type == FD.TYPE_STRING and value_field.type != FD.TYPE_MESSAGE:
            # Past MAX_TAGS (64) and other count limits, with one generated value each.
            crowd = st.tuples(many, values).map(lambda t: dict.fromkeys(t[0], t[1]))
            return st.one_of(st.dictionaries(keys, values, max_size=4), crowd)
        return st.dictionaries(keys, values, max_size=4)
    if field.is_repeated:
        elements = _value(field, vocab, depth)
        return st.one_of(st.lists(elements, max_size=4), st.lists(elements, min_size=100, max_size=120))
    return _value(field, vocab, depth)


def message_class(desc: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


def build(desc: Descriptor, values: dict[str, Any]) -> Message:
    """The message with those field values (maps and repeated messages copied in)."""
    msg = message_class(desc)()
    for name, value in values.items():
        field = desc.fields_by_name[name]
        target = getattr(msg, name) if field.is_repeated or field.type == FD.TYPE_MESSAGE else None
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif field.is_repeated:
            target.extend(value)
        elif field.type == FD.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def messages(desc: Descriptor, vocab: Vocabulary, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of type `desc`; past depth 4 only the empty one (resources nest)."""
    known = well_known(desc, vocab)
    if known is not None:
        return known
    if depth > 4:
        return st.just(message_class(desc)())
    optional = {f.name: st.deferred(lambda f=f: _field(f, vocab, depth)) for f in desc.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: build(desc, values))
