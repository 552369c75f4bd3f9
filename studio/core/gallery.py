"""The outputs store: atomic PNG writes and a SQLite (WAL) index of what was made.

A PNG is encoded in memory, written to a temporary file in the outputs folder,
fsynced and moved into place with `os.replace`, so a crash leaves either the
whole image or none. The index lives next to the images; rows missing after a
crash between the write and the insert are rebuilt from the PNGs' own metadata
when the gallery opens, and rows whose file is gone are dropped.
"""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.errors import UserError

INDEX_NAME = ".latent-studio-index.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    prompt TEXT NOT NULL DEFAULT '',
    negative TEXT NOT NULL DEFAULT '',
    seed INTEGER,
    width INTEGER,
    height INTEGER,
    model TEXT NOT NULL DEFAULT '',
    request TEXT,
    parameters TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS items_created ON items (created DESC, id DESC);
"""


@dataclass(frozen=True)
class GalleryItem:
    id: int
    path: Path
    created: float
    prompt: str
    negative_prompt: str
    seed: int | None
    width: int | None
    height: int | None
    model: str
    request: dict[str, Any] | None
    parameters: str


# ---- atomic files ----------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the new, never a part."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(exc: OSError, folder: Path) -> UserError:
    """The message a person can act on for a failed write into `folder`."""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        msg = (
            f"The disk holding the outputs folder {folder} is full: free some space "
            "or choose another outputs folder in Settings."
        )
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or isinstance(exc, PermissionError):
        msg = (
            f"Cannot write to the outputs folder {folder} (permission denied): "
            "choose another outputs folder in Settings."
        )
    elif code in (errno.ENOTDIR, errno.EEXIST) or isinstance(exc, NotADirectoryError):
        msg = f"The outputs folder {folder} is not a folder: choose another one in Settings."
    else:
        msg = f"Cannot save into the outputs folder {folder}: {exc.strerror or exc}."
    return UserError(msg, f"{type(exc).__name__}: {exc}")


# ---- the gallery ----------------------------------------------------------------

_galleries: dict[Path, Gallery] = {}
_galleries_lock = threading.Lock()


def gallery_for(folder: str | os.PathLike[str]) -> Gallery:
    """The shared Gallery of an outputs folder (one per folder per process)."""
    key = Path(folder).expanduser().resolve()
    with _galleries_lock:
        gallery = _galleries.get(key)
        if gallery is None:
            gallery = _galleries[key] = Gallery(key)
        return gallery


class Gallery:
    """The images in one outputs folder, newest first. Safe to use from any thread:
    each thread gets its own SQLite connection."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()
        self.index_path = self.folder / INDEX_NAME
        self._local = threading.local()
        self._sync_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._synced = False
        self._connections: list[sqlite3.Connection] = []

    # ---- connection -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.index_path, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except OSError as exc:
            raise write_error(exc, self.folder) from exc
        except sqlite3.Error as exc:
            raise UserError(
                f"Cannot open the gallery index in {self.folder}: {exc}. "
                "Check that the outputs folder is writable.",
            ) from exc
        self._local.conn = conn
        self._connections.append(conn)
        if not self._synced:
            with self._sync_lock:
                if not self._synced:
                    self._synced = True
                    self.sync()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---- writing -----------------------------------------------------------------

    def save(
        self,
        image: Any,
        parameters: str,
        request: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> GalleryItem:
        """Write `image` (PIL) as a PNG carrying `parameters` and `request`, then index it."""
        from studio.core.metadata import png_info

        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=png_info(parameters, request))
        data = buffer.getvalue()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._write_lock:  # choosing a free name and taking it is one step
                path = self._free_name(name or self._default_name(request))
                atomic_write_bytes(path, data)
        except OSError as exc:
            raise write_error(exc, self.folder) from exc
        created = time.time()
        return self._insert(path, created, parameters, dict(request) if request else None)

    def _default_name(self, request: Mapping[str, Any] | None) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        seed = request.get("seed") if request else None
        return f"{stamp}-{seed}.png" if seed is not None else f"{stamp}.png"

    def _free_name(self, name: str) -> Path:
        path = self.folder / name
        stem, suffix = path.stem, path.suffix or ".png"
        n = 1
        while path.exists():
            path = self.folder / f"{stem}-{n}{suffix}"
            n += 1
        return path

    def _insert(
        self,
        path: Path,
        created: float,
        parameters: str,
        request: dict[str, Any] | None,
    ) -> GalleryItem:
        fields = _fields_of(parameters, request)
        conn = self._connect()
        try:
            with conn:
                cur = conn.execute(
                    "INSERT OR REPLACE INTO items (name, created, prompt, negative, seed, width,"
                    " height, model, request, parameters) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        path.name,
                        created,
                        fields["prompt"],
                        fields["negative_prompt"],
                        fields["seed"],
                        fields["width"],
                        fields["height"],
                        fields["model"],
                        json.dumps(request, sort_keys=True) if request is not None else None,
                        parameters,
                    ),
                )
        except sqlite3.Error as exc:
            # The PNG is safely written; the next open re-indexes it from its metadata.
            raise UserError(f"Saved {path.name}, but could not index it: {exc}") from exc
        return GalleryItem(
            id=int(cur.lastrowid or 0),
            path=path,
            created=created,
            request=request,
            parameters=parameters,
            **fields,
        )

    def delete(self, item: GalleryItem | str | os.PathLike[str]) -> bool:
        """Remove an image file and its row; False if it was not there."""
        path = item.path if isinstance(item, GalleryItem) else Path(item)
        name = path.name
        conn = self._connect()
        existed = False
        try:
            (self.folder / name).unlink()
            existed = True
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise write_error(exc, self.folder) from exc
        with conn:
            cur = conn.execute("DELETE FROM items WHERE name = ?", (name,))
        return existed or cur.rowcount > 0

    # ---- reading ------------------------------------------------------------------

    def list_items(self, limit: int = 100, offset: int = 0) -> list[GalleryItem]:
        rows = self._connect().execute(
            "SELECT id, name, created, prompt, negative, seed, width, height, model, request,"
            " parameters FROM items ORDER BY created DESC, id DESC LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        )
        return [self._item(row) for row in rows]

    def count(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def get(self, path: str | os.PathLike[str]) -> GalleryItem | None:
        row = (
            self._connect()
            .execute(
                "SELECT id, name, created, prompt, negative, seed, width, height, model, request,"
                " parameters FROM items WHERE name = ?",
                (Path(path).name,),
            )
            .fetchone()
        )
        return self._item(row) if row else None

    def _item(self, row: tuple[Any, ...]) -> GalleryItem:
        request = None
        if row[9]:
            try:
                request = json.loads(row[9])
            except ValueError:
                request = None
        return GalleryItem(
            id=row[0],
            path=self.folder / row[1],
            created=row[2],
            prompt=row[3],
            negative_prompt=row[4],
            seed=row[5],
            width=row[6],
            height=row[7],
            model=row[8],
            request=request,
            parameters=row[10],
        )

    # ---- recovery -------------------------------------------------------------------

    def sync(self) -> tuple[int, int]:
        """Index PNGs that have no row and drop rows whose file is gone: (added, removed)."""
        conn = self._connect()
        try:
            on_disk = {
                entry.name: entry
                for entry in os.scandir(self.folder)
                if entry.is_file()
                and entry.name.lower().endswith(".png")
                and not entry.name.startswith(".")
            }
        except OSError:
            return (0, 0)
        indexed = {name for (name,) in conn.execute("SELECT name FROM items")}
        gone = indexed - on_disk.keys()
        if gone:
            with conn:
                conn.executemany("DELETE FROM items WHERE name = ?", [(n,) for n in gone])
        added = 0
        for name in sorted(on_disk.keys() - indexed):
            entry = on_disk[name]
            parameters, request = _metadata_of(Path(entry.path))
            try:
                created = entry.stat().st_mtime
            except OSError:
                continue
            try:
                self._insert(Path(entry.path), created, parameters, request)
                added += 1
            except UserError:
                break
        return (added, len(gone))


def _metadata_of(path: Path) -> tuple[str, dict[str, Any] | None]:
    from studio.core.metadata import PARAMETERS_KEY, REQUEST_KEY, read_png_text

    try:
        text = read_png_text(path)
    except UserError:
        return "", None
    request = None
    if text.get(REQUEST_KEY):
        try:
            loaded = json.loads(text[REQUEST_KEY])
            request = loaded if isinstance(loaded, dict) else None
        except ValueError:
            request = None
    return text.get(PARAMETERS_KEY, ""), request


def _fields_of(parameters: str, request: Mapping[str, Any] | None) -> dict[str, Any]:
    if request is not None:
        source = dict(request)
    elif parameters:
        from studio.core.metadata import parameters_to_request, parse_parameters

        source = parameters_to_request(parse_parameters(parameters))
    else:
        source = {}

    def as_int(value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    return {
        "prompt": str(source.get("prompt", "")),
        "negative_prompt": str(source.get("negative_prompt", "")),
        "seed": as_int(source.get("seed")),
        "width": as_int(source.get("width")),
        "height": as_int(source.get("height")),
        "model": str(source.get("model", "")),
    }
