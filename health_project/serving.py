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
# Where background work shares the host with the web server (`make run`), the relay
# (`run_relay --nice`) and the embedded S3 it archives to (DEVSTACK_S3_NICE) run at this
# niceness, so that archiving takes the CPU webhooks leave idle. At 10, with the S3 at 0,
# the two still took a fifth of the webhooks' throughput: a webhook waits on Postgres and
# NATS between its bursts of CPU, and each time it wakes it found them running. Interleaved
# on 2026-12-02 (bench/README.md, "Background work at niceness 19"), 19 for both accepted
# 14-20 % more, the relay still archiving during the load.
BACKGROUND_NICE = 19


def granian_args(*, host: str, port: int, workers: int = WEB_WORKERS) -> list[str]:
    """granian's arguments for this shape (after the program's name)."""
    return ["--interface", WEB_INTERFACE, WEB_APPLICATION, "--host", host, "--port", str(port),
            "--workers", str(workers)]  # fmt: skip
