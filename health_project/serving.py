"""How the web process is served: one shape for `make run`, the Dockerfile, compose and the
benches (health_project/tests/test_deploy_files.py holds the deploy files to it).

granian (`--interface asgi`): a Rust HTTP/1.1 front and WEB_WORKERS processes, each with one
event loop. health_project/asgi.py answers Oura's webhook deliveries on that loop and hands
every other request to the WSGI application on a pool of WEB_BLOCKING_THREADS threads
(a2wsgi). Two processes use both cores of the machines this is measured on while each keeps
one webhook group committer fed with large batches (ingestion/webhook_commit.py).
Interleaved on 2026-12-02 (bench/README.md, "The web server's shape"), 2 workers accepted
as many webhooks as 3 with less server CPU each, and 1 fewer (one process is bound to one
core by the GIL); the ASGI front door accepted about half as many again as the WSGI one
("The webhook on the event loop").
"""

WEB_WORKERS = 2
WEB_BLOCKING_THREADS = 8
WEB_INTERFACE = "asgi"
WEB_APPLICATION = "health_project.asgi:application"


def granian_args(*, host: str, port: int, workers: int = WEB_WORKERS) -> list[str]:
    """granian's arguments for this shape (after the program's name)."""
    return ["--interface", WEB_INTERFACE, WEB_APPLICATION, "--host", host, "--port", str(port),
            "--workers", str(workers)]  # fmt: skip
