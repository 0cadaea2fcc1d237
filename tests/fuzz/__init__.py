"""A property-based fuzzer for the registry's gRPC API, built from the proto descriptors.

`strategies` turns any request message's descriptor into a hypothesis strategy of random
and boundary values; `wire` sends what a Python stub cannot (bytes that are not UTF-8,
truncated messages, HTTP/2 garbage, abrupt disconnects); `runner` calls every RPC of every
registry service with them against a real server and checks the invariants: no INTERNAL or
UNKNOWN (nor UNAVAILABLE while the backends are up), the server keeps answering, and a
refused write leaves nothing behind.
"""
