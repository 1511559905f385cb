"""The `edge` command line of the store box (the server arrives with `edge serve`)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from edge.bundle import BundleError, load_bundle
from edge.settings import Settings, describe_errors

if TYPE_CHECKING:
    import sqlite_utils

    from edge.sync.agent import SyncAgent


def _settings(**overrides: object) -> Settings:
    """Settings from KIOSK_* env vars, the optional --env-file, then command-line overrides."""
    context = click.get_current_context(silent=True)
    env_file = context.find_root().params.get("env_file") if context else None
    try:
        return Settings(_env_file=env_file, **{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        click.echo(f"error: {describe_errors(exc)}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A file of KIOSK_*=value lines (environment variables win over it).",
)
def main(env_file: Path | None) -> None:
    """kiosk-edge runtime: the store box's assistant. Settings come from KIOSK_* env vars."""


@main.command()
def config() -> None:
    """Print the effective settings as JSON (secrets redacted); warn on stderr about store variables the
    bundled answers use and the settings lack (those answers hand off instead)."""
    settings = _settings()
    click.echo(settings.model_dump_json(indent=2))
    for slot, languages in _missing_variables(settings).items():
        click.echo(f"warning: answers use {{{{{slot}}}}}, which has no value for: {', '.join(languages)}", err=True)


def _missing_variables(settings: Settings) -> dict[str, list[str]]:
    from edge.assistant.bank import missing_variables
    from edge.store.answers import bank_of, read_answers_csv
    from edge.store.errors import InvalidParam

    if not settings.curated_answers_csv.is_file():
        return {}
    try:
        return missing_variables(bank_of(read_answers_csv(settings.curated_answers_csv)), settings.store_variables)
    except InvalidParam as exc:
        click.echo(f"warning: {exc.message}", err=True)
        return {}


@main.command()
@click.option("--host", default=None, help="Listen address [default: KIOSK_HOST or 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: KIOSK_PORT or 8080].")
def serve(host: str | None, port: int | None) -> None:
    """Run the assistant server (Dify and OpenAI APIs) on the configured bundle."""
    import uvicorn

    from edge.app import create_app
    from edge.logs import configure_logging
    from edge.server import DrainingServer

    settings = _settings(host=host, port=port)
    if not settings.app_keys:
        click.echo("error: no app keys configured: set KIOSK_APP_KEYS='[\"<a secret of 12+ characters>\"]'", err=True)
        sys.exit(1)
    if settings.database_path.exists():  # migrated before uvicorn starts: a refusal is one line, not a traceback
        _open_database(settings).close()
    try:
        bundle = load_bundle(settings.bundle_dir, verify=settings.verify_bundle)
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    configure_logging()
    # uvicorn drains, then re-raises the signal it handled; a drained, clean stop is exit 0 for k3s and
    # systemd. Its own handlers replace this one while it runs, so SIGTERM still starts the drain.
    signal.signal(signal.SIGTERM, lambda *_: None)
    app = create_app(settings, bundle)
    # proxy_headers off: uvicorn would believe X-Forwarded-* from 127.0.0.1 by default; the app believes
    # them from KIOSK_TRUSTED_PROXIES only (edge/api/hosts.py).
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        proxy_headers=False,
    )
    DrainingServer(config, on_drain=lambda: app.state.begin_drain()).run()  # see edge/server.py


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
def verify(bundle: Path | None) -> None:
    """Check every file of BUNDLE against its manifest (sha256 and size) [default: KIOSK_BUNDLE_DIR]."""
    path = bundle or _settings().bundle_dir
    try:
        loaded = load_bundle(path)
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    for name, component in loaded.components.items():
        files = component.fragment.get("files", {})
        size = sum(entry["size"] for entry in files.values())
        click.echo(f"ok  {name:<9} {len(files)} files, {size / 1e6:.1f} MB")
    click.echo(f"bundle {path} verified")


@main.command("staff-pin")
def staff_pin() -> None:
    """Make the digest of the store's staff PIN for KIOSK_STAFF_PIN_DIGEST (the PIN itself is never stored).

    Asks for the PIN twice on a terminal; reads one line from stdin otherwise (`echo "$PIN" | edge
    staff-pin`). At least 6 characters: a PBKDF2 digest and the sign-in limit slow guessing, a longer PIN
    stops it. Prints the digest, then the setting to put on the box (a new digest signs every staff page out).
    """
    import getpass

    from edge.pin import MIN_PIN_LENGTH, hash_pin

    if sys.stdin.isatty():
        pin = getpass.getpass("Staff PIN: ")
        if len(pin) >= MIN_PIN_LENGTH and getpass.getpass("Again: ") != pin:
            click.echo("error: the two PINs differ", err=True)
            sys.exit(2)
    else:
        pin = sys.stdin.readline().rstrip("\r\n")
    if len(pin) < MIN_PIN_LENGTH:
        click.echo(f"error: a staff PIN needs at least {MIN_PIN_LENGTH} characters", err=True)
        sys.exit(2)
    digest = hash_pin(pin)
    click.echo(digest)
    click.echo(f"set on the box: KIOSK_STAFF_PIN_DIGEST={digest}  (in a shell, in single quotes)", err=True)


@main.command()
@click.argument("texts", nargs=-1, required=True)
@click.option(
    "--bundle", type=click.Path(path_type=Path), default=None, help="Bundle directory [default: KIOSK_BUNDLE_DIR]."
)
def classify(texts: tuple[str, ...], bundle: Path | None) -> None:
    """Classify TEXTS with the bundle's intent model and print one JSON line each."""
    from edge.inference.loader import load_models

    settings = _settings(bundle_dir=bundle)
    try:
        loaded = load_bundle(settings.bundle_dir, verify=settings.verify_bundle)
        classifier = load_models(
            loaded, intent_threads=settings.intent_threads, workers=settings.intent_workers
        ).classifier
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    try:
        for text, prediction in zip(texts, classifier.predict(list(texts)), strict=True):
            click.echo(
                json.dumps(
                    {
                        "text": text,
                        "label": prediction.label,
                        "confidence": round(prediction.confidence, 4),
                        "out_of_scope": prediction.out_of_scope,
                        "top_k": [[label, round(p, 4)] for label, p in prediction.top_k],
                    },
                    ensure_ascii=False,
                )
            )
    finally:
        classifier.close()


@main.group(invoke_without_command=True)
@click.pass_context
def sync(context: click.Context) -> None:
    """Reconcile the box with central Dify: run the sync agent (the default), one pass, show status, or
    re-queue parked rows.

    The agent is a separate process beside `edge serve`, sharing its SQLite database. It needs
    KIOSK_CENTRAL_URL and the keys of the streams to run (KIOSK_CENTRAL_APP_KEY: parameters and
    annotations; KIOSK_CENTRAL_DATASET_KEY: knowledge; KIOSK_CENTRAL_INGEST_KEY: pushing conversations).
    """
    if context.invoked_subcommand is None:
        context.invoke(sync_run)


def _open_database(settings: Settings) -> sqlite_utils.Database:
    """The box's database, migrated; one clear line and exit 1 when a newer release's schema is on it."""
    from edge.store.db import open_database
    from edge.store.migrations import SchemaTooNew

    try:
        return open_database(settings.database_path)
    except SchemaTooNew as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _agent() -> SyncAgent:
    """Imported lazily: `edge --help` must not load httpx and the models."""
    from edge.sync.agent import SyncAgent
    from edge.sync.client import DifyClient

    settings = _settings()
    if not settings.central_url:
        click.echo("error: KIOSK_CENTRAL_URL is not set: there is no central Dify to sync with", err=True)
        sys.exit(1)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = _open_database(settings)
    return SyncAgent(settings, db, DifyClient(settings.central_url, timeout_s=settings.sync_timeout_s))


@sync.command("run")
def sync_run() -> None:
    """Run the agent until SIGTERM/SIGINT: a pass every KIOSK_SYNC_INTERVAL_S, backing off while offline."""
    import signal
    import threading

    from edge.logs import configure_logging

    configure_logging()
    agent = _agent()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    agent.run_forever(stop)


@sync.command("once")
def sync_once() -> None:
    """Send the due staff alerts, run one pass, and print what each stream did (exit 2 when central is
    unreachable; the alerts go out either way)."""
    from dataclasses import asdict

    agent = _agent()
    alerts = agent.send_alerts()
    result = agent.run_once()
    click.echo(
        json.dumps(
            {"online": result.online, "streams": result.outcomes, "notes": result.notes, "alerts": asdict(alerts)},
            indent=2,
        )
    )
    for stream, notes in result.notes.items():
        for note in notes:
            click.echo(f"{stream}: {note}", err=True)
    if not result.online:
        sys.exit(2)


@sync.command("retry")
@click.option("--reason", default=None, help="Only rows whose recorded reason contains this text.")
def sync_retry(reason: str | None) -> None:
    """Re-queue parked outbox rows (all, or --reason TEXT) for the agent's next pass, attempts reset.

    Each goes back in the record it was parked with, so it is looked up on central before it is sent again.
    A staff alert is sent again only if its hand-off is still open and younger than
    KIOSK_STAFF_ALERT_MAX_AGE_S (e.g. --reason KIOSK_STAFF_WEBHOOK_URL after setting the URL).
    """
    from edge.sync.push import requeue_parked

    settings = _settings()
    if not settings.database_path.exists():
        click.echo(f"error: no database at {settings.database_path}", err=True)
        sys.exit(1)
    db = _open_database(settings)
    try:
        count = requeue_parked(db, reason=reason)
    finally:
        db.close()
    click.echo(f"{count} parked row(s) re-queued" + (f" (reason containing {reason!r})" if reason else ""))


@sync.command("status")
def sync_status() -> None:
    """Show central's state, each stream's last success and error, the outbox depth and parked rows, and
    the staff alerts pending, parked, sent and skipped."""
    click.echo(json.dumps(_agent().status(), indent=2, default=str))
