"""download: resumable, verified, safe — against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from multimix.data.download import download, fetch, safe_extract
from multimix.errors import InputError


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files`, honours Range, and can drop a transfer half-way."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if srv.drops > 0:  # announce everything, send half, hang up
            srv.drops -= 1
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(chunk)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.drops = {}, [], 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry(tmp_path: Path, server, archives: dict[str, list[dict]], manual: dict | None = None) -> str:
    doc = {}
    for dataset, items in archives.items():
        doc[dataset] = {"archives": [dict(item, url=server.url + item["url"]) for item in items]}
    for dataset, items in (manual or {}).items():
        doc.setdefault(dataset, {})["manual"] = items
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


BIG = bytes(range(256)) * 4096  # 1 MiB, several chunks


def test_resume_after_interruption_within_a_run(tmp_path, server):
    server.files["/big.bin"] = BIG
    server.drops = 1
    digest = fetch(server.url + "/big.bin", tmp_path / "big.bin", sha(BIG), show_progress=False, backoff=0)
    assert (tmp_path / "big.bin").read_bytes() == BIG and digest == sha(BIG)
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(BIG) // 2  # continued where the dropped transfer stopped
    assert not (tmp_path / "big.bin.part").exists()


def test_resume_after_interruption_across_runs(tmp_path, server):
    server.files["/big.bin"] = BIG
    server.drops = 1
    with pytest.raises(InputError, match="run the command again to resume"):
        fetch(server.url + "/big.bin", tmp_path / "big.bin", sha(BIG), retries=1, show_progress=False)
    kept = (tmp_path / "big.bin.part").stat().st_size
    assert 0 < kept <= len(BIG) // 2
    fetch(server.url + "/big.bin", tmp_path / "big.bin", sha(BIG), show_progress=False)
    assert (tmp_path / "big.bin").read_bytes() == BIG
    assert server.requests[-1][1] == f"bytes={kept}-"


def test_checksum_mismatch_is_refused(tmp_path, server):
    server.files["/big.bin"] = BIG[:-1] + b"X"  # a corrupted copy
    with pytest.raises(InputError, match=r"big.bin: checksum mismatch \(sha256 [0-9a-f]{64}, expected " + sha(BIG)):
        fetch(server.url + "/big.bin", tmp_path / "big.bin", sha(BIG), show_progress=False)
    assert not (tmp_path / "big.bin").exists() and not (tmp_path / "big.bin.part").exists()


def test_http_error_names_the_url(tmp_path, server):
    with pytest.raises(InputError, match="HTTP 404"):
        fetch(server.url + "/missing.zip", tmp_path / "missing.zip", None, show_progress=False)


def test_download_extracts_and_is_idempotent(tmp_path, server):
    archive = zip_bytes({"chest_xray/train/NORMAL/IM-0001-0001.jpeg": b"jpeg", "__MACOSX/._x": b""})
    server.files["/kermany.zip"] = archive
    reg = registry(tmp_path, server, {"chex": [{"name": "ChestXRay2017.zip", "url": "/kermany.zip",
                                                 "sha256": sha(archive), "extract": "zip"}]})
    raw = tmp_path / "raw"
    first = download(raw, ["chex"], registry=reg, show_progress=False, log=lambda *_: None)
    assert first["downloaded"] == ["ChestXRay2017.zip"]
    assert (raw / "chex/chest_xray/train/NORMAL/IM-0001-0001.jpeg").read_bytes() == b"jpeg"
    n_requests = len(server.requests)
    second = download(raw, ["chex"], registry=reg, show_progress=False, log=lambda *_: None)
    assert second == {"downloaded": [], "skipped": ["ChestXRay2017.zip"], "manual_missing": []}
    assert len(server.requests) == n_requests  # nothing fetched again


def test_unpinned_archive_needs_consent_then_is_pinned(tmp_path, server):
    archive = tar_bytes({"images/00000001_000.png": b"png"})
    server.files["/nih1.gz"] = archive
    reg = registry(tmp_path, server, {"nihx": [{"name": "images_001.tar.gz", "url": "/nih1.gz",
                                                 "sha256": None, "extract": "tar"}]})
    raw = tmp_path / "raw"
    with pytest.raises(InputError, match="no checksum is pinned .* --allow-unpinned"):
        download(raw, ["nihx"], registry=reg, show_progress=False)
    assert server.requests == []  # refused before any transfer
    download(raw, ["nihx"], registry=reg, allow_unpinned=True, show_progress=False, log=lambda *_: None)
    assert (raw / "nihx/images/00000001_000.png").read_bytes() == b"png"
    pins = (raw / ".downloads/pins.json").read_text()
    assert sha(archive) in pins
    # The recorded pin is enforced from now on: a changed archive is refused.
    (raw / ".downloads/images_001.tar.gz").write_bytes(b"tampered")
    (raw / ".downloads/images_001.tar.gz.extracted").unlink()
    with pytest.raises(InputError, match="checksum mismatch"):
        download(raw, ["nihx"], registry=reg, show_progress=False)


def test_path_escaping_zip_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({"chest_xray/ok.jpeg": b"ok", "../../escaped.txt": b"pwned"}))
    target = tmp_path / "deep" / "target"
    with pytest.raises(InputError, match=r"member '../../escaped.txt' would be written outside"):
        safe_extract(archive, target, "zip")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (target / "chest_xray" / "ok.jpeg").exists()  # nothing extracted at all


def test_absolute_tar_member_and_outward_symlink_are_refused(tmp_path):
    absolute = tmp_path / "abs.tar.gz"
    absolute.write_bytes(tar_bytes({"/tmp/multimix-escape.txt": b"x"}))
    with pytest.raises(InputError, match="would be written outside"):
        safe_extract(absolute, tmp_path / "t1", "tar")
    link = tmp_path / "link.tar.gz"
    link.write_bytes(tar_bytes({"images/a.png": b"a"}, links={"images/evil": "../../../etc/passwd"}))
    with pytest.raises(InputError, match="would be written outside"):
        safe_extract(link, tmp_path / "t2", "tar")
    assert not (tmp_path / "t2" / "images" / "a.png").exists()


def test_corrupt_archive_is_reported(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(zip_bytes({"a": b"a" * 1000})[:50])
    with pytest.raises(InputError, match="corrupt or unreadable zip archive"):
        safe_extract(archive, tmp_path / "t", "zip")


def test_manual_sources_say_what_to_place_where(tmp_path, server):
    reg = registry(tmp_path, server, {}, manual={"jsrt": [{
        "name": "All247images", "place": "All247images/JPCLN001.IMG", "sha256": None,
        "instructions": "register and place data/raw/jsrt/All247images/JPCLN001.IMG"}]})
    report = download(tmp_path / "raw", ["jsrt"], registry=reg, show_progress=False)
    assert report["manual_missing"] == ["jsrt: register and place data/raw/jsrt/All247images/JPCLN001.IMG"]


def test_packaged_registry_covers_every_source():
    from multimix.data.download import load_registry

    archives, manual = load_registry()
    assert {a.dataset for a in archives} == {"chex", "mcu", "nihx", "shenzhen"}
    assert len([a for a in archives if a.dataset == "nihx"]) == 12
    # JSRT + SCR and the Shenzhen lung masks need a login; NIH's label file has no direct link
    assert {m.dataset for m in manual} == {"jsrt", "nihx", "shenzhen"}
    assert next(m for m in manual if m.dataset == "shenzhen").place == "mask"
    nih_labels = next(m for m in manual if m.name == "Data_Entry_2017_v2020.csv")
    assert nih_labels.sha256 and len(nih_labels.sha256) == 64


def test_packaged_label_checksum_matches_the_real_file(shared_nih):
    import gzip

    from multimix.data.download import load_registry

    _, manual = load_registry()
    pinned = next(m for m in manual if m.name == "Data_Entry_2017_v2020.csv").sha256
    with gzip.open(shared_nih / "Data_Entry_2017_v2020.csv.gz", "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == pinned
