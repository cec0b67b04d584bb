"""Start and stop the embedded services (PostgreSQL, NATS JetStream, S3) the project needs.

`python -m devstack up|down|status|env` from the shell; `ensure_running()` from settings.
"""

from devstack.stack import DEFAULT_ROOT, Stack, ensure_running

__all__ = ["DEFAULT_ROOT", "Stack", "ensure_running"]
