#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
    embedded = os.environ.get("HEALTH_EMBEDDED_SERVICES", "true").strip().lower()
    # HEALTH_ENV unset means production (health_project/settings.py): nothing embedded.
    development = os.environ.get("HEALTH_ENV", "production") != "production"
    if development and embedded not in {"0", "false", "no", "off"}:
        # After `make run` or `python -m devstack up`, commands find the embedded servers
        # that are already running; nothing is started from here (devstack.adopt_running).
        from devstack import adopt_running

        adopt_running()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
