"""`GET /sdk.js`: the browser SDK (`sdk/dist/marketing.min.js`), served by
the tracking host so a storefront needs one script tag and no npm.

The file is read once per process. Answers carry a strong `ETag` (a hash
of the file) and `Cache-Control` that lets browsers and CDNs keep it for an
hour and serve a stale copy for a day while they revalidate; a matching
`If-None-Match` gets 304. `Access-Control-Allow-Origin: *` and
`Cross-Origin-Resource-Policy: cross-origin` let pages on any origin load
it (also with `crossorigin` or under COEP).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from core.errors import NotFound

router = APIRouter()

SDK_FILE = Path("sdk") / "dist" / "marketing.min.js"
CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=86400"


@lru_cache(maxsize=1)
def sdk_script() -> tuple[bytes, str]:
    """The SDK's browser build and its ETag. Looked up beside the source tree
    (a checkout or an editable install), then under the working directory
    (the container image installs the package and runs from the checkout)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = root / SDK_FILE
        if candidate.is_file():
            body = candidate.read_bytes()
            return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    raise NotFound(f"{SDK_FILE} is missing from this installation")


@router.get("/sdk.js", include_in_schema=False)
async def sdk_js(request: Request) -> Response:
    """The browser SDK; sets `window.marketing`."""
    body, etag = sdk_script()
    headers = {
        "Cache-Control": CACHE_CONTROL,
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/javascript; charset=utf-8", headers=headers)
