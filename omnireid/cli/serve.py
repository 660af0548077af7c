"""``omnireid serve``: the gallery search HTTP API over an index folder.

    export OMNIREID_SERVE_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
    omnireid serve --index index/ --artifact deploy/model.onnx [--host 127.0.0.1 --port 8000]

Every endpoint but ``/health`` needs ``Authorization: Bearer $OMNIREID_SERVE_TOKEN`` (or the token
in ``--token-file``); without a token the server refuses to start unless ``--insecure-no-auth`` is
given. Endpoints: ``POST /search``, ``POST /gallery``, ``GET``/``DELETE /gallery/{id}``,
``GET /health``, OpenAPI at ``/openapi.json`` and ``/docs``. Binds to 127.0.0.1 by default.
Acknowledged gallery changes are on disk before the reply and survive a crash; one server per index.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.utils.errors import MissingFileError

logger = logging.getLogger("omnireid")

TOKEN_ENV = "OMNIREID_SERVE_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def resolve_token(args: argparse.Namespace) -> str | None:
    """The bearer token from ``--token-file`` or ``$OMNIREID_SERVE_TOKEN``; None only with --insecure-no-auth."""
    from omnireid.serve.index import GalleryIndexError

    token = None
    if args.token_file:
        if not os.path.isfile(args.token_file):
            raise MissingFileError(f"--token-file: no such file: {args.token_file}")
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
        if not token:
            raise GalleryIndexError(f"--token-file {args.token_file} is empty")
    elif os.environ.get(TOKEN_ENV, "").strip():
        token = os.environ[TOKEN_ENV].strip()
    if token is None and not args.insecure_no_auth:
        raise GalleryIndexError(f"refusing to start without an access token: set {TOKEN_ENV} or pass --token-file "
                                "FILE (or --insecure-no-auth to serve without authentication)")
    if token is not None and args.insecure_no_auth:
        raise GalleryIndexError("--insecure-no-auth contradicts the token given; drop one of them")
    if token is not None and len(token) < 16:
        raise GalleryIndexError(f"the access token is {len(token)} characters long; use at least 16 "
                                "(e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    return token


def run_serve(args: argparse.Namespace) -> int:
    from omnireid.utils.errors import MissingDependencyError

    try:
        import uvicorn

        from omnireid.serve.app import ServeSettings, create_app
    except ImportError as exc:
        raise MissingDependencyError(f"the server needs the serve extra: pip install 'omnireid[serve]' ({exc})") from exc
    from omnireid.engine.setup import setup_logging
    from omnireid.serve.encoder import ImageEncoder, check_compatible
    from omnireid.serve.index import GalleryIndex

    setup_logging()
    token = resolve_token(args)
    settings = ServeSettings(token=token, max_upload_bytes=int(args.max_upload_mb * 2**20),
                             max_image_pixels=args.max_image_pixels, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, compact_every=args.compact_every)
    index = GalleryIndex.open(args.index)
    try:
        manifest = index.manifest
        encoder = ImageEncoder.from_artifact(args.artifact, preprocess=manifest["preprocess"],
                                             size=manifest["input_size"], config_file=args.config_file or None)
        check_compatible(encoder, manifest, args.allow_model_change)
    except BaseException:
        index.close(compact=False)
        raise
    if args.host not in LOOPBACK:
        logger.warning("serving on %s: reachable from other machines (put TLS in front of it)", args.host)
    if token is None:
        logger.warning("--insecure-no-auth: anyone who can reach %s:%d can read and change the gallery",
                       args.host, args.port)
    logger.info("Serving %d gallery items (%s index, %d-d) with %s on http://%s:%d", len(index), manifest["kind"],
                manifest["dim"], encoder.predictor.backend_name, args.host, args.port)
    app = create_app(index, encoder, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0


@COMMAND_REGISTRY.register("serve")
def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve gallery search over HTTP", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", metavar="DIR", required=True, help="index folder (omnireid index build)")
    parser.add_argument("--artifact", metavar="FILE", required=True, help="the model the index was built with")
    parser.add_argument("--config-file", metavar="FILE", default="", help="config of a .pth artifact")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-file", metavar="FILE", help=f"file holding the bearer token (else ${TOKEN_ENV})")
    parser.add_argument("--insecure-no-auth", action="store_true", help="serve without authentication")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body")
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000, help="largest image (width x height)")
    parser.add_argument("--max-batch", type=int, default=32, help="most images per model call")
    parser.add_argument("--max-wait-ms", type=float, default=2.0,
                        help="how long a request waits for others to share its model call")
    parser.add_argument("--compact-every", type=int, default=10_000,
                        help="journal records before they are compacted into a new snapshot")
    parser.add_argument("--allow-model-change", action="store_true",
                        help="accept an artifact other than the index's (the same model in another format)")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    parser.set_defaults(func=run_serve)
