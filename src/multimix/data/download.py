"""`multimix download`: fetch the public archives, safely.

- resumable: bytes go to `<name>.part`; an interrupted transfer (dropped
  connection, killed process) continues with an HTTP Range request;
- verified: the finished file must match the sha256 pinned in `sources.yaml`
  (or, for archives not yet pinned there, the value recorded on the first
  `--allow-unpinned` download); a mismatch deletes the file and fails loudly;
- safe extraction: every member path is checked before anything is written,
  and members that would land outside the target (absolute paths, `..`,
  links pointing out) refuse the whole archive;
- idempotent: a verified, extracted archive is remembered in
  `data/raw/.downloads/`; a second run downloads and extracts nothing.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tarfile
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

import requests
import yaml
from tqdm import tqdm

from multimix.errors import InputError

CHUNK = 1 << 20
# Network reads are small: on a dropped connection the bytes of the read in
# flight are lost, so a small read keeps nearly everything for the resume.
NET_CHUNK = 1 << 16
STATE_DIR = ".downloads"


@dataclass(frozen=True)
class Archive:
    dataset: str
    name: str
    url: str
    sha256: str | None
    extract: str  # zip | tar | none


@dataclass(frozen=True)
class ManualItem:
    dataset: str
    name: str
    place: str
    instructions: str
    sha256: str | None


def load_registry(path: str | Path | None = None) -> tuple[list[Archive], list[ManualItem]]:
    if path is None:
        text = resources.files("multimix.data").joinpath("sources.yaml").read_text()
        where = "multimix/data/sources.yaml"
    else:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: download registry not found")
        text, where = path.read_text(), str(path)
    raw = yaml.safe_load(text) or {}
    archives, manual = [], []
    for dataset, entry in raw.items():
        for a in entry.get("archives", []) or []:
            if not {"name", "url", "extract"} <= set(a):
                raise InputError(f"{where}: archive entry of {dataset} needs name, url and extract; got {sorted(a)}")
            archives.append(Archive(dataset, a["name"], a["url"], a.get("sha256"), a["extract"]))
        for m in entry.get("manual", []) or []:
            manual.append(ManualItem(dataset, m["name"], m["place"], " ".join(m["instructions"].split()), m.get("sha256")))
    return archives, manual


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class TransferError(Exception):
    """A transfer stopped early; the `.part` file is kept for resuming."""


def _transfer(session: requests.Session, url: str, part: Path, show_progress: bool, label: str) -> None:
    """Append the rest of `url` to `part`, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, stream=True, headers=headers, timeout=(15, 60)) as response:
            if response.status_code == 416 and offset:
                return  # the server says there is nothing after `offset`: complete
            if response.status_code == 200 and offset:
                offset = 0  # server ignored the range: start over
            elif response.status_code not in (200, 206):
                raise InputError(f"{url}: HTTP {response.status_code} {response.reason} (expected the file {part.stem})")
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length else None
            mode = "ab" if offset else "wb"
            with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                              desc=label, disable=not show_progress, leave=False) as bar:
                for block in response.iter_content(NET_CHUNK):
                    fh.write(block)
                    bar.update(len(block))
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransferError(f"{label}: transfer interrupted ({exc.__class__.__name__})") from None
    if total is not None and part.stat().st_size < total:
        raise TransferError(f"{label}: transfer ended at {part.stat().st_size} of {total} bytes")


def fetch(url: str, dest: Path, sha256: str | None, *, retries: int = 5, session: requests.Session | None = None,
          show_progress: bool = True, backoff: float = 1.0) -> str:
    """Download `url` to `dest` (resuming `dest.part`), verify it, return its sha256."""
    part = dest.with_name(dest.name + ".part")
    session = session or requests.Session()
    for attempt in range(1, retries + 1):
        try:
            _transfer(session, url, part, show_progress, dest.name)
            break
        except TransferError as exc:
            if attempt == retries:
                raise InputError(f"{exc}; {part.stat().st_size if part.exists() else 0} bytes kept in {part}, "
                                 "run the command again to resume") from None
            time.sleep(backoff * attempt)
    actual = sha256_of(part)
    if sha256 and actual != sha256:
        part.unlink()
        raise InputError(f"{dest.name}: checksum mismatch (sha256 {actual}, expected {sha256}); "
                         "the corrupt file was deleted, run again to re-download")
    part.replace(dest)
    return actual


# ------------------------------------------------------------------ extraction
def _check_member(archive: Path, name: str, target: Path) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    resolved = (target / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or not resolved.is_relative_to(target.resolve()):
        raise InputError(f"{archive}: member {name!r} would be written outside {target}; refusing to extract this archive")


def safe_extract(archive: Path, target: Path, kind: str) -> int:
    """Extract after checking every member; returns the number of files written."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for info in members:
                    _check_member(archive, info.filename, target)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise InputError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract this archive")
                zf.extractall(target)
                return sum(not m.is_dir() for m in members)
        if kind == "tar":
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(archive, m.name, target)
                    if m.issym() or m.islnk():
                        _check_member(archive, str(PurePosixPath(m.name).parent / m.linkname), target)
                    if m.isdev():
                        raise InputError(f"{archive}: member {m.name!r} is a device file; refusing to extract this archive")
                # The "data" filter re-checks all of the above inside tarfile itself.
                tf.extractall(target, filter="data")
                return sum(m.isfile() for m in members)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{archive}: corrupt or unreadable {kind} archive ({exc})") from None
    raise InputError(f"{archive}: unknown archive kind {kind!r} (expected zip or tar)")


# ------------------------------------------------------------------ driver
class DownloadState:
    """Pins recorded on first unpinned download, and which archives are unpacked."""

    def __init__(self, raw_dir: Path):
        self.dir = raw_dir / STATE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pins_path = self.dir / "pins.json"
        self.pins = json.loads(self.pins_path.read_text()) if self.pins_path.exists() else {}

    def record_pin(self, name: str, digest: str) -> None:
        self.pins[name] = digest
        self.pins_path.write_text(json.dumps(self.pins, indent=2, sort_keys=True) + "\n")

    def extracted_marker(self, name: str) -> Path:
        return self.dir / f"{name}.extracted"


def download(raw_dir: Path, datasets: list[str], *, allow_unpinned: bool = False, registry: str | None = None,
             show_progress: bool = True, session: requests.Session | None = None, log=print) -> dict:
    """Fetch, verify and unpack every archive of `datasets`; report manual items.

    Returns {"downloaded": [...], "skipped": [...], "manual_missing": [...]}."""
    archives, manual = load_registry(registry)
    state = DownloadState(raw_dir)
    report = {"downloaded": [], "skipped": [], "manual_missing": []}
    for arc in [a for a in archives if a.dataset in datasets]:
        dest = state.dir / arc.name
        marker = state.extracted_marker(arc.name)
        pinned = arc.sha256 or state.pins.get(arc.name)
        if marker.exists() and dest.exists() and marker.read_text().strip() == (pinned or ""):
            report["skipped"].append(arc.name)
            continue
        if not pinned and not allow_unpinned:
            raise InputError(
                f"{arc.name}: no checksum is pinned for {arc.url}; rerun with --allow-unpinned to trust the first "
                "download (its sha256 is then recorded and enforced), or pin it in multimix/data/sources.yaml"
            )
        if not dest.exists():
            digest = fetch(arc.url, dest, pinned, session=session, show_progress=show_progress)
            report["downloaded"].append(arc.name)
        else:  # downloaded before but not unpacked: hash it once, check it against the pin
            digest = sha256_of(dest)
            if pinned and digest != pinned:
                dest.unlink()
                raise InputError(f"{dest}: checksum mismatch against the pinned sha256; the file was deleted, run again")
        if not pinned:
            state.record_pin(arc.name, digest)
            log(f"{arc.name}: no pinned checksum; recorded sha256 {digest} in {state.pins_path}")
        if arc.extract != "none":
            count = safe_extract(dest, raw_dir / arc.dataset, arc.extract)
            log(f"{arc.name}: {count} files unpacked into {raw_dir / arc.dataset}")
        marker.write_text(digest + "\n")
    for item in [m for m in manual if m.dataset in datasets]:
        placed = raw_dir / item.dataset / item.place
        if not placed.exists():
            report["manual_missing"].append(f"{item.dataset}: {item.instructions}")
        elif item.sha256 and placed.is_file() and sha256_of(placed) != item.sha256:
            raise InputError(f"{placed}: sha256 differs from the official {item.name} ({item.sha256}); replace the file")
    return report
