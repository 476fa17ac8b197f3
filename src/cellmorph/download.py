"""Fetch the official BBBC021 and BBBC014 files: resumable, verified, safely extracted.

Every download resumes a ``.part`` file left by an interrupted run, checks its size against
the server's, and has an overall deadline (a server that drips bytes never trips a socket
timeout). A file that turns out not to be what its name says (an HTML error page saved as a
zip, say) is deleted and named in the error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from cellmorph.atomic import ensure_writable_dir
from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger
from cellmorph.log import progress as progress_bar

BBBC021_BASE_URL = "https://data.broadinstitute.org/bbbc/BBBC021/"
BBBC021_METADATA = ("BBBC021_v1_image.csv", "BBBC021_v1_moa.csv", "BBBC021_v1_compound.csv")
BBBC014_BASE_URL = "https://data.broadinstitute.org/bbbc/BBBC014/"
BBBC014_IMAGES = "BBBC014_v1_images.zip"
BBBC014_PLATEMAP = "BBBC014_v1_platemap_all.txt"
DEFAULT_DEADLINE = 6 * 3600.0  # seconds for one file: BBBC021's largest zip at ~50 kB/s
_CHUNK = 1 << 20
log = get_logger(__name__)


@contextlib.contextmanager
def _new_folder(root: Path | str) -> Iterator[Path]:
    """``root``, created if need be, and removed again if a download into it fails before
    anything was kept there (no empty folder left behind)."""
    root = Path(root)
    created = not root.exists()
    folder = ensure_writable_dir(root)
    try:
        yield folder
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise


def fetch(url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0,
          deadline: float = DEFAULT_DEADLINE) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run.

    The finished file appears under its name only when complete (size checked against the
    server's Content-Length when it sends one). ``timeout`` bounds each network wait,
    ``deadline`` the whole download.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    start = time.monotonic()
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            os.replace(part, dest)
            return dest
        raise CellmorphError(f"download of {url} failed: HTTP {exc.code}; check the URL or plate "
                             "name and try again") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        kept = " (the partial file is kept and resumed)" if have else ""
        raise CellmorphError(f"download of {url} failed ({exc}); check the network and "
                             f"rerun{kept}") from exc
    try:
        with resp:
            resumed = resp.status == 206
            if not resumed:
                have = 0  # server ignored the range: start over
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            with open(part, "ab" if resumed else "wb") as fh, progress_bar(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                enabled=progress,
            ) as bar:
                while chunk := resp.read1(_CHUNK):
                    fh.write(chunk)
                    bar.update(len(chunk))
                    if time.monotonic() - start > deadline:
                        raise CellmorphError(
                            f"download of {url} did not finish within its deadline of "
                            f"{deadline:.0f} s (a slow or stalled server); rerun later to resume "
                            "(the partial file is kept)")
    except (TimeoutError, OSError) as exc:
        raise CellmorphError(f"download of {url} was interrupted ({exc}); rerun to resume "
                             "(the partial file is kept)") from exc
    if total is not None and part.stat().st_size != total:
        raise CellmorphError(f"download of {url} ended early ({part.stat().st_size} of {total} "
                             "bytes); rerun to resume")
    os.replace(part, dest)
    return dest


def fetch_checked(url: str, dest: Path, check: Callable[[Path], object], what: str,
                  **kwargs) -> Path:
    """:func:`fetch`, then ``check`` the file; a file that fails is deleted and named."""
    path = fetch(url, dest, **kwargs)
    try:
        check(path)
    except CellmorphError as exc:
        path.unlink(missing_ok=True)
        raise CellmorphError(f"{path} is not {what} ({exc}); it was deleted: check the URL "
                             "(--base-url) and rerun") from None
    return path


def safe_extract(archive: Path, dest: Path, *, strip_top: bool = False) -> list[Path]:
    """Extract a zip under ``dest``, refusing any entry that would land outside it.

    ``strip_top`` drops a single top-level folder that every entry shares.
    """
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise CellmorphError(f"{archive}: not a valid zip (deleted); rerun the download") from exc
    with zf:
        bad = zf.testzip()
        if bad is not None:
            raise CellmorphError(f"{archive}: entry {bad} fails its CRC check; delete the zip and "
                                 "rerun the download")
        names = [PurePosixPath(i.filename) for i in zf.infolist()]
        tops = {n.parts[0] for n in names if n.parts}
        strip = strip_top and len(tops) == 1 and all(len(n.parts) > 1 or i.is_dir()
                                                     for n, i in zip(names, zf.infolist(),
                                                                     strict=True))
        targets = []
        for info, name in zip(zf.infolist(), names, strict=True):
            relative = PurePosixPath(*name.parts[1:]) if strip and len(name.parts) > 1 else name
            target = (dest / relative).resolve()
            if name.is_absolute() or ".." in name.parts or not target.is_relative_to(dest):
                raise CellmorphError(f"{archive}: entry {info.filename!r} would be written outside "
                                     f"{dest}; refusing to extract this archive")
            if strip and len(name.parts) == 1:
                continue  # the top folder itself
            targets.append((info, target))
        written = []
        for info, target in targets:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, target)
            written.append(target)
    return written


def download_bbbc021(root: Path | str, plates: Sequence[str] | None = None, *,
                     base_url: str = BBBC021_BASE_URL, keep_zips: bool = False,
                     progress: bool = True, deadline: float = DEFAULT_DEADLINE) -> list[Path]:
    """Download and unpack BBBC021 plates (all 55 by default) and its metadata into ``root``.

    Images land in ``root/WeekN/WeekN_PLATE/`` as ``Image_PathName_*`` expects; a plate whose
    folder already holds its images is skipped.

    Examples
    --------
    >>> download_bbbc021("data/bbbc021", ["Week1_22123"])  # doctest: +SKIP
    [PosixPath('data/bbbc021/Week1/Week1_22123')]
    """
    with _new_folder(root) as root:
        return _download_bbbc021(root, plates, base_url=base_url, keep_zips=keep_zips,
                                 progress=progress, deadline=deadline)


def _download_bbbc021(root: Path, plates: Sequence[str] | None, *, base_url: str,
                      keep_zips: bool, progress: bool, deadline: float) -> list[Path]:
    from cellmorph.datasets.bbbc021 import read_image_metadata, read_moa_metadata

    base_url = base_url.rstrip("/") + "/"
    checks = {"BBBC021_v1_image.csv": (read_image_metadata, "the BBBC021 image table"),
              "BBBC021_v1_moa.csv": (read_moa_metadata, "the BBBC021 MoA table")}
    for name in BBBC021_METADATA:
        try:
            if name in checks:
                check, what = checks[name]
                fetch_checked(base_url + name, root / name, check, what, progress=progress,
                              deadline=deadline)
            else:
                fetch(base_url + name, root / name, progress=progress, deadline=deadline)
        except CellmorphError as exc:
            if name != "BBBC021_v1_compound.csv":  # the SMILES table is optional
                raise
            log.warning("optional %s not fetched (%s)", name, exc)
    meta = read_image_metadata(root / "BBBC021_v1_image.csv")
    expected = meta.groupby("Image_Metadata_Plate_DAPI").size()
    all_plates = sorted(expected.index)
    plates = list(plates) if plates else all_plates
    unknown = sorted(set(plates) - set(all_plates))
    if unknown:
        raise CellmorphError(f"unknown plate(s) {unknown}; plates look like {all_plates[0]}")
    done = []
    for plate in progress_bar(plates, desc="plates", unit="plate",
                              enabled=progress and len(plates) > 1):
        week = plate.split("_")[0]
        folder = root / week / plate
        if folder.is_dir() and len(list(folder.glob("*.tif"))) >= 3 * expected[plate]:
            done.append(folder)
            continue
        archive = fetch(f"{base_url}BBBC021_v1_images_{plate}.zip",
                        root / f"BBBC021_v1_images_{plate}.zip", progress=progress,
                        deadline=deadline)
        safe_extract(archive, root / week)
        if not folder.is_dir():
            raise CellmorphError(f"{archive}: did not contain the folder {plate}/; "
                                 "the archive layout is unexpected")
        if not keep_zips:
            archive.unlink()
        done.append(folder)
    return done


def download_bbbc014(root: Path | str, *, base_url: str = BBBC014_BASE_URL,
                     keep_zip: bool = False, progress: bool = True,
                     deadline: float = DEFAULT_DEADLINE) -> Path:
    """Download BBBC014's images and plate map into ``root``; returns the image folder.

    The images land in ``root/BBBC014_v1_images/`` (whether or not the zip has a top folder)
    and ``BBBC014_v1_platemap_all.txt`` beside it, as ``cellmorph index bbbc014`` expects.

    Examples
    --------
    >>> download_bbbc014("data/bbbc014")  # doctest: +SKIP
    PosixPath('data/bbbc014/BBBC014_v1_images')
    """
    with _new_folder(root) as folder:
        return _download_bbbc014(folder, base_url=base_url, keep_zip=keep_zip,
                                 progress=progress, deadline=deadline)


def _download_bbbc014(root: Path, *, base_url: str, keep_zip: bool, progress: bool,
                      deadline: float) -> Path:
    from cellmorph.datasets.bbbc014 import IMAGE_FOLDER, read_concentrations

    base_url = base_url.rstrip("/") + "/"
    fetch_checked(base_url + BBBC014_PLATEMAP, root / BBBC014_PLATEMAP, read_concentrations,
                  "the BBBC014 plate map (96 TNF-alpha concentrations)", progress=progress,
                  deadline=deadline)
    folder = root / IMAGE_FOLDER
    if folder.is_dir() and len(list(folder.iterdir())) >= 192:
        return folder
    archive = fetch(base_url + BBBC014_IMAGES, root / BBBC014_IMAGES, progress=progress,
                    deadline=deadline)
    safe_extract(archive, folder, strip_top=True)
    if not keep_zip:
        archive.unlink()
    return folder
