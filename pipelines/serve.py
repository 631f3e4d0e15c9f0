"""Search and stream a dataset over HTTP: the FastAPI app of server.app, run by uvicorn.

biomedica serve --dataset DS --index IDX [--host 127.0.0.1] [--port 8080]

Not a Beam pipeline: it reads DS (a `biomedica shard` / `subset` output) and IDX (a
`biomedica index` output of that dataset) and serves until stopped (Ctrl-C). Flags are
checked strictly like a pipeline's (unknown flags refused with the closest one, one-line
errors, exit 2); an index built for another dataset, or a missing file, is refused before
the server starts.
"""

from __future__ import annotations

import socket
import sys

from pipelines import flags
from pipelines.runner import main_of
from transforms.pmc.discover import add_s3_anonymous, s3_config

MAX_PORT = 65535


def add_flags(parser) -> None:
    group = parser.add_argument_group("serve")
    group.add_argument("--dataset", help="a dataset: local folder, gs:// or s3:// URI")
    group.add_argument("--index", help="the `biomedica index` output of that dataset")
    group.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: every interface; the service has no login)",
    )
    group.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    reading = parser.add_argument_group("reading s3://")
    reading.add_argument(
        "--s3_endpoint_url", help="S3 endpoint for s3:// URIs (a mirror or a local server)"
    )
    add_s3_anonymous(reading)
    flags.add_log_level(group)


def parse(argv: list[str]):
    args = flags.parse("serve", argv, add_flags, beam=False, description=__doc__.split("\n\n")[0])
    for name in ("dataset", "index"):
        if not getattr(args, name):
            raise flags.UsageError(f"missing --{name}")
    if not 1 <= args.port <= MAX_PORT:
        raise flags.UsageError(f"--port must be between 1 and {MAX_PORT}, not {args.port}")
    return args


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or SystemExit with one line (an unknown host, a port in
    use or not ours to take). Bound before the index and model load, which can take long:
    a port in use is said at once, and nothing claims to serve before it can."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as err:
        raise SystemExit(f"--host {host}: {getattr(err, 'strerror', None) or err}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def run(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    sock = bind(args.host, args.port)
    try:
        import uvicorn

        from server.app import create_app
        from server.index_files import IndexUnusable

        try:
            app = create_app(args.dataset, args.index, s3_config(args))
        except IndexUnusable as err:
            raise SystemExit(str(err)) from None
        samples = app.state.index.samples
        print(
            f"biomedica serve: {args.dataset} ({samples} samples) at "
            f"http://{args.host}:{args.port}/ (API docs: /docs)",
            file=sys.stderr,
            flush=True,
        )
        # One process: the app holds the index in memory; see the README (Serve) to scale
        # out. uvicorn listens on the socket bound above.
        config = uvicorn.Config(app, workers=1, log_level=args.log_level.lower())
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            # uvicorn re-raises the Ctrl-C it shut down on (uvicorn.run swallows it too):
            # a server stopped that way has done its job.
            pass
    finally:
        sock.close()
    return {"balanced": True}


main = main_of(run, "serve")


if __name__ == "__main__":
    sys.exit(main())
