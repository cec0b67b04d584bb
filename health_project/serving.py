"""How the web process is served: one shape for `make run`, the Dockerfile, compose and the
benches (health_project/tests/test_deploy_files.py holds the deploy files to it).

granian (`--interface wsgi`): a Rust HTTP/1.1 front, the WSGI app on blocking threads.
WEB_WORKERS processes x WEB_BLOCKING_THREADS threads. Two processes use both cores of the
machines this is measured on while each keeps one webhook group committer fed with large
batches (ingestion/webhook_commit.py); 16 threads in all hold the 16 connections of the
webhook bench in flight. Interleaved on 2026-12-02 (bench/README.md, "The web server's
shape"), 2x8 accepted as many webhooks as 3x6 with less server CPU each, and 1x16 fewer
(one process is bound to one core by the GIL).
"""

WEB_WORKERS = 2
WEB_BLOCKING_THREADS = 8
