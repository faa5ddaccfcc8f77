"""``cyclegan serve`` (the web page and HTTP API) and ``demo`` (the offline end-to-end run)."""

from __future__ import annotations

from pathlib import Path

import click

from cyclegan.demo import run_demo
from cyclegan.devices import DEVICES, PRECISIONS
from cyclegan.serve.server import run_server


@click.command("serve")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, metavar="[NAME=]PATH",
              help="Run folder, checkpoint folder or exported model; repeat for several. Named after the "
                   "run folder unless given as NAME=PATH.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the (unauthenticated) API to the network.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(("auto", *PRECISIONS)), default="fp32", show_default=True,
              help="auto: as translate's (bf16 where native and within tolerance, else ONNX Runtime on CPU).")
@click.option("--tile", default="auto", show_default=True, help="auto, off, or a tile size in pixels.")
@click.option("--max-upload-mb", type=float, default=20.0, show_default=True, help="Largest upload accepted.")
@click.option("--max-megapixels", type=float, default=50.0, show_default=True,
              help="Largest image accepted (decompression-bomb guard).")
@click.option("--queue-size", type=int, default=8, show_default=True,
              help="Requests that may wait for a worker; beyond that the API answers 503 + Retry-After.")
@click.option("--workers", type=int, default=1, show_default=True, help="Images translated at the same time.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads per image (0: the CPUs this process may use, shared among --workers; "
                   "1 is often faster on small VMs).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser pages from this origin to call the API (repeatable; default: none).")
@click.option("--header-timeout", type=float, default=10.0, show_default=True, metavar="SECONDS",
              help="Time a client has to send a request's headers (slow-loris guard); then 408 and close.")
@click.option("--body-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="Time an upload has to arrive in full; then 408 and close.")
@click.option("--max-connections", type=int, default=64, show_default=True,
              help="Open connections at most; more are answered 503 at once and closed.")
@click.option("--max-request-memory", default="1G", show_default=True, metavar="SIZE",
              help="Memory one translation may need, estimated before decoding; larger images get 413, "
                   "or are downscaled when the request gives max_side.")
def serve_cmd(checkpoints, host, port, device, precision, tile, max_upload_mb, max_megapixels, queue_size,
              workers, threads, cors_origins, header_timeout, body_timeout, max_connections,
              max_request_memory) -> None:
    """Web page and HTTP API: upload a photo, get it back translated."""
    run_server(
        checkpoints, host=host, port=port, device=device, precision=precision, tile=tile,
        max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=int(max_megapixels * 1e6),
        queue_size=queue_size, workers=workers, threads=threads, cors_origins=cors_origins,
        header_timeout=header_timeout, body_timeout=body_timeout, max_connections=max_connections,
        max_request_memory=max_request_memory,
        echo=lambda m: click.echo(m, err=True),
    )



@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to put the demo (default: a new runs/demo* folder).")
@click.option("--steps", type=int, default=None, help="Training iterations (default: the demo's own).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu")
def demo(out, steps, device) -> None:
    """Offline end-to-end demo: make two synthetic domains, train, sample, translate."""
    summary = run_demo(out, steps=steps, device=device, echo=lambda m: click.echo(m, err=True))
    click.echo(summary)


