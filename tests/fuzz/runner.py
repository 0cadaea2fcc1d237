"""Runs the cases of one RPC against a World and checks the invariants after each:

- the status is one a caller can act on: never INTERNAL, UNKNOWN, UNAVAILABLE (the backends
  are up), DATA_LOSS or UNIMPLEMENTED; DEADLINE_EXCEEDED and CANCELLED only end a server
  stream (read with a short deadline); a refusal has a message;
- a refused call changes nothing: the rows of `world.COUNTED`, the blob files and the temp
  uploads are what they were before it;
- the server stays healthy: after every `CHECK_EVERY` cases and at the end of each RPC's
  batch, the health check answers SERVING and a real RPC answers (`World.healthy`).

Each RPC gets a few fixed boundary cases (an empty message, bytes that are not a message,
bytes that are not UTF-8 in a string field, one 10 MB string field), then `n` cases drawn by
hypothesis with a fixed seed. Findings are collected, not raised, so one run reports every
cause; the caller fails on them.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from dataclasses import dataclass, field

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from . import strategies as s
from . import wire
from .world import World, rpc_id, vocabulary

CHECK_EVERY = 100
UNARY_TIMEOUT = 20.0
STREAM_TIMEOUT = 0.3  # a watch never ends by itself: read it this long
REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
STREAM_ENDS = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


@dataclass(frozen=True)
class Case:
    requests: bytes | tuple[bytes, ...]  # one message, or the client stream's messages
    metadata: tuple[tuple[str, str], ...]
    label: str  # what kind of case, for the findings


@dataclass
class Finding:
    rpc: str
    problem: str  # "INTERNAL: internal error (a bug in modelreg): ValueError(...)", ...
    case: Case

    @property
    def cause(self) -> str:
        """The problem without the values that differ between cases of one cause."""
        head = self.problem.split("(", 2)
        return f"{self.rpc} {head[0][:60]}({head[1][:40] if len(head) > 1 else ''}"


@dataclass
class Report:
    cases: Counter[str] = field(default_factory=Counter)  # rpc -> cases sent
    codes: dict[str, Counter[str]] = field(default_factory=dict)  # rpc -> code -> count
    findings: list[Finding] = field(default_factory=list)

    def record(self, rpc: str, code: grpc.StatusCode) -> None:
        self.cases[rpc] += 1
        self.codes.setdefault(rpc, Counter())[code.name] += 1

    def causes(self) -> Counter[str]:
        return Counter(f.cause for f in self.findings)

    def table(self) -> str:
        lines = [f"{'rpc':<42} {'cases':>6}  statuses"]
        for rpc in sorted(self.cases):
            codes = ", ".join(f"{c} {n}" for c, n in self.codes[rpc].most_common())
            lines.append(f"{rpc:<42} {self.cases[rpc]:>6}  {codes}")
        lines.append(f"{'total':<42} {sum(self.cases.values()):>6}  findings {len(self.findings)}")
        return "\n".join(lines)


# ---------------------------------------------------------------- the cases


def _metadata(world: World) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Mostly the fuzzing admin (so cases reach the use cases), sometimes no credential, a
    bad one, or an x-modelreg-actor header of any printable text."""
    actor = st.text(alphabet=string.printable.strip(), max_size=300).map(lambda a: (("x-modelreg-actor", a),))
    good = st.just(world.metadata)
    odd = st.sampled_from(
        ((), (("authorization", "Bearer not-a-token"),), (("authorization", "Basic eA=="),), (("authorization", ""),))
    )
    with_actor = actor.map(lambda a: world.metadata + a)
    return st.integers(0, 19).flatmap(lambda i: good if i < 16 else with_actor if i < 18 else odd)


def _upload_parts(desc: Descriptor) -> tuple[str, str] | None:
    """The (header, chunk) fields of a client stream's message: a oneof of a message and bytes."""
    for oneof in desc.oneofs:
        kinds = {f.type: f.name for f in oneof.fields}
        if FieldDescriptor.TYPE_MESSAGE in kinds and FieldDescriptor.TYPE_BYTES in kinds:
            return kinds[FieldDescriptor.TYPE_MESSAGE], kinds[FieldDescriptor.TYPE_BYTES]
    return None


def _uploads(desc: Descriptor, vocab: s.Vocabulary) -> st.SearchStrategy[tuple[tuple[bytes, ...], str]]:
    """Artifact streams: a header, then chunks whose total is exact, truncated or oversized
    against the declared size, with the right or a wrong digest; or no header, two, a chunk
    first, an empty stream."""
    parts = _upload_parts(desc)
    assert parts is not None
    header_field, chunk_field = parts
    header_desc = desc.fields_by_name[header_field].message_type
    cls = s.message_class(desc)

    @st.composite
    def build(draw) -> tuple[tuple[bytes, ...], str]:
        header = draw(s.messages(header_desc, vocab))
        if draw(st.booleans()) and "parent" in header_desc.fields_by_name:
            header.parent = draw(st.sampled_from(vocab.names[:2]))
        # A 1 MiB artifact (several chunks) one time in ten; more would only slow the run.
        data = draw(
            st.integers(0, 9).flatmap(lambda i: st.just(b"\x00" * (1 << 20)) if i == 0 else st.binary(max_size=3000))
        )
        mode = draw(st.sampled_from(("exact", "truncated", "oversized", "wrong-sha", "as-drawn", "odd-shape")))
        if mode == "odd-shape":
            shape = draw(st.sampled_from(("no-header", "two-headers", "chunk-first", "empty", "header-only")))
            h = cls(**{header_field: header}).SerializeToString()
            c = cls(**{chunk_field: data}).SerializeToString()
            stream = {
                "no-header": (c,),
                "two-headers": (h, h, c),
                "chunk-first": (c, h),
                "empty": (),
                "header-only": (h,),
            }[shape]
            return tuple(x.replace(s.INVALID_UTF8.encode(), s.INVALID_UTF8_BYTES) for x in stream), f"upload:{shape}"
        sent = data
        if mode in ("exact", "truncated", "oversized", "wrong-sha"):
            header.size_bytes = len(data)
            header.sha256 = hashlib.sha256(data).hexdigest()
            if mode == "truncated":  # declared the whole thing, sent less
                sent = data[: len(data) // 2]
            elif mode == "oversized":  # sent more than declared
                sent = data + b"extra"
            elif mode == "wrong-sha":
                header.sha256 = hashlib.sha256(data + b"!").hexdigest()
        # One-byte chunks only for small artifacts: a million messages prove nothing more.
        size = draw(st.sampled_from((1, 1000, 64 * 1024) if len(sent) <= 4096 else (64 * 1024, 3 * 1024 * 1024)))
        chunks = [sent[i : i + size] for i in range(0, len(sent), size)]
        stream = [wire.serialize(cls(**{header_field: header}))]
        stream += [cls(**{chunk_field: c}).SerializeToString() for c in chunks]
        return tuple(stream), f"upload:{mode}"

    return build()


def case_strategy(method: MethodDescriptor, world: World, vocab: s.Vocabulary) -> st.SearchStrategy[Case]:
    meta = _metadata(world)
    desc = method.input_type
    if method.client_streaming:
        generic = st.lists(s.messages(desc, vocab), max_size=4).map(
            lambda ms: (tuple(wire.serialize(m) for m in ms), "stream:generic")
        )
        streams = st.one_of(_uploads(desc, vocab), generic) if _upload_parts(desc) else generic
        return st.builds(lambda r, m: Case(r[0], m, r[1]), streams, meta)
    return st.builds(lambda msg, m: Case(wire.serialize(msg), m, "message"), s.messages(desc, vocab), meta)


def _first_string(desc: Descriptor, depth: int = 0) -> list[str] | None:
    """A path to a singular string field ('description' first), through singular messages."""
    fields = sorted(desc.fields, key=lambda f: f.name != "description")
    for f in fields:
        if not f.is_repeated and f.type == FieldDescriptor.TYPE_STRING:
            return [f.name]
    if depth < 3:
        for f in fields:
            if not f.is_repeated and f.type == FieldDescriptor.TYPE_MESSAGE:
                rest = _first_string(f.message_type, depth + 1)
                if rest and not f.message_type.full_name.startswith("google.protobuf."):
                    return [f.name, *rest]
    return None


def _struct_path(desc: Descriptor, depth: int = 0) -> list[FieldDescriptor] | None:
    """A path to a singular google.protobuf.Struct field, through singular messages."""
    for f in desc.fields:
        if not f.is_repeated and f.message_type is not None and f.message_type.full_name == "google.protobuf.Struct":
            return [f]
    if depth < 2:
        for f in desc.fields:
            if not f.is_repeated and f.message_type is not None and not f.message_type.GetOptions().map_entry:
                if f.message_type.full_name.startswith("google.protobuf."):
                    continue
                rest = _struct_path(f.message_type, depth + 1)
                if rest:
                    return [f, *rest]
    return None


def _deep(path: list[FieldDescriptor], depth: int) -> bytes:
    body = wire.deep_struct(depth)
    for f in reversed(path):
        body = wire.with_field(b"", f.number, body)
    return body


def _with_string(desc: Descriptor, path: list[str], value: str) -> bytes:
    msg = s.message_class(desc)()
    target = msg
    for name in path[:-1]:
        target = getattr(target, name)
    setattr(target, path[-1], value)
    return wire.serialize(msg)


def stores_text(method: MethodDescriptor) -> bool:
    """Whether the RPC writes what it is sent (the 10 MB case matters most there)."""
    return method.client_streaming or method.name.startswith(("Create", "Update", "Register", "Set", "Report"))


def boundary_cases(method: MethodDescriptor, world: World, vocab: s.Vocabulary, huge: bool = True) -> list[Case]:
    """The fixed cases every RPC gets, whatever the seed; the 10 MB one when `huge`."""
    desc = method.input_type
    md = world.metadata
    bodies: list[tuple[bytes, str]] = [(b"", "empty message"), (b"\xff\xff\xff\xff", "not a protobuf message")]
    parts = _upload_parts(desc) if method.client_streaming else None
    target = desc.fields_by_name[parts[0]].message_type if parts else desc
    path = _first_string(target)
    if path:
        bodies.append((_with_string(target, path, s.INVALID_UTF8), f"{'.'.join(path)} not UTF-8"))
        if huge:
            bodies.append((_with_string(target, path, "z" * s.HUGE), f"{'.'.join(path)} 10 MB"))
    struct_path = _struct_path(target)
    if struct_path:
        where = ".".join(f.name for f in struct_path)
        bodies += [(_deep(struct_path, d), f"{where} nested {d} deep") for d in (20, 40, 200)]
    cases = []
    for body, label in bodies:
        if parts:
            cls = s.message_class(desc)
            if body and label != "not a protobuf message":
                # The header, for a model that exists, wrapped in the stream's first message.
                parent = desc.fields_by_name[parts[0]].message_type.fields_by_name.get("parent")
                if parent is not None:
                    body = wire.with_field(body, parent.number, vocab.names[0].encode())
                body = wire.with_field(b"", desc.fields_by_name[parts[0]].number, body)
            data = cls(**{parts[1]: b"fuzz"}).SerializeToString()
            cases.append(Case((body, data), md, label))
        elif method.client_streaming:
            cases.append(Case((body,), md, label))
        else:
            cases.append(Case(body, md, label))
    return cases


# ---------------------------------------------------------------- running them


def check(world: World, method: MethodDescriptor, case: Case, report: Report) -> None:
    """One call and the invariants on its outcome."""
    rpc = _row(world, method)
    before = world.counts()
    timeout = STREAM_TIMEOUT if method.server_streaming else UNARY_TIMEOUT
    outcome = wire.call(world.channel, method, case.requests, case.metadata, timeout)
    report.record(rpc, outcome.code)
    problem = ""
    if outcome.code == grpc.StatusCode.OK:
        pass
    elif outcome.code in STREAM_ENDS and method.server_streaming:
        pass
    elif outcome.code not in REFUSED:
        problem = f"{outcome.code.name}: {outcome.details}"
    elif outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" not in outcome.details:
        # Only a request past the server's maximum may be refused so; anything else (a
        # status message past the client's 16 KiB trailer limit) lost the real answer.
        problem = f"{outcome.code.name}: {outcome.details}"
    elif not outcome.details.strip():
        problem = f"{outcome.code.name} without a message saying what to change"
    if outcome.code not in (grpc.StatusCode.OK, *STREAM_ENDS):
        after = world.counts()
        if after != before:
            problem = problem or f"refused ({outcome.code.name}) but changed counts {before} -> {after}"
    if problem:
        report.findings.append(Finding(rpc, problem, case))
    if report.cases[rpc] % CHECK_EVERY == 0:
        alive(world, rpc, report, case)


def alive(world: World, rpc: str, report: Report, case: Case) -> None:
    """The health invariant; puts the seeded resources back for the next cases."""
    sick = world.healthy()
    if sick:
        report.findings.append(Finding(rpc, f"server unhealthy after cases: {sick}", case))
    world.ensure()


def run_rpc(
    world: World, method: MethodDescriptor, n: int, seed: int, report: Report, huge: bool = True, boundary: bool = True
) -> None:
    """The boundary cases (when `boundary`), then `n` hypothesis cases (fewer when the
    message has fewer distinct values), then the health invariant."""
    vocab = vocabulary()
    cases = boundary_cases(method, world, vocab, huge) if boundary else []
    for case in cases:
        check(world, method, case, report)

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis_seed(seed)
    @given(case_strategy(method, world, vocab))
    def prop(case: Case) -> None:
        check(world, method, case, report)

    if n:
        prop()
    alive(world, _row(world, method), report, Case(b"", world.metadata, "health after the batch"))


def _row(world: World, method: MethodDescriptor) -> str:
    """The report's row: the RPC, marked when the server runs with auth off."""
    return rpc_id(method) if world.auth else f"{rpc_id(method)} (auth off)"
