"""Run the tests at another time of day: every Python process started with this folder on
PYTHONPATH and FAKE_NOW set (an ISO time, UTC) sees its wall clock shifted there.

    FAKE_NOW='2026-12-31 23:55' PYTHONPATH=devstack/tests/fakeclock .venv/bin/python -m pytest jobs

The first process turns FAKE_NOW into one offset (FAKE_CLOCK_OFFSET_S) that the processes it
starts inherit, so pytest, the workers it spawns and the embedded S3 agree. time-machine moves
only the wall clock (time.time, datetime.now): monotonic time, sleeps and timed waits stay
real, which libfaketime 0.9.10 breaks in Python. PostgreSQL keeps its own clock unless it is
started under libfaketime with FAKETIME set to the same offset.
"""

import os

if os.environ.get("FAKE_NOW") and not os.environ.get("FAKE_CLOCK_OFFSET_S"):
    import time
    from datetime import UTC, datetime

    _target = datetime.fromisoformat(os.environ["FAKE_NOW"])
    _target = _target if _target.tzinfo else _target.replace(tzinfo=UTC)
    os.environ["FAKE_CLOCK_OFFSET_S"] = str(_target.timestamp() - time.time())

if os.environ.get("FAKE_CLOCK_OFFSET_S"):
    import time

    import time_machine

    time_machine.travel(time.time() + float(os.environ["FAKE_CLOCK_OFFSET_S"]), tick=True).start()
