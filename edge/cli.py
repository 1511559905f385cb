"""The `edge` command line of the store box (the server arrives with `edge serve`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from edge.bundle import BundleError, load_bundle
from edge.settings import Settings


def _settings(**overrides: object) -> Settings:
    """Settings from KIOSK_* env vars, the optional --env-file, then command-line overrides."""
    context = click.get_current_context(silent=True)
    env_file = context.find_root().params.get("env_file") if context else None
    try:
        return Settings(_env_file=env_file, **{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        click.echo(f"error: invalid settings:\n{exc}", err=True)
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
    """Print the effective settings as JSON (secrets redacted)."""
    click.echo(_settings().model_dump_json(indent=2))


@main.command()
@click.option("--host", default=None, help="Listen address [default: KIOSK_HOST or 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: KIOSK_PORT or 8080].")
def serve(host: str | None, port: int | None) -> None:
    """Run the assistant server (Dify and OpenAI APIs) on the configured bundle."""
    import uvicorn

    from edge.app import create_app
    from edge.logs import configure_logging

    settings = _settings(host=host, port=port)
    if not settings.app_keys:
        click.echo("error: no app keys configured: set KIOSK_APP_KEYS='[\"<a secret of 12+ characters>\"]'", err=True)
        sys.exit(1)
    try:
        bundle = load_bundle(settings.bundle_dir, verify=settings.verify_bundle)
    except BundleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    configure_logging()
    uvicorn.run(
        create_app(settings, bundle),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


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


@main.command()
@click.argument("texts", nargs=-1, required=True)
@click.option(
    "--bundle", type=click.Path(path_type=Path), default=None, help="Bundle directory [default: KIOSK_BUNDLE_DIR]."
)
def classify(texts: tuple[str, ...], bundle: Path | None) -> None:
    """Classify TEXTS with the bundle's intent model and print one JSON line each."""
    from edge.inference.intent import IntentClassifier

    settings = _settings(bundle_dir=bundle)
    try:
        component = load_bundle(settings.bundle_dir, verify=settings.verify_bundle).component("intent")
        classifier = IntentClassifier.from_component(
            component, threads=settings.intent_threads, workers=settings.intent_workers
        )
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
