"""The web console and the JSON API: an HTTP front end on the use-case layer.

Like the gRPC servicers it only parses, authenticates, calls a use case with a `Caller`
and renders; authorization, gates and audit stay in the use cases, so both front ends
answer alike. One concept per module: `server` (uvicorn in the registry's loop), `app`
(the Starlette app), `session` (sign-in, the caller, CSRF), `errors` (domain errors to HTTP
statuses), `api` (/api/v1/), `pages`, `actions`, `sse` (live updates), `download`
(artifact bytes), `views` (pure table and diff logic), `templating` (Jinja2).
"""
