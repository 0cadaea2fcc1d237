"""An OTLP/gRPC trace receiver for tests: what a collector (Jaeger, the OpenTelemetry
Collector) would receive from `modelreg server` or `modelreg agent`, on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver on 127.0.0.1 that keeps every span it is sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[dict, object]] = []  # (resource attributes, Span proto)
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 - the proto's method name
        with self.lock:
            for rs in request.resource_spans:
                resource = {a.key: value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    self.spans.extend((resource, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list:
        with self.lock:
            return [(r, s) for r, s in self.spans if s.name == name]


def value(v):
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def attrs(span) -> dict:
    return {a.key: value(a.value) for a in span.attributes}


def running_collector() -> Iterator[Collector]:
    """A started Collector, stopped when the generator closes (for a fixture)."""
    c = Collector()
    try:
        yield c
    finally:
        c.server.stop(0)
