"""GET /models/{model}/versions/{version}/artifact: the artifact's bytes, streamed.

The same `Models.open_download` as DownloadArtifact (artifacts.download permission): the
bytes stream in chunks (never whole in memory) and are hashed on the way; if the stored
digest does not match at the end the stream is cut, so the response is shorter than its
Content-Length and the client discards it, as the CLI does. The sha256 travels in
`Repr-Digest` (RFC 9530) and `X-Modelreg-Sha256` for the client to check again.
"""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from registry_server.console.api import version_ref
from registry_server.console.session import caller_of


async def artifact(request: Request) -> Response:
    uc = request.app.state.use_cases
    dl = await uc.models.open_download(await caller_of(request), version_ref(request), 0, 0)
    v = dl.version
    digest = base64.b64encode(bytes.fromhex(v.sha256)).decode()
    return StreamingResponse(
        dl.chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(v.size_bytes),
            "Content-Disposition": f'attachment; filename="{v.download_filename}"',
            "Repr-Digest": f"sha-256=:{digest}:",
            "X-Modelreg-Sha256": v.sha256,
            "Cache-Control": "private, no-store",
        },
    )


def routes() -> list[Route]:
    return [Route("/models/{model}/versions/{version}/artifact", artifact, methods=["GET"])]
