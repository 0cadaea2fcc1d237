"""The modelreg registry server: grpc.aio services over Postgres and a blob store."""
