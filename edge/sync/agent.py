"""`edge sync`: the agent process beside the server, sharing its SQLite database (WAL).

Each pass probes central (`GET /v1/`, short timeout) and, when it answers, runs the streams in
order: parameters, annotations, knowledge (pull), then conversations (push). What each stream last
did goes to `sync_state`, where `edge sync status`, the server's `/metrics` and the kiosk page's
offline indicator read it. While central is unreachable the agent waits with exponential backoff
and jitter; a stream whose key is refused (401/403) stops and says so -- retrying a revoked key or
a disabled app changes nothing -- until the agent is restarted with new settings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import sqlite_utils

from edge.bundle import BundleError, load_bundle
from edge.inference.embedder import Embedder, embedder_id
from edge.settings import Settings
from edge.store.knowledge import KnowledgeStore
from edge.store.outbox import Outbox
from edge.store.parameters import CentralParameters
from edge.store.retention import Retention
from edge.store.sync_state import CENTRAL, SyncState
from edge.sync.alerts import AlertReport, AlertSender
from edge.sync.client import AuthFailed, DifyClient, Malformed, Rejected, SyncError, Unreachable
from edge.sync.pull import pull_annotations, pull_knowledge, pull_parameters
from edge.sync.push import DocumentSink, Pusher, PushPolicy, RecordSink, WorkflowSink, backoff

log = logging.getLogger(__name__)
STREAMS = ("parameters", "annotations", "knowledge", "push")


@dataclass(frozen=True)
class PassResult:
    online: bool
    outcomes: dict[str, str]  # stream → ok | busy | failed | stopped | off | unreachable
    notes: dict[str, list[str]] = field(default_factory=dict)  # what an operator should read (another agent...)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


class SyncAgent:
    def __init__(
        self,
        settings: Settings,
        db: sqlite_utils.Database,
        client: DifyClient,
        *,
        embedder_factory: Callable[[], tuple[Embedder, str]] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        alert_http: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.client = client
        self.clock = clock
        self.rng = rng or random.Random()
        self.state = SyncState(db, clock=clock)
        self.knowledge = KnowledgeStore(db, clock=clock)
        self.parameters = CentralParameters(db, clock=clock)
        self.outbox = Outbox(db, clock=clock)
        self.stopped: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}  # of the last run of each stream
        self.failures = 0  # consecutive passes that could not reach central
        self._embedder_factory = embedder_factory or (lambda: load_embedder(settings))
        self._embedder: tuple[Embedder, str] | None = None
        self.pusher = (
            Pusher(
                db,
                sink,
                PushPolicy(
                    store_id=settings.store_id,
                    kiosk_id=settings.kiosk_id,
                    idle_s=settings.sync_idle_s,
                    max_attempts=settings.sync_max_attempts,
                    backoff_max_s=settings.sync_backoff_max_s,
                    settle_s=settings.sync_settle_s,
                    # a record stays this agent's for longer than one call to central and one wait between
                    # look-ups take (renewed meanwhile); an agent that dies frees it as soon
                    lease_s=3 * settings.sync_timeout_s + 10.0,
                    handoff_hold_s=settings.handoff_hold_s,
                ),
                clock=clock,
                rng=self.rng,
            )
            if (sink := record_sink(settings, client)) is not None
            else None
        )
        # Staff alerts go to the store's webhook, not to central: they never wait for central's probe.
        # The pusher's name on their leases, so its "another agent is working" notes leave them out.
        self.alerts = AlertSender(
            db,
            settings,
            alert_http or httpx.Client(follow_redirects=False),
            clock,
            self.rng,
            holder=self.pusher.holder if self.pusher else None,
        )

    def embedder(self) -> tuple[Embedder, str]:
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    def probe(self) -> bool:
        try:
            info = self.client.probe(self.settings.sync_probe_timeout_s)
        except SyncError as exc:
            self.state.record(CENTRAL, "offline", success=False, error=str(exc))
            return False
        self.state.record(CENTRAL, "online", success=True, details={"server_version": info.get("server_version")})
        return True

    def _streams(self) -> dict[str, Callable[[], Any] | None]:
        app_key = _secret(self.settings.central_app_key)
        dataset_key = _secret(self.settings.central_dataset_key)

        def knowledge() -> Any:
            embedder, space = self.embedder()
            transcripts = self.settings.central_transcripts_dataset_id
            return pull_knowledge(
                self.client,
                dataset_key,
                self.settings.central_dataset_ids,
                self.knowledge,
                embedder,
                space,
                exclude=frozenset({transcripts} if transcripts else ()),
            )

        def annotations() -> Any:
            embedder, space = self.embedder()
            return pull_annotations(self.client, app_key, self.knowledge, embedder, space)

        return {
            "parameters": (lambda: pull_parameters(self.client, app_key, self.parameters)) if app_key else None,
            "annotations": annotations if app_key else None,
            "knowledge": knowledge if dataset_key else None,
            "push": self.pusher.run if self.pusher else None,
        }

    def run_once(self) -> PassResult:
        """One pass: probe, then every configured stream that is not stopped."""
        if not self.probe():
            self.failures += 1
            return PassResult(False, {})
        outcomes: dict[str, str] = {}
        self.notes = {}
        for name, step in self._streams().items():
            if step is None:
                outcomes[name] = "off"
                continue
            if name in self.stopped:
                outcomes[name] = "stopped"
                continue
            outcomes[name] = self._run_stream(name, step)
            if outcomes[name] == "unreachable":
                self.failures += 1
                self.state.record(CENTRAL, "offline", success=False, error=f"{name}: central stopped answering")
                return PassResult(False, outcomes, dict(self.notes))
        self.failures = 0
        return PassResult(True, outcomes, dict(self.notes))

    def run_stream(self, name: str) -> str:
        """Run one configured stream now (benchmarks, operators); returns its outcome."""
        step = self._streams()[name]
        return "off" if step is None else self._run_stream(name, step)

    def _run_stream(self, name: str, step: Callable[[], Any]) -> str:
        try:
            report = step()
        except AuthFailed as exc:
            self.stopped[name] = str(exc)
            self.state.record(name, "stopped", success=False, error=f"{exc} -- fix the key and restart the agent")
            log.error("sync stream stopped", extra={"stream": name, "error": str(exc)})
            return "stopped"
        except Unreachable as exc:
            self.state.record(name, "failed", success=False, error=str(exc))
            return "unreachable"
        except (Rejected, Malformed, BundleError) as exc:  # a refusal, a body off the spec, no embedder: say so, go on
            self.state.record(name, "failed", success=False, error=str(exc))
            log.error("sync stream failed", extra={"stream": name, "error": str(exc)})
            return "failed"
        details = asdict(report) if hasattr(report, "__dataclass_fields__") else {}
        errors = details.get("errors") or []
        self.state.record(name, "ok", success=True, error="; ".join(errors[:3]) or None, details=details)
        if details.get("notes"):
            self.notes[name] = details["notes"]
            for note in details["notes"]:
                log.warning("sync stream note", extra={"stream": name, "note": note})
        return "busy" if details.get("busy_rows") else "ok"

    def next_wait_s(self, result: PassResult) -> float:
        if result.online:
            return self.settings.sync_interval_s
        return max(1.0, backoff(self.failures, 2.0, self.settings.sync_backoff_max_s, self.rng))

    def send_alerts(self) -> AlertReport:
        """Send the due staff alerts now (`edge sync once`, the alert loop); a bug is logged, not raised."""
        try:
            return self.alerts.run_once()
        except Exception:
            log.exception("staff alerts failed")
            return AlertReport(errors=["staff alerts failed: see the log"])

    def run_alerts(self, stop: threading.Event, every_s: float = 1.0) -> None:
        """The alert loop beside the passes: a new hand-off's alert goes out within a second or two,
        whatever the sync interval, central's state, or a pass that takes minutes."""
        while not stop.is_set():
            try:
                due = self.alerts.due()
            except Exception:
                log.exception("staff alerts failed")
                due = False
            if due:
                self.send_alerts()
            stop.wait(every_s)

    def run_forever(self, stop: threading.Event) -> None:
        alerts = threading.Thread(target=self.run_alerts, args=(stop,), name="staff-alerts", daemon=True)
        alerts.start()
        try:
            self._passes(stop)
        finally:
            stop.set()
            alerts.join(timeout=self.alerts.lease_s)

    def _passes(self, stop: threading.Event) -> None:
        # Retention runs here, online or not (old pushed conversations age out during an outage too), at
        # most hourly; it logs its own failures.
        retention = Retention(self.db, self.settings.retention_days, clock=self.clock)
        while not stop.is_set():
            try:
                result = self.run_once()
            except Exception:  # a bug must not end the agent: log it, wait, try again
                log.exception("sync pass failed")
                result = PassResult(False, {})
                self.failures += 1
            retention.run_if_due(stop)
            stop.wait(self.next_wait_s(result))

    def status(self) -> dict[str, Any]:
        """What `edge sync status` prints: state per stream, outbox depth, parked rows and their reasons."""
        parked = self.outbox.parked()
        return {
            "central_url": self.settings.central_url,
            "streams": {row["stream"]: row for row in self.state.all()},
            "outbox_pending": self.outbox.depth(),
            "outbox_parked": len(parked),
            "pushing_now": self.outbox.leases(),  # which agent holds which rows (another one may be working)
            "alerts": self.alerts.counts(),  # staff alerts: pending, parked, sent, skipped
            "parked": [
                {
                    "id": row["id"],
                    "kind": row["kind"],
                    "ref": row["ref"],
                    "attempts": row["attempts"],
                    "reason": row["last_error"],
                }
                for row in parked[:50]
            ],
        }


def record_sink(settings: Settings, client: DifyClient) -> RecordSink | None:
    """Where conversations go: the ingest workflow app, else a transcripts knowledge base, else nowhere."""
    ingest = _secret(settings.central_ingest_key)
    if ingest:
        return WorkflowSink(client, ingest)
    dataset_key = _secret(settings.central_dataset_key)
    if dataset_key and settings.central_transcripts_dataset_id:
        return DocumentSink(client, dataset_key, settings.central_transcripts_dataset_id)
    return None


def load_embedder(settings: Settings) -> tuple[Embedder, str]:
    """The bundle's embedder: the agent's vectors must be the ones the server searches with."""
    bundle = load_bundle(settings.bundle_dir, verify=settings.verify_bundle)
    component = bundle.component("embedder")
    return Embedder.from_component(component, threads=settings.embedder_threads), embedder_id(component)
