"""Chaos run: the whole pipeline on a 3-node JetStream cluster under a schedule of faults.

`python -m bench.chaos` (bench/README.md, "Chaos run"). Unlike the other benches it asserts:
it exits 0 only when every invariant holds, proven from the stores at the end.

What one run does, in its own devstack root (default `.devstack-chaos`, wiped first):
- Postgres, S3 and a 3-node NATS cluster; `manage.py provision` (streams at R3);
- the children a supervisor would run, restarted whenever they die: granian (2 workers,
  respawned by granian), `run_relay`, two `run_consumer normalizer`, `run_worker` and
  `reconcile_jobs --every 5`. They reach S3 through a TCP gate in this process, which
  the S3 fault closes (the embedded S3 keeps objects in memory: restarting it would lose
  them, and the sha256 invariant with them);
- the Oura simulator in this process: webhook deliveries signed like Oura's, sent at a
  steady rate (creates, some updates and deletes, 1 % poison documents, 5 % exact
  duplicates resent byte for byte), retried like Oura retries; backfills of N users;
- the faults of a schedule computed from --seed and printed at the start;
- after the load, the drain; then the proof, from Postgres, S3 and JetStream.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.normalizer import percentile
from health_project.serving import BACKGROUND_NICE, granian_args

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CLIENT_ID = "chaos-client-id"
CLIENT_SECRET = "chaos-client-secret"  # the simulator's and ours: webhooks are signed with it
WEBHOOK_TYPES = ("workout", "sleep")
ROW_TABLES = {"workout": "oura_activities", "sleep": "oura_sleep_periods"}
KILL_WINDOW_S = 10.0  # a delivery sent this long after a SIGKILL counts as "during a fault"


# --- the plan ---------------------------------------------------------------------------


@dataclass
class Plan:
    events: int
    rate: float
    seed: int
    reduced: bool
    webhook_users: int
    backfill_users: int
    backfill_days: int
    outage_s: float  # S3 and each Oura window
    nats_down_s: float
    kills: dict[str, int]
    nats_kills: int
    drain_timeout_s: float
    stale_after_s: float

    @property
    def load_s(self) -> float:
        return self.events / self.rate


@dataclass
class Fault:
    at: float  # seconds after the load starts
    kind: str  # kill | nats | postgres | s3 | oura_5xx | oura_429
    target: str = ""
    duration: float = 0.0
    started: float | None = None  # wall clock, filled in when it happens
    ended: float | None = None
    note: str = ""


def make_plan(args: argparse.Namespace) -> Plan:
    if args.reduced:
        return Plan(
            events=args.events or 600, rate=args.rate or 12.0, seed=args.seed, reduced=True,
            webhook_users=4, backfill_users=2, backfill_days=60, outage_s=5.0,
            nats_down_s=5.0,
            kills={"normalizer": 1, "relay": 1, "web": 1, "worker": 1}, nats_kills=1,
            drain_timeout_s=150.0, stale_after_s=20.0,
        )  # fmt: skip
    return Plan(
        events=args.events or 30000, rate=args.rate or 55.0, seed=args.seed, reduced=False,
        webhook_users=20, backfill_users=10, backfill_days=730, outage_s=30.0,
        nats_down_s=15.0,
        kills={"normalizer": 20, "relay": 5, "web": 5, "worker": 3}, nats_kills=3,
        drain_timeout_s=300.0, stale_after_s=60.0,
    )  # fmt: skip


def make_schedule(plan: Plan) -> list[Fault]:
    """Outages one after another, never overlapping; SIGKILLs spread at random over the load.

    The first NATS fault takes whichever node leads HEALTH_RAW at that moment ("leader");
    the others take the nodes not yet killed, so each kill hits a different node.
    """
    rng = random.Random(plan.seed)
    load = plan.load_s
    outages = [Fault(0, "nats", duration=plan.nats_down_s) for _ in range(plan.nats_kills)]
    outages += [
        Fault(0, "postgres"),
        Fault(0, "s3", duration=plan.outage_s),
        Fault(0, "oura_5xx", duration=plan.outage_s),
        Fault(0, "oura_429", duration=plan.outage_s),
    ]
    rng.shuffle(outages)
    first, last = 0.1 * load, 0.8 * load
    slot = (last - first) / len(outages)
    for n, fault in enumerate(outages):
        spare = max(0.0, slot - fault.duration - 8.0)
        fault.at = round(first + n * slot + rng.uniform(0, spare), 1)
    # The first NATS fault in time takes the leader: the later ones then pick nodes not yet
    # killed, so the three kills hit three different nodes.
    nats = [fault for fault in outages if fault.kind == "nats"]
    for n, fault in enumerate(sorted(nats, key=lambda f: f.at)):
        fault.target = "leader" if n == 0 else "other"
    kills = []
    for target, count in plan.kills.items():
        for _ in range(count):
            name = f"normalizer-{rng.randint(1, 2)}" if target == "normalizer" else target
            kills.append(Fault(round(rng.uniform(0.05 * load, 0.85 * load), 1), "kill", name))
    return sorted(outages + kills, key=lambda f: f.at)


# --- the S3 gate ------------------------------------------------------------------------


class S3Gate:
    """A TCP relay in front of the embedded S3; `close()` makes S3 unreachable (connection
    refused, open connections cut) without touching the objects moto holds in memory."""

    def __init__(self, target_port: int) -> None:
        from devstack.services import free_port

        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        self.open()
        threading.Thread(target=self._accept, daemon=True, name="s3-gate").start()

    def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(256)
        sock.settimeout(0.2)
        self._listener = sock

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def stop(self) -> None:
        self._stopped = True
        self.close()

    def _accept(self) -> None:
        while not self._stopped:
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._conns.discard(src)
            self._conns.discard(dst)


# --- the children -----------------------------------------------------------------------


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0


class Children:
    """Start, watch and restart the system's processes (a supervisor's job)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.children: dict[str, Child] = {}
        self.stopping = False

    def add(self, name: str, argv: list[str]) -> None:
        self.children[name] = child = Child(name, argv)
        self._spawn(child)

    def _spawn(self, child: Child) -> None:
        from devrun.supervisor import _die_with_parent

        log = open(self.logs / f"{child.name}.log", "ab")  # noqa: SIM115 - the child owns it
        child.process = subprocess.Popen(
            child.argv, env=self.env | {"OTEL_SERVICE_NAME": f"health-{child.name}"},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
            start_new_session=True, preexec_fn=_die_with_parent(),
        )  # fmt: skip
        log.close()

    def restart_dead(self) -> None:
        """Called from the main thread (the parent-death signal is per forking thread)."""
        if self.stopping:
            return
        for child in self.children.values():
            if child.process is not None and child.process.poll() is not None:
                child.restarts += 1
                self._spawn(child)

    def pid(self, name: str) -> int:
        process = self.children[name].process
        assert process is not None
        return process.pid

    def kill(self, name: str) -> str:
        if name == "web":
            workers = _child_pids(self.pid("web"))
            if not workers:
                return "no granian worker found"
            victim = random.choice(workers)
            os.kill(victim, signal.SIGKILL)
            return f"granian worker pid {victim}"
        victim = self.pid(name)
        os.killpg(victim, signal.SIGKILL)
        return f"pid {victim}"

    def stop(self) -> None:
        self.stopping = True
        for child in reversed(self.children.values()):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children.values():
            assert child.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def _child_pids(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        pass
    return found


# --- the load ---------------------------------------------------------------------------


@dataclass
class Delivery:
    """One notification (unique), with what the sender saw."""

    n: int
    kind: str  # create | update | delete | poison
    data_type: str
    user: str  # Oura user id
    object_id: str
    notification: dict[str, str]
    event_id: str
    first_sent: float = 0.0
    answered: float = 0.0
    status: int = 0  # final: 202, 409 (accepted by an attempt whose answer was lost), else
    attempts: int = 0
    duplicate_statuses: list[int] = field(default_factory=list)


class Load:
    def __init__(self, plan: Plan, sim: Any, port: int, users: list[str]) -> None:
        self.plan = plan
        self.sim = sim
        self.port = port
        self.users = users
        self.rng = random.Random(plan.seed + 1)
        self.lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self.duplicates_sent = 0
        self.live: dict[tuple[str, str, str], float] = {}  # created, not updated/deleted yet
        self.updated: set[tuple[str, str, str]] = set()
        self.local = threading.local()
        self.pending_rows: dict[tuple[str, str], float] = {}  # (table, oura_id) -> first sent
        self.visible: dict[tuple[str, str], float] = {}
        self.dup_indexes: set[int] = set()
        self.user_ids: list[str] = []  # ours, for the row poller

    # Sizes: of `events` deliveries, 5 % are exact duplicates; of the unique ones 1 % are
    # poison creates, 8 % updates, 3 % deletes, the rest creates.
    def kinds(self) -> list[str]:
        duplicates = round(self.plan.events * 0.05)
        unique = self.plan.events - duplicates
        kinds = ["poison"] * max(1, round(unique * 0.01))
        kinds += ["update"] * round(unique * 0.08) + ["delete"] * round(unique * 0.03)
        kinds += ["create"] * (unique - len(kinds))
        self.rng.shuffle(kinds)
        # The first tenth are creates: updates and deletes need something to change.
        head = sorted(kinds[: unique // 10], key=lambda k: k != "create")
        self.dup_indexes = set(self.rng.sample(range(unique), duplicates))
        return head + kinds[unique // 10 :]

    def _document_for(self, kind: str) -> tuple[str, str, str, str]:
        """Make the change at "Oura" (the simulator); returns (kind, type, user, object id)."""
        from oura_simulator import data

        now = time.time()
        if kind in ("update", "delete"):
            with self.lock:
                ripe = [key for key, at in self.live.items() if now - at > 3.0]
                if kind == "update":
                    ripe = [key for key in ripe if key not in self.updated]
                target = self.rng.choice(ripe) if ripe else None
                if target is not None:
                    if kind == "delete":
                        del self.live[target]
                    else:
                        self.updated.add(target)
            if target is None:
                kind = "create"
            else:
                dtype, user, object_id = target
                if kind == "delete":
                    self.sim.delete_document(user, dtype, object_id, emit=False)
                    table = ROW_TABLES[dtype]
                    with self.lock:  # its row may never have been visible: not a latency
                        self.pending_rows.pop((table, object_id), None)
                else:
                    current = self.sim.get_document(user, dtype, object_id)
                    fresh = data.generate_new(
                        self.sim.store.get_user(user).profile, dtype,
                        date.fromisoformat(current["day"]), self.sim.store.gen_options(),
                        self.rng.randrange(1 << 30),
                    )  # fmt: skip
                    fresh["id"] = object_id
                    self.sim.put_document(user, dtype, fresh, emit=False)
                return kind, dtype, user, object_id
        user = self.rng.choice(self.users)
        dtype = "workout" if kind == "poison" else self.rng.choice(WEBHOOK_TYPES)
        day = date(2021, 1, 1) + timedelta(days=self.rng.randrange(1000))
        if kind == "poison":
            # A document that breaks the Oura contract (intensity is easy|moderate|hard): the
            # normalizer must dead-letter it, not loop on it and not write a row.
            doc = self.sim.put_document(user, dtype, None, emit=False, day=day)
            doc = copy.deepcopy(doc) | {"intensity": "extreme"}
            self.sim.put_document(user, dtype, doc, emit=False)
        else:
            doc = self.sim.put_document(user, dtype, None, emit=False, day=day)
        return kind, dtype, user, str(doc["id"])

    def build(self, n: int, kind: str) -> Delivery:
        from ingestion.webhook_services import webhook_dedupe_key, webhook_event_id

        kind, dtype, user, object_id = self._document_for(kind)
        notification = {
            "event_type": {"poison": "create"}.get(kind, kind), "data_type": dtype,
            "object_id": object_id,
            "event_time": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "user_id": user,
        }  # fmt: skip
        event_id = str(webhook_event_id(dedupe_key=webhook_dedupe_key(notification=notification)))
        return Delivery(n, kind, dtype, user, object_id, notification, event_id)

    def _post(self, body: bytes, headers: dict[str, str]) -> int:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=15
            )
        try:
            client.request("POST", "/v1/webhooks/oura", body=body, headers=headers)
            response = client.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            client.close()
            self.local.client = None
            return 0

    def send(self, delivery: Delivery) -> None:
        """Deliver like Oura: sign, POST, retry on no answer or 5xx (fresh timestamp)."""
        from oura_simulator.webhooks import sign

        body = json.dumps(delivery.notification, separators=(",", ":")).encode()
        delivery.first_sent = time.time()
        give_up = delivery.first_sent + 240
        seen_lost = False
        while True:
            ts = str(int(time.time()))
            headers = {"content-type": "application/json", "x-oura-timestamp": ts,
                       "x-oura-signature": sign(CLIENT_SECRET, ts, body)}  # fmt: skip
            status = self._post(body, headers)
            delivery.attempts += 1
            if status == 202 or (status == 409 and seen_lost):
                break
            if status == 409 or (400 <= status < 500 and status != 429):
                break  # not retried by Oura either; the proof reports it
            seen_lost = True  # no answer or 5xx: an earlier attempt may have been stored
            if time.time() > give_up:
                break
            time.sleep(min(2.0, 0.2 * delivery.attempts))
        delivery.status, delivery.answered = status, time.time()
        if status not in (202, 409):
            return
        table = ROW_TABLES[delivery.data_type]
        with self.lock:
            if delivery.kind == "create":
                self.live[(delivery.data_type, delivery.user, delivery.object_id)] = time.time()
                self.pending_rows[(table, delivery.object_id)] = delivery.first_sent
        if delivery.n in self.dup_indexes:
            # An exact duplicate: the same bytes and headers again, as a retrying sender
            # whose first answer was lost would send them. Documented answer: 409.
            for _ in range(60):  # resent until answered, as the first copy was
                status = self._post(body, headers)
                if status and status < 500:
                    break
                time.sleep(0.5)
            delivery.duplicate_statuses.append(status)
            with self.lock:
                self.duplicates_sent += 1

    def run(self, stop_at: list[float]) -> None:
        kinds = self.kinds()
        interval = 1.0 / self.plan.rate
        began = time.perf_counter()
        with ThreadPoolExecutor(24) as pool:
            for n, kind in enumerate(kinds):
                delay = began + n * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                delivery = self.build(n, kind)
                with self.lock:
                    self.deliveries.append(delivery)
                pool.submit(self.send, delivery)
            stop_at.append(time.time())


# The poller's pace: every 100 ms while few rows are awaited, slower as the backlog grows
# (one second per 10,000 awaited rows, at most 2 s). Asking for 15,000 ids ten times a second
# cost a Postgres backend a quarter of a core and the run's process as much, which the 2-core
# machine took from the normalizers it measures; with that many awaited, latencies are
# minutes and a 2 s resolution says the same.
POLL_EVERY_S = 0.1
POLL_SLOWER_PER_ROW_S = 1e-4
POLL_AT_MOST_S = 2.0


def poll_interval(awaited: int) -> float:
    return min(POLL_AT_MOST_S, max(POLL_EVERY_S, awaited * POLL_SLOWER_PER_ROW_S))


def poll_rows(load: Load, stop: threading.Event) -> None:
    """Note when each created row becomes visible (own connection, every 0.1-2 s)."""
    import psycopg

    while not stop.is_set():
        try:
            with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as pg:
                while not stop.is_set():
                    with load.lock:
                        waiting = list(load.pending_rows)
                    for table in ("oura_activities", "oura_sleep_periods"):
                        ids = [oura_id for t, oura_id in waiting if t == table]
                        if not ids:
                            continue
                        # By user first: the tables' indexes lead with user_id.
                        rows = pg.execute(
                            f"SELECT oura_id FROM health.{table} "
                            "WHERE user_id = ANY(%s) AND oura_id = ANY(%s)",
                            [load.user_ids, ids],
                            prepare=True,
                        ).fetchall()
                        now = time.time()
                        with load.lock:
                            for (oura_id,) in rows:
                                load.visible[(table, oura_id)] = now
                                load.pending_rows.pop((table, oura_id), None)
                    time.sleep(poll_interval(len(waiting)))
        except Exception:  # Postgres restarting: try again
            time.sleep(0.5)


# --- faults -----------------------------------------------------------------------------


class Faults:
    def __init__(self, stack: Any, children: Children, gate: S3Gate, sim: Any) -> None:
        self.stack = stack
        self.children = children
        self.gate = gate
        self.sim = sim
        self.killed_nodes: list[str] = []
        self.threads: list[threading.Thread] = []

    def begin(self, fault: Fault) -> None:
        fault.started = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] fault: {fault.kind} {fault.target}", flush=True)
        if fault.kind == "kill":
            fault.note = self.children.kill(fault.target)
            fault.ended = fault.started
            return
        if fault.kind == "s3":
            self.gate.close()
        elif fault.kind == "oura_5xx":
            self.sim.config.error_statuses = (500, 502, 503)
            self.sim.config.error_rate = 1.0
        elif fault.kind == "oura_429":
            self.sim.config.force_next_statuses = [429] * 10_000_000
        if fault.kind in ("s3", "oura_5xx", "oura_429"):
            timer = threading.Timer(fault.duration, self._end_window, args=(fault,))
            timer.daemon = True
            timer.start()
            self.threads.append(timer)
            return
        thread = threading.Thread(target=self._blocking, args=(fault,), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _end_window(self, fault: Fault) -> None:
        if fault.kind == "s3":
            self.gate.open()
        elif fault.kind == "oura_5xx":
            self.sim.config.error_rate = 0.0
        elif fault.kind == "oura_429":
            self.sim.config.force_next_statuses = []
        fault.ended = time.time()

    def _blocking(self, fault: Fault) -> None:
        try:
            if fault.kind == "postgres":
                self.stack.stop("postgres")
                self.stack.start("postgres")
            elif fault.kind == "nats":
                if fault.target == "leader":
                    node = self.stack.nats_stream_leader("HEALTH_RAW", timeout=10)
                    meta = self.stack.nats_meta_leader(timeout=1)
                    fault.note = f"stream leader {node} (meta leader {meta})"
                else:
                    names = [n.name for n in self.stack.nats_nodes()]
                    node = next(n for n in names if n not in self.killed_nodes)
                    fault.note = f"node {node}"
                assert node is not None
                self.killed_nodes.append(node)
                self.stack.kill_nats_node(node)
                time.sleep(fault.duration)
                self.stack.start_nats_node(node, timeout=60)
        except Exception as exc:
            fault.note += f" error: {type(exc).__name__}: {exc}"
        fault.ended = time.time()


# --- the proof --------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _expected_rows(collection: str, documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from normalized import contracts, mappers

    mapping = mappers.TABLES[collection]
    out = {}
    for doc in documents:
        row = mapping.row(contracts.parse_document(collection, doc))
        out[str(row["oura_id"])] = row
    return out


def _compare(
    collection: str, user_id: str, expected: dict[str, dict[str, Any]], at_oura: Any
) -> list[str]:
    """Rows of `user_id` against `expected` (oura_id -> mapped document); a row outside it is
    looked up with `at_oura(oura_id)` (the simulator's document now, or None)."""
    from normalized import mappers

    mapping = mappers.TABLES[collection]
    manager = mapping.model._default_manager.filter(user_id=user_id)
    if mapping.kind:
        manager = manager.filter(kind=mapping.kind)
    columns = sorted({key for row in expected.values() for key in row} | {"oura_id", "day"})
    what = f"{collection}/{user_id.rsplit('-', 1)[0]}"  # e.g. sleep/chaos-bf: by user group
    actual = {str(row["oura_id"]): row for row in manager.values(*columns)}
    problems = []
    for oura_id in expected.keys() - actual.keys():
        problems.append(f"{what} {oura_id} (user {user_id}): no row")
    for oura_id in actual.keys() - expected.keys():
        document = at_oura(oura_id)
        if document is None:
            problems.append(
                f"{what} {oura_id} (user {user_id}, day {actual[oura_id].get('day')}): "
                "row, but no such document at Oura"
            )
        else:
            expected[oura_id] = _expected_rows(collection, [document])[oura_id]
    for oura_id in expected.keys() & actual.keys():
        want, got = expected[oura_id], actual[oura_id]
        wrong = [k for k in want if not _same(want[k], got.get(k))]
        if wrong:
            problems.append(f"{what} {oura_id} (user {user_id}): differs in {wrong}")
    return problems


def _s3_sha256_check(rows: list[tuple[str, str]]) -> list[str]:
    """GET every indexed object straight from the embedded S3 (not through the gate) and
    hash its bytes. moto accepts any signature, so a fixed Authorization header is enough."""
    from urllib.parse import quote, urlparse

    from django.conf import settings

    url = urlparse(os.environ["S3_ENDPOINT_URL"])
    auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=embedded/20250101/us-east-1/s3/"
                             "aws4_request, SignedHeaders=host, Signature=00"}  # fmt: skip
    problems: list[str] = []
    lock = threading.Lock()

    def check(chunk: list[tuple[str, str]]) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        for key, sha in chunk:
            conn.request("GET", f"/{settings.S3_BUCKET}/{quote(key)}", headers=auth)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                found = f"status {response.status}"
            elif hashlib.sha256(body).hexdigest() != sha:
                found = "sha256 differs"
            else:
                continue
            with lock:
                problems.append(f"{key}: {found}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, [rows[n::4] for n in range(4)]))
    return problems


def durables_state() -> dict[str, dict[str, int]]:
    import asyncio

    from core import bus
    from core.consumers import CONSUMERS

    async def read() -> dict[str, dict[str, int]]:
        nc = await bus.connect(name="chaos-proof")
        try:
            js = nc.jetstream()
            out = {}
            for spec in CONSUMERS.values():
                info = await js.consumer_info(spec.stream, spec.durable)
                out[spec.durable] = {"num_pending": int(info.num_pending or 0),
                                     "num_ack_pending": int(info.num_ack_pending or 0),
                                     "num_redelivered": int(info.num_redelivered or 0)}  # fmt: skip
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def backlog() -> dict[str, int]:
    """What is still to do anywhere: relay queues, the durables, unfinished jobs."""
    from ingestion.models import RawEvent
    from jobs.models import IngestionJob

    state = {
        "relay_unarchived": RawEvent.objects.filter(archived_at__isnull=True).count(),
        "relay_unpublished": RawEvent.objects.filter(published_at__isnull=True)
        .exclude(publish_subject="")
        .count(),
        "jobs_active": IngestionJob.objects.filter(status__in=IngestionJob.ACTIVE_STATUSES).count(),
    }
    for durable, info in durables_state().items():
        state[f"{durable}_pending"] = info["num_pending"] + info["num_ack_pending"]
    return state


def prove(
    load: Load, sim: Any, user_of: dict[str, str], backfill: dict[str, str], plan: Plan
) -> dict[str, Any]:
    from django.db import connection

    from core.models import DeadLetter
    from ingestion.models import RawEvent
    from jobs.models import IngestionJob
    from normalized import mappers
    from normalized.models import DailyEntry, DeletedDocument

    invariants: dict[str, dict[str, Any]] = {}

    def record(name: str, problems: list[str], **figures: Any) -> None:
        # Problems read "<what> <id>...: <reason>"; counted by what and reason.
        kinds = Counter(
            f"{p.split(' ', 1)[0]}: {p.rsplit(': ', 1)[-1]}" if ": " in p else p for p in problems
        )
        invariants[name] = {"pass": not problems, "problems": len(problems),
                            "by_kind": dict(kinds.most_common(12)),
                            "examples": problems[:10], **figures}  # fmt: skip

    deliveries = load.deliveries
    webhook_users = {d.user for d in deliveries}
    raw = {
        str(event_id): status
        for event_id, status in RawEvent.objects.filter(kind="webhook").values_list(
            "event_id", "status"
        )
    }
    # 1. every delivery accepted (stored in the outbox), the sender's answers consistent.
    not_stored = [f"{d.kind} {d.event_id}: answer {d.status}" for d in deliveries
                  if d.event_id not in raw]  # fmt: skip
    record("every_delivery_accepted", not_stored, deliveries=len(deliveries),
           answered=dict(Counter(d.status for d in deliveries)))  # fmt: skip

    dups = [d for d in deliveries if d.duplicate_statuses]
    bad_dups = [f"{d.event_id}: {d.duplicate_statuses}" for d in dups
                if d.duplicate_statuses != [409]]  # fmt: skip
    extra_raw = len(raw) - len({d.event_id for d in deliveries})
    if extra_raw:
        bad_dups.append(f"{extra_raw} webhook raw events not sent by this run")
    record("exact_duplicates_rejected_409", bad_dups, duplicates=len(dups))

    # 2. every accepted delivery is a row, a tombstone, a dead letter or a rejection.
    letters = Counter(DeadLetter.objects.values_list("msg_id", flat=True))
    letter_types = Counter(DeadLetter.objects.values_list("error_type", flat=True))
    tombstones = {
        (collection, user_id, oura_id)
        for collection, user_id, oura_id in DeletedDocument.objects.values_list(
            "collection", "user_id", "oura_id"
        )
    }
    deleted = {(d.data_type, d.user, d.object_id) for d in deliveries
               if d.kind == "delete" and d.event_id in raw}  # fmt: skip
    poison_ids = {d.event_id for d in deliveries if d.kind == "poison"}
    outcome: Counter[str] = Counter()
    unexplained = []
    for d in deliveries:
        if d.event_id not in raw:
            continue
        key = (d.data_type, user_of[d.user], d.object_id)
        if d.kind == "poison":
            if letters.get(d.event_id) == 1:
                outcome["dead_lettered"] += 1
            else:
                unexplained.append(f"poison {d.event_id}: {letters.get(d.event_id, 0)} letters")
        elif (d.data_type, d.user, d.object_id) in deleted:
            if key in tombstones:
                outcome["tombstone"] += 1
            else:
                unexplained.append(f"{d.kind} {d.event_id}: deleted at Oura, no tombstone")
        else:
            outcome["row"] += 1  # checked against the document below
    outcome["rejected_duplicate"] = sum(d.duplicate_statuses == [409] for d in dups)
    stray_letters = [f"{msg_id}: {count}" for msg_id, count in letters.items()
                     if msg_id not in poison_ids or count > 1]  # fmt: skip
    accepted = len([d for d in deliveries if d.event_id in raw]) + len(dups)
    stored = outcome["row"] + outcome["tombstone"]
    balance = stored + outcome["dead_lettered"] + outcome["rejected_duplicate"]
    if balance != accepted:
        unexplained.append(f"accepted {accepted} != stored+dead-lettered+rejected {balance}")
    record("accepted_equals_stored_deadlettered_rejected", unexplained + stray_letters,
           accepted=accepted, stored_rows=outcome["row"], tombstones=outcome["tombstone"],
           dead_lettered=outcome["dead_lettered"], rejected=outcome["rejected_duplicate"],
           dead_letters_by_type=dict(letter_types))  # fmt: skip

    # 3. no row twice, anywhere.
    twice = []
    with connection.cursor() as cursor:
        for mapping in mappers.TABLES.values():
            table = connection.ops.quote_name(mapping.model._meta.db_table)
            keys = ", ".join(mapping.conflict_fields)
            for sql_keys in {keys, "user_id, oura_id"}:
                cursor.execute(
                    f"SELECT {sql_keys}, count(*) FROM {table} GROUP BY {sql_keys} "
                    "HAVING count(*) > 1"
                )
                twice += [f"{mapping.collection} {row}" for row in cursor.fetchall()]
    record("no_row_twice", sorted(set(twice)))

    # 4. every row equal to the simulator's document (webhook users: what they were told
    # about; backfill users: every mapped document of the job's range).
    mismatches = []
    rows_checked = 0
    live = {(d.data_type, d.user, d.object_id) for d in deliveries
            if d.event_id in raw and d.kind != "poison"} - deleted  # fmt: skip
    for oura_user in webhook_users:
        for dtype in WEBHOOK_TYPES:
            docs = [sim.get_document(oura_user, dtype, object_id)
                    for t, u, object_id in live if t == dtype and u == oura_user]  # fmt: skip
            expected = _expected_rows(dtype, docs)
            rows_checked += len(expected)
            mismatches += _compare(
                dtype, user_of[oura_user], expected,
                lambda oura_id, u=oura_user, t=dtype: sim.get_document(u, t, oura_id),
            )  # fmt: skip
    end = datetime.now(UTC).date()
    start = end - timedelta(days=plan.backfill_days - 1)
    for oura_user, user_id in backfill.items():
        for collection in mappers.TABLES:
            docs = sim.documents(oura_user, collection, start.isoformat(), end.isoformat())
            expected = _expected_rows(collection, docs)
            rows_checked += len(expected)
            mismatches += _compare(
                collection, user_id, expected,
                lambda oura_id, u=oura_user, c=collection: sim.get_document(u, c, oura_id),
            )  # fmt: skip
    record("every_row_equals_oura_document", mismatches, rows_checked=rows_checked)

    # 5. every raw object's sha256 equal to its index entry.
    indexed = list(RawEvent.objects.exclude(object_key="").values_list("object_key", "sha256"))
    unarchived = [
        f"{event_id} not archived"
        for event_id in RawEvent.objects.filter(archived_at__isnull=True).values_list(
            "event_id", flat=True
        )
    ]
    began = time.monotonic()
    record("raw_objects_match_sha256", unarchived + _s3_sha256_check(indexed),
           objects=len(indexed), seconds=round(time.monotonic() - began, 1))  # fmt: skip

    # 6. every job succeeded.
    jobs = list(IngestionJob.objects.values_list("job_id", "status", "last_error"))
    record("every_job_succeeded",
           [f"job {job_id}: {status}: {error[:200]}" for job_id, status, error in jobs
            if status != IngestionJob.Status.SUCCEEDED],
           jobs=len(jobs), statuses=dict(Counter(status for _, status, _ in jobs)))  # fmt: skip

    # 8. the daily page's stored entries are what the tables give (the read model's
    # triggers ran in every transaction that wrote, whichever process was killed).
    from normalized import daily_entries

    drifted = daily_entries.drift()
    record("daily_entries_equal_tables",
           [f"entry {user_id} {day}: differs from the tables" for user_id, day in drifted],
           entries=DailyEntry.objects.count())  # fmt: skip

    # 7. nothing left unacked on any durable.
    state = durables_state()
    record("nothing_unacked",
           [f"{name}: {info}" for name, info in state.items()
            if info["num_pending"] or info["num_ack_pending"]], durables=state)  # fmt: skip
    return invariants


# --- the run ----------------------------------------------------------------------------


def _wait_http(url: str, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def _connect(sim: Any, oura_user: str, user_id: str, users: dict[str, str]) -> None:
    from django.utils import timezone

    from ingestion import crypto
    from ingestion.models import OuraConnection

    tokens = sim.issue_tokens(oura_user)
    OuraConnection.objects.create(
        user_id=user_id, provider_user_id=oura_user,
        scopes=[s.removeprefix("extapi:") for s in str(tokens["scope"]).split()],
        access_token_enc=crypto.encrypt(tokens["access_token"]),
        refresh_token_enc=crypto.encrypt(tokens["refresh_token"]),
        access_token_expires_at=timezone.now() + timedelta(seconds=int(tokens["expires_in"])),
    )  # fmt: skip
    users[oura_user] = user_id


def latency_summary(load: Load, schedule: list[Fault]) -> dict[str, Any]:
    windows = [
        (f.started, (f.ended or f.started) + (KILL_WINDOW_S if f.kind == "kill" else 0.0))
        for f in schedule
        if f.started is not None
    ]
    during, outside = [], []
    for d in load.deliveries:
        if d.kind != "create" or d.status not in (202, 409):
            continue
        table = ROW_TABLES[d.data_type]
        seen = load.visible.get((table, d.object_id))
        if seen is None:
            continue
        ms = (seen - d.first_sent) * 1000
        in_fault = any(a <= d.first_sent <= b for a, b in windows)
        (during if in_fault else outside).append(ms)

    def stats(values: list[float]) -> dict[str, Any]:
        return {"count": len(values), "p50_ms": percentile(values, 50),
                "p95_ms": percentile(values, 95), "p99_ms": percentile(values, 99)}  # fmt: skip

    last_fault_end = max((b for _, b in windows), default=None)
    deleted = {d.object_id for d in load.deliveries if d.kind == "delete"}
    drain = None
    if last_fault_end is not None:
        before = [
            load.visible.get(
                (ROW_TABLES[d.data_type],
                 d.object_id)
            )
            for d in load.deliveries
            if d.kind == "create" and d.status in (202, 409) and d.first_sent <= last_fault_end
            and d.object_id not in deleted
        ]  # fmt: skip
        if before and all(v is not None for v in before):
            drain = round(max(0.0, max(v for v in before if v) - last_fault_end), 1)
    return {"during_faults": stats(during), "outside_faults": stats(outside),
            "drain_after_last_fault_s": drain,
            "note": "webhook create sent -> row visible; 'during' = sent inside an outage or "
                    f"within {KILL_WINDOW_S:.0f} s after a SIGKILL"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=0, help="deliveries (30000; 600 reduced)")
    parser.add_argument("--rate", type=float, default=0.0, help="deliveries/s (55; 12 reduced)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="fewer events, one fault of each kind, short windows (make test)",
    )
    parser.add_argument("--root", type=Path, default=ROOT / ".devstack-chaos")
    parser.add_argument("--keep", action="store_true", help="leave the services running")
    parser.add_argument(
        "--summary", type=Path, help="write the JSON summary here (default: bench/results/)"
    )
    args = parser.parse_args(argv)
    plan = make_plan(args)
    schedule = make_schedule(plan)
    began = time.time()
    print(json.dumps({"plan": asdict(plan) | {"load_s": round(plan.load_s, 1)},
                      "schedule": [{"at_s": f.at, "fault": f.kind, "target": f.target,
                                    "duration_s": f.duration} for f in schedule]}, indent=1),
          flush=True)  # fmt: skip

    from devstack.stack import Stack

    root = args.root.resolve()
    if root.exists():
        Stack(root).down()
        shutil.rmtree(root)
    stack = Stack(root, nats_cluster=3)
    services = stack.up()
    gate = S3Gate(int(services["S3_ENDPOINT_URL"].rsplit(":", 1)[1]))
    gate.start()
    try:
        return _run(plan, schedule, stack, services, gate, root, began, args)
    finally:
        if not args.keep:
            stack.down()
        gate.stop()


def _run(plan: Plan, schedule: list[Fault], stack: Any, services: dict[str, str],
         gate: S3Gate, root: Path, began: float, args: argparse.Namespace) -> int:  # fmt: skip
    for name in ("DATABASE_URL", "NATS_URL", "S3_ENDPOINT_URL", "NATS_STREAM_REPLICAS"):
        os.environ.pop(name, None)
    os.environ.update(services)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "health_project.settings", "HEALTH_ENV": "development",
        "HEALTH_EMBEDDED_SERVICES": "false", "DJANGO_DEBUG": "false", "LOG_LEVEL": "WARNING",
        "OURA_CLIENT_ID": CLIENT_ID, "OURA_CLIENT_SECRET": CLIENT_SECRET,
        "OURA_APP_RATE_LIMIT": "1000000", "WEBHOOK_RATE_LIMIT_PER_MINUTE": "1000000",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    from oura_simulator import OuraSimulator
    from oura_simulator.config import SimulatorConfig

    sim = OuraSimulator(SimulatorConfig(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, rate_limit_per_token=0,
        rate_limit_per_app=0, history_days=plan.backfill_days + 10, seed=plan.seed,
    ))  # fmt: skip
    base = sim.start()
    os.environ.update({"OURA_API_BASE_URL": base, "OURA_TOKEN_URL": f"{base}/oauth/token",
                       "OURA_AUTHORIZE_URL": f"{base}/oauth/authorize",
                       "OURA_REVOKE_URL": f"{base}/oauth/revoke"})  # fmt: skip
    child_env = dict(os.environ) | {"S3_ENDPOINT_URL": f"http://127.0.0.1:{gate.port}"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "provision"], env=child_env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import logging

    # This process's own bus client sees the NATS faults too; its reconnect warnings are noise.
    logging.getLogger("core.bus").setLevel(logging.ERROR)
    from django.db import connection as db_connection

    from jobs.services import job_start

    webhook_users = [sim.add_user().oura_user_id for _ in range(plan.webhook_users)]
    backfill: dict[str, str] = {}
    users: dict[str, str] = {}
    for n, oura_user in enumerate(webhook_users):
        _connect(sim, oura_user, f"chaos-wh-{n}", users)
    for n in range(plan.backfill_users):
        oura_user = sim.add_user().oura_user_id
        _connect(sim, oura_user, f"chaos-bf-{n}", users)
        backfill[oura_user] = f"chaos-bf-{n}"

    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    from devstack.services import free_port

    port = free_port()
    children = Children(child_env, logs)
    bin_dir = Path(sys.executable).parent
    children.add("web", [str(bin_dir / "granian"), *granian_args(host="127.0.0.1", port=port),
                         "--workers-kill-timeout", "5", "--respawn-failed-workers",
                         "--respawn-interval", "0.5", "--no-access-log"])  # fmt: skip
    children.add("relay", [*manage, "run_relay", "--nice", str(BACKGROUND_NICE)])
    children.add("normalizer-1", [*manage, "run_consumer", "normalizer"])
    children.add("normalizer-2", [*manage, "run_consumer", "normalizer"])
    children.add("worker", [*manage, "run_worker", "--threads", "2"])
    # As run_scheduler would, more often; the reduced run waits less for a dead worker.
    children.add("reconciler", [*manage, "reconcile_jobs", "--every", "5", "--stale-after",
                                str(plan.stale_after_s), "--queued-grace",
                                str(plan.stale_after_s)])  # fmt: skip
    load = Load(plan, sim, port, webhook_users)
    load.user_ids = [users[u] for u in webhook_users]
    faults = Faults(stack, children, gate, sim)
    stop_poll = threading.Event()
    summary: dict[str, Any] = {}
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        time.sleep(2)  # consumers bound
        setup_s = time.time() - began
        end = datetime.now(UTC).date()
        for user_id in backfill.values():
            job_start(user_id=user_id, start=end - timedelta(days=plan.backfill_days - 1),
                      end=end, data_types=None, requested_by="chaos")  # fmt: skip
        poller = threading.Thread(target=poll_rows, args=(load, stop_poll), daemon=True)
        poller.start()
        load_done: list[float] = []
        sender = threading.Thread(target=load.run, args=(load_done,), daemon=True)
        load_start = time.time()
        sender.start()
        todo = list(schedule)
        while sender.is_alive() or todo:
            now = time.time() - load_start
            while todo and todo[0].at <= now:
                faults.begin(todo.pop(0))
            children.restart_dead()
            time.sleep(0.1)
        sender.join()
        load_end = load_done[0] if load_done else time.time()
        for thread in faults.threads:
            thread.join()
        print(f"[{time.strftime('%H:%M:%S')}] load sent; draining", flush=True)
        # The drain: every delivery answered, every create visible, nothing left anywhere.
        deadline = time.time() + plan.drain_timeout_s
        state: dict[str, int] = {}
        drained_at = None
        while time.time() < deadline:
            children.restart_dead()
            try:
                state = backlog()
            except Exception as exc:  # Postgres restarted under this process's connection
                state = {"error": 1}
                print(f"backlog check failed: {exc}", flush=True)
                db_connection.close()
            with load.lock:
                state["rows_not_visible"] = len(load.pending_rows)
            if not any(state.values()):
                drained_at = time.time()
                break
            if int(time.time() - load_end) % 15 == 0:
                print(f"[{time.strftime('%H:%M:%S')}] left: {state}", flush=True)
            time.sleep(1.0)
        stop_poll.set()
        children.stop()
        restarts = {c.name: c.restarts for c in children.children.values()}
        print(f"[{time.strftime('%H:%M:%S')}] proving", flush=True)
        db_connection.close()
        invariants = prove(load, sim, users, backfill, plan)
        if drained_at is None:
            invariants["drained"] = {"pass": False, "problems": 1, "left": state}
        last_fault = max((f.ended or f.started or 0) for f in schedule)
        summary = {
            "when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(), "seed": plan.seed, "reduced": plan.reduced,
            "pass": all(i["pass"] for i in invariants.values()),
            "seconds": {"setup": round(setup_s, 1), "load": round(load_end - load_start, 1),
                        "drain_after_load": round((drained_at or time.time()) - load_end, 1),
                        "drain_after_last_fault_end":
                            round((drained_at or time.time()) - last_fault, 1),
                        "total": round(time.time() - began, 1)},
            "counts": {"deliveries_sent": len(load.deliveries) + load.duplicates_sent,
                       "unique_notifications": len(load.deliveries),
                       "by_kind": dict(Counter(d.kind for d in load.deliveries)),
                       "exact_duplicates": load.duplicates_sent,
                       "retried_deliveries": sum(d.attempts > 1 for d in load.deliveries),
                       "backfill_jobs": len(backfill), "restarts": restarts,
                       "oura_requests": len(sim.requests)},
            "latency_webhook_to_row": latency_summary(load, schedule),
            "invariants": invariants,
            "faults": [{"at_s": f.at, "fault": f.kind, "target": f.target,
                        "duration_s": round((f.ended or 0) - (f.started or 0), 1)
                        if f.started else None, "note": f.note} for f in schedule],
        }  # fmt: skip
    finally:
        stop_poll.set()
        children.stop()
        sim.stop()
    name = f"chaos-{'reduced-' if plan.reduced else ''}{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out = args.summary or RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str), flush=True)
    return 0 if summary.get("pass") else 1


if __name__ == "__main__":
    raise SystemExit(main())
