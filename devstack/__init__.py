"""Start and stop the embedded services (PostgreSQL, NATS JetStream, S3) the project needs.

`python -m devstack up|down|status|env` from the shell; `ensure_running()` from the command
that runs the whole system (`python -m devrun`); `adopt_running()` from `manage.py`. Settings
never start anything: they read the URLs these put into the environment.
"""

from devstack.stack import DEFAULT_ROOT, Stack, adopt_running, ensure_running

__all__ = ["DEFAULT_ROOT", "Stack", "adopt_running", "ensure_running"]
