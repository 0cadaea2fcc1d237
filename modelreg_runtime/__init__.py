"""What the two long-running modelreg processes share and the SDK must not carry.

`modelreg server` (`registry_server`) and `modelreg agent` (`serving_agent`) both import this
package; the SDK (`modelreg`) never does, so a trainer's `pip install modelreg` has nothing of
it to load. Standard library only: it runs before a command knows its dependencies are there.

- `process`: process-wide tuning (glibc malloc thresholds) for a process that moves megabytes.
- `extras`: the check that a command's optional dependencies (its pip extra) are installed.
- `logs`: the process's log lines, text or JSON (`--log-format`), secrets masked.
- `tracing`: OpenTelemetry traces when OTEL_* asks for them (the `otel` extra, imported lazily);
  `grpc_tracing`, its gRPC server interceptor, is imported only once tracing is on.
"""
