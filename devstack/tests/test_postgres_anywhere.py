"""Embedded PostgreSQL starts wherever the checkout lives, and never chmods the user's folders.

As root, PostgreSQL runs as the system user `pgserver`. A checkout in a mode-700 folder (a
root home directory, what `mktemp -d` makes) hides both the wheel's binaries and the data
folder from that user: the cluster and a copy of the binaries then live in a runtime folder
of their own (devstack.services.runtime_base), cleaned up once the stack folder is gone.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from devstack.services import (
    RUNTIME_BASE_ENV,
    PostgresService,
    ServiceError,
    pginstall_dir,
    runtime_base,
    sweep_runtime_dirs,
)
from devstack.stack import PROJECT_DIR

IS_ROOT = os.geteuid() == 0

# Run in a child process: what the pytest plugin does for a session's throw-away stack
# (start, use, stop, delete the folder, exit), printing what the test checks.
CHILD = """
import json, shutil, sys
from pathlib import Path
import psycopg
from devstack.services import pginstall_dir
from devstack.stack import Stack

stack = Stack(Path(sys.argv[1]))
stack.up(["postgres"])
pg = stack.services["postgres"]
with psycopg.connect(pg.url()) as conn:
    user, data = conn.execute(
        "SELECT current_user, current_setting('data_directory')"
    ).fetchone()
    conn.execute("CREATE TABLE t (x int)")
    conn.execute("INSERT INTO t VALUES (1)")
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    server_uid = int(
        next(l for l in open(f"/proc/{pid}/status") if l.startswith("Uid:")).split()[1]
    )
stack.down(["postgres"])
print(json.dumps({
    "data_directory": data, "data_link": str(pg.data_link),
    "link_is_symlink": pg.data_link.is_symlink(), "pginstall": str(pginstall_dir()),
    "server_uid": server_uid, "user": user,
}))
if len(sys.argv) > 2 and sys.argv[2] == "remove":
    shutil.rmtree(stack.root)
"""


def modes_above(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mode for p in [path, *path.parents]}


def private_site_packages(into: Path) -> Path:
    """The pgserver wheel (hard-linked) inside a mode-700 folder, as in a private clone's venv."""
    site = pginstall_dir().parent.parent
    target = into / "site-packages"
    target.mkdir(parents=True)
    for name in ("pgserver", "pgserver.libs"):
        if (site / name).exists():
            shutil.copytree(site / name, target / name, symlinks=True, copy_function=os.link)
    return target


@pytest.mark.services
@pytest.mark.skipif(not IS_ROOT, reason="the server user only differs from ours as root")
def test_root_runs_postgres_from_a_mode_700_checkout_without_touching_its_folders(
    tmp_path: Path,
) -> None:
    checkout = tmp_path / "x700"
    checkout.mkdir(mode=0o700)
    checkout.chmod(0o700)
    site = private_site_packages(checkout / "venv")
    root = checkout / "clone" / ".devstack-test-1"
    root.parent.mkdir()
    before = modes_above(root.parent)

    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), "remove"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{PROJECT_DIR}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["pginstall"].startswith(str(site))  # the child used the unreachable wheel
    assert seen["user"] == "postgres"
    assert seen["server_uid"] == pwd.getpwnam(PostgresService.system_user).pw_uid
    assert seen["link_is_symlink"] is True
    runtime = Path(seen["data_directory"]).parent
    assert runtime.parent == runtime_base()
    assert not str(runtime).startswith(str(checkout))
    # No folder of the user's was opened to others on the way.
    assert modes_above(root.parent) == before
    assert stat.S_IMODE(checkout.stat().st_mode) == 0o700
    # The stack folder was deleted and the process that started it exited: its runtime
    # folder (cluster and binaries) went with it.
    assert not runtime.exists()


@pytest.mark.services
def test_the_runtime_folder_outlives_a_stop_and_keeps_the_data(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    service = PostgresService(folder / "stack")
    try:
        service.start()
        first_port = service.port
        with psycopg_connect(service) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        service.stop()
        service.start()
        with psycopg_connect(service) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        assert service.port == first_port
        assert service.data_link.is_symlink() is IS_ROOT
    finally:
        service.stop()
    runtime = service.data_dir.parent
    shutil.rmtree(folder)
    removed = sweep_runtime_dirs()
    if IS_ROOT:
        assert runtime in removed
        assert not runtime.exists()


def psycopg_connect(service: PostgresService):
    import psycopg

    return psycopg.connect(service.url(), autocommit=True)


def python_for(user: pwd.struct_passwd, home: Path) -> tuple[str, dict[str, str]]:
    """An interpreter `user` may run, with this venv's packages and the project importable.

    The venv's own python may link to a root-only folder (pyenv under /root); the system
    python of the same version then runs with the venv's site-packages on its path.
    """
    site = sysconfig.get_paths()["purelib"]
    env = {
        **os.environ,
        "HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_DIR), site]),
    }
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")):
        if candidate is None:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import psycopg, devstack"],
                capture_output=True, timeout=60, check=False, cwd=home, env=env,
                user=user.pw_uid, group=user.pw_gid, extra_groups=[],
            )  # fmt: skip
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, env
    pytest.skip(f"no {version} that {user.pw_name} may run with this venv's packages")


@pytest.mark.services
@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a child as an unprivileged user")
def test_a_normal_user_runs_postgres_as_itself_in_its_own_mode_700_folder() -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to run as")
    # mktemp -d as that user: mode 700, its own. /tmp (not tmp_path, which root keeps 700).
    home = Path(tempfile.mkdtemp(prefix="devstack-user-"))
    try:
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        python, env = python_for(nobody, home)
        root = home / "checkout" / ".devstack"
        result = subprocess.run(
            [python, "-c", CHILD, str(root)],
            capture_output=True, text=True, timeout=120, check=False, cwd=home,
            user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen["server_uid"] == nobody.pw_uid
        assert seen["link_is_symlink"] is False
        assert seen["data_directory"] == str(root / "postgres" / "data")
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="the runtime folder is used by root only")
def test_an_unsafe_runtime_folder_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    (shared / "devstack-postgres").mkdir(parents=True)
    os.chown(shared / "devstack-postgres", 65534, 65534)  # someone else's
    monkeypatch.setenv(RUNTIME_BASE_ENV, str(shared))
    service = PostgresService(tmp_path / "stack")
    with pytest.raises(ServiceError) as failure:
        service.start(timeout=5)
    message = str(failure.value)
    assert "\n" not in message
    assert "must be a folder owned by root" in message
    assert RUNTIME_BASE_ENV in message
    assert not (tmp_path / "stack" / "postgres" / "data").exists()
