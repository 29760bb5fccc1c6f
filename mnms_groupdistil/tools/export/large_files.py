"""``large_files.yml``: the files of an exported bundle over the model zoo's limit of 25 MB per file."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["LARGE_FILES", "MODEL_ZOO_FILE_BYTES", "large_files", "list_large_files", "write_large_files"]

logger = logging.getLogger(__name__)

#: The model zoo's limit on one file of a bundle (25 MB); a larger file is listed in ``large_files.yml``.
MODEL_ZOO_FILE_BYTES = 25 * 1000 * 1000

LARGE_FILES = "large_files.yml"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def large_files(
    bundle_dir: str | Path, download_url: str | None = None, limit_bytes: int = MODEL_ZOO_FILE_BYTES
) -> list[dict[str, str]]:
    """The ``large_files.yml`` entries of ``bundle_dir``: every file larger than ``limit_bytes``.

    Each entry holds ``path`` (relative to the bundle, ``/``-separated), ``url`` (``download_url`` + ``/`` +
    that path; empty without ``download_url``, to be filled in), ``hash_val`` (the file's sha256) and
    ``hash_type`` ``sha256``: the fields ``python -m monai.bundle download_large_files`` reads.
    """
    bundle_dir = Path(bundle_dir)
    base = (download_url or "").rstrip("/")
    entries = []
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        if path.stat().st_size > limit_bytes:
            relative = path.relative_to(bundle_dir).as_posix()
            entries.append(
                {
                    "path": relative,
                    "url": f"{base}/{relative}" if base else "",
                    "hash_val": _sha256(path),
                    "hash_type": "sha256",
                }
            )
    return entries


def write_large_files(entries: Sequence[Mapping[str, str]], path: Path) -> Path:
    """Write ``entries`` (:func:`large_files`) as the model zoo's ``large_files.yml``; every value double-quoted."""
    lines = ["large_files:"]
    for entry in entries:
        for i, (key, value) in enumerate(entry.items()):
            lines.append(f"  {'-' if i == 0 else ' '} {key}: {json.dumps(str(value))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def list_large_files(bundle_dir: Path, download_url: str | None) -> None:
    """Write ``large_files.yml`` when the bundle holds a file over the model zoo's limit, and say what to do."""
    entries = large_files(bundle_dir, download_url)
    if not entries:
        return
    write_large_files(entries, bundle_dir / LARGE_FILES)
    names = ", ".join(e["path"] for e in entries)
    todo = (
        "" if download_url else "; their download addresses are empty: fill in each url, or export with --download_url"
    )
    logger.info(
        "%s lists %s (over the model zoo's %d MB per file): upload them and leave them out of a model-zoo "
        "submission%s.",
        bundle_dir / LARGE_FILES,
        names,
        MODEL_ZOO_FILE_BYTES // 10**6,
        todo,
    )
