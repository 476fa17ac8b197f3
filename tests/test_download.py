"""Downloads against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import http.server
import io
import threading
import time
import zipfile
from pathlib import Path

import pytest

from cellmorph.datasets import bbbc021 as b21
from cellmorph.download import download_bbbc014, download_bbbc021, fetch, safe_extract
from cellmorph.errors import CellmorphError

PLATE = "Week1_22123"


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files and honours ``Range: bytes=N-`` (the stdlib handler ignores it)."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        start = int(rng.split("=")[1].split("-")[0])
        data = path.read_bytes()
        if start >= len(data):
            self.send_error(416)
            return None
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        return io.BytesIO(data[start:])


@pytest.fixture()
def server(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()

    def handler(*a, **kw):
        return RangeHandler(*a, directory=str(served), **kw)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def _plate_zip(path: Path, plate: str) -> int:
    meta = b21.read_image_metadata()
    rows = meta[meta["Image_Metadata_Plate_DAPI"] == plate]
    with zipfile.ZipFile(path, "w") as zf:
        for _, r in rows.iterrows():
            for ch in b21.CHANNELS:
                zf.writestr(f"{plate}/{r[f'Image_FileName_{ch}']}", b"tif")
    return len(rows)


def test_resumed_download_equals_the_file(server, tmp_path: Path) -> None:
    served, url = server
    payload = bytes(range(256)) * 1000
    (served / "big.bin").write_bytes(payload)
    dest = tmp_path / "out" / "big.bin"
    dest.parent.mkdir()
    dest.with_name("big.bin.part").write_bytes(payload[:1000])  # an interrupted earlier run
    fetch(url + "big.bin", dest, progress=False)
    assert dest.read_bytes() == payload
    assert not dest.with_name("big.bin.part").exists()


def test_download_bbbc021_plate(server, tmp_path: Path) -> None:
    served, url = server
    meta = b21.read_image_metadata()
    meta.to_csv(served / "BBBC021_v1_image.csv", index=False)
    b21.read_moa_metadata().to_csv(served / "BBBC021_v1_moa.csv", index=False)
    n = _plate_zip(served / f"BBBC021_v1_images_{PLATE}.zip", PLATE)
    root = tmp_path / "root"
    download_bbbc021(root, [PLATE], base_url=url, progress=False)
    assert len(list((root / "Week1" / PLATE).glob("*.tif"))) == 3 * n
    assert not list(root.glob("*.zip"))  # unpacked and removed
    df = b21.index_bbbc021(root, image_csv=root / "BBBC021_v1_image.csv")
    assert set(df["Metadata_Plate"]) == {PLATE} and len(df) == n


def test_zip_with_parent_entry_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("../escape.txt", b"evil")
    dest = tmp_path / "dest"
    with pytest.raises(CellmorphError, match=r"'\.\./escape\.txt' would be written outside"):
        safe_extract(bad, dest)
    assert not (tmp_path / "escape.txt").exists()
    assert not (dest / "ok.txt").exists()  # nothing is extracted from a refused archive


def test_http_error_is_clear(server, tmp_path: Path) -> None:
    _, url = server
    with pytest.raises(CellmorphError, match="HTTP 404"):
        fetch(url + "nope.zip", tmp_path / "nope.zip", progress=False)


class DripHandler(http.server.BaseHTTPRequestHandler):
    """A server that sends a large file one byte at a time, slowly (never idle long enough to
    trip a socket timeout)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_a_dripping_server_meets_the_deadline(tmp_path: Path) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DripHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/slow.zip"
        start = time.monotonic()
        with pytest.raises(CellmorphError, match="did not finish within its deadline of 1 s"):
            fetch(url, tmp_path / "slow.zip", progress=False, timeout=5, deadline=1)
        assert time.monotonic() - start < 10
        assert (tmp_path / "slow.zip.part").is_file()  # kept, to resume
        assert not (tmp_path / "slow.zip").exists()
    finally:
        httpd.shutdown()


def test_a_wrong_file_under_the_expected_name_is_deleted(server, tmp_path: Path) -> None:
    served, url = server
    (served / "BBBC021_v1_image.csv").write_text("<html>Not found</html>\n")
    root = tmp_path / "root"
    with pytest.raises(CellmorphError, match=r"BBBC021_v1_image\.csv is not the BBBC021 image "
                                             r"table.*it was deleted"):
        download_bbbc021(root, [PLATE], base_url=url, progress=False)
    assert not (root / "BBBC021_v1_image.csv").exists()


def test_download_bbbc014(server, tmp_path: Path) -> None:
    served, url = server
    lines = ["TNF-\xb5 concentration"] + [f"1x10^-{7 + c % 12 * 0.5}" for c in range(96)]
    (served / "BBBC014_v1_platemap_all.txt").write_bytes("\n".join(lines).encode("latin-1"))
    sample = Path(__file__).parent / "data" / "bbbc014"
    with zipfile.ZipFile(served / "BBBC014_v1_images.zip", "w") as zf:
        for f in sample.glob("*.tif"):
            zf.write(f, f"BBBC014_v1_images/{f.name}")  # a top folder, as zips often have
    folder = download_bbbc014(tmp_path / "root", base_url=url, progress=False)
    assert folder == tmp_path / "root" / "BBBC014_v1_images"
    assert len(list(folder.glob("Channel *.tif"))) == 4
    assert not (tmp_path / "root" / "BBBC014_v1_images.zip").exists()
    assert (tmp_path / "root" / "BBBC014_v1_platemap_all.txt").is_file()


def test_a_failed_first_download_leaves_no_folder_and_claims_no_partial_file(
        tmp_path: Path) -> None:
    from cellmorph.download import download_bbbc014

    root = tmp_path / "new"
    with pytest.raises(CellmorphError) as info:
        download_bbbc014(root, base_url="http://127.0.0.1:1/", progress=False)
    assert "partial file" not in str(info.value)  # nothing was downloaded
    assert not root.exists()
