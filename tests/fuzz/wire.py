"""What a generated stub cannot send: raw request bytes through a generic channel call
(identity serializers), bytes that are not UTF-8 in string fields, and below gRPC,
HTTP/2 built by hand with `h2`: socket garbage, a bad preface, a half-sent frame, a gRPC
message whose length prefix lies, and a connection dropped mid-stream.

Every function here returns what the server answered (or that it closed the connection);
none of them decides whether that was right: `runner` does.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
import h2.config
import h2.connection
import h2.events
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from .strategies import INVALID_UTF8, INVALID_UTF8_BYTES

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def serialize(message: Message) -> bytes:
    """The message's wire bytes, with every INVALID_UTF8 sentinel turned into bytes that
    are not UTF-8 (same length, so the length prefixes stay right)."""
    return message.SerializeToString().replace(INVALID_UTF8.encode(), INVALID_UTF8_BYTES)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def deep_struct(depth: int) -> bytes:
    """A google.protobuf.Struct nested `depth` JSON levels deep ({"k": {"k": ... 1}}), encoded
    by hand: Python's protobuf will not build one past its recursion limit."""
    value = _varint(2 << 3 | 1) + struct.pack("<d", 1.0)  # Value.number_value = 1
    for _ in range(depth):
        entry = _length_delimited(1, b"k") + _length_delimited(2, value)  # FieldsEntry{key, value}
        value = _length_delimited(5, _length_delimited(1, entry))  # Value.struct_value{fields}
    return _length_delimited(1, _length_delimited(1, b"k") + _length_delimited(2, value))


def with_field(message: bytes, number: int, payload: bytes) -> bytes:
    """`message` with one more length-delimited field (a sub-message's bytes)."""
    return message + _length_delimited(number, payload)


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: int = 0  # messages received (streams)


def _identity(b: bytes) -> bytes:
    return b


def call(
    channel: grpc.Channel,
    method: MethodDescriptor,
    requests: bytes | Sequence[bytes],
    metadata: Sequence[tuple[str, str]],
    timeout: float,
) -> Outcome:
    """One call of `method` with raw request bytes (a list of them for a client stream).
    A server stream is read until it ends or `timeout` passes."""
    path = path_of(method)
    kw = dict(request_serializer=_identity, response_deserializer=_identity)
    try:
        if method.client_streaming:
            assert not isinstance(requests, bytes)
            fn = channel.stream_unary(path, **kw)
            fn(iter(list(requests)), metadata=metadata, timeout=timeout)
            return Outcome(grpc.StatusCode.OK, "", 1)
        assert isinstance(requests, bytes)
        if method.server_streaming:
            stream = channel.unary_stream(path, **kw)(requests, metadata=metadata, timeout=timeout)
            n = 0
            for _ in stream:
                n += 1
            return Outcome(grpc.StatusCode.OK, "", n)
        channel.unary_unary(path, **kw)(requests, metadata=metadata, timeout=timeout)
        return Outcome(grpc.StatusCode.OK, "", 1)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")


def cancel_mid_upload(
    channel: grpc.Channel, method: MethodDescriptor, first: Iterable[bytes], metadata: Sequence[tuple[str, str]]
) -> Outcome:
    """Sends `first`, then cancels the client stream from the client (RST_STREAM)."""
    import threading

    sent = threading.Event()

    def gen():
        yield from first
        sent.set()
        threading.Event().wait(5)  # never finishes on its own: the cancel ends it

    fn = channel.stream_unary(path_of(method), request_serializer=_identity, response_deserializer=_identity)
    future = fn.future(gen(), metadata=metadata, timeout=10)
    sent.wait(5)
    future.cancel()
    try:
        future.result()
    except grpc.FutureCancelledError:
        return Outcome(grpc.StatusCode.CANCELLED, "cancelled by the client")
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(grpc.StatusCode.OK, "")


# ---------------------------------------------------------------- below gRPC


def _connect(address: str, timeout: float) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def _drain(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """What the server sends until it closes, `limit` bytes arrive, or the timeout passes."""
    got = b""
    with contextlib.suppress(OSError):
        while len(got) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    return got


def _reset(sock: socket.socket) -> None:
    """Closes with a TCP RST (SO_LINGER 0): an abrupt disconnect, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def send_raw(address: str, data: bytes, timeout: float = 1.0, abrupt: bool = False) -> bytes:
    """Connects, sends `data` as is, and returns what came back before the server closed."""
    sock = _connect(address, timeout)
    try:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        return b"" if abrupt else _drain(sock)
    finally:
        if abrupt:
            _reset(sock)
        else:
            sock.close()


def frame(kind: int, flags: int, stream: int, payload: bytes, declared: int | None = None) -> bytes:
    """One HTTP/2 frame; `declared` lies about the payload's length."""
    length = len(payload) if declared is None else declared
    return length.to_bytes(3, "big") + bytes([kind, flags]) + (stream & 0x7FFFFFFF).to_bytes(4, "big") + payload


def half_frame(address: str) -> bytes:
    """A good preface and SETTINGS, then a HEADERS frame cut off after 9 of 1,000 bytes."""
    return send_raw(address, PREFACE + frame(0x4, 0, 0, b"") + frame(0x1, 0x4, 1, b"\x82" * 9, declared=1000))


def grpc_request(
    address: str,
    path: str,
    messages: Sequence[bytes],
    metadata: Sequence[tuple[str, str]] = (),
    lie: int = 0,
    end: bool = True,
    abrupt: bool = False,
    timeout: float = 2.0,
) -> dict[str, str]:
    """A gRPC call in hand-made HTTP/2: each message with its 5-byte prefix, the last one's
    length overstated by `lie` bytes. `end=False` never half-closes; `abrupt` resets the TCP
    connection right after sending. Returns the response headers and trailers received."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", address),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *metadata,
    ]
    conn.send_headers(stream, headers)
    body = b""
    for i, m in enumerate(messages):
        declared = len(m) + (lie if i == len(messages) - 1 else 0)
        body += b"\x00" + declared.to_bytes(4, "big") + m
    # Within the default window (64 KiB), in frames of the default maximum size (16 KiB).
    chunks = [body[i : i + 16384] for i in range(0, len(body), 16384)] or [b""]
    for i, chunk in enumerate(chunks):
        conn.send_data(stream, chunk, end_stream=end and i == len(chunks) - 1)
    sock = _connect(address, timeout)
    answer: dict[str, str] = {}
    try:
        sock.sendall(conn.data_to_send())
        if abrupt:
            return answer
        with contextlib.suppress(OSError, h2.exceptions.ProtocolError):
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        answer.update({str(k): str(v) for k, v in event.headers})
                    if isinstance(
                        event, h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated
                    ):
                        return answer
                sock.sendall(conn.data_to_send())
        return answer
    finally:
        if abrupt:
            _reset(sock)
        else:
            sock.close()
