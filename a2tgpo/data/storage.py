"""Object storage for stage datasets: a local folder or s3:// through fsspec.

`Storage` turns a `StorageConfig` into two views of the same store:

- `fs`: an fsspec filesystem (LocalFileSystem or s3fs) for small objects, listings,
  deletes and the atomic create-if-absent of manifests;
- `bulk_fs`: a pyarrow filesystem for Parquet part files, either pyarrow's native
  one (LocalFileSystem / S3FileSystem) or the fsspec one wrapped for pyarrow.
  `benchmarks/storage.py` measures both; `BULK_DEFAULT` holds the winner.

URIs are plain absolute paths for a local root and `s3://bucket/key` for S3.
Endpoint and region come from the config; credentials only from the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read by botocore and the AWS C++ SDK
themselves). They are never passed, stored, logged or pickled by this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import uuid
from functools import cached_property
from typing import IO, Any, Literal
from urllib.parse import urlparse

import fsspec
import pyarrow.fs as pafs

from a2tgpo.config import StorageConfig
from a2tgpo.config_rules import check_storage_root, refuse_credentials
from a2tgpo.errors import UnsafeValue

BulkBackend = Literal["arrow", "fsspec"]

# Which filesystem moves Parquet parts, by protocol; "auto" in `Storage` means this.
# benchmarks/storage.py, 100k x 2k-token trajectories (1.76 GB Arrow, 1.06 GB Parquet),
# 2 shared cores, MB/s write / read over two runs: S3 (moto) fsspec 68-125 / 177-321
# vs arrow 41-49 / 98-281 (arrow's S3 writer always goes multipart; s3fs sends a
# ~40 MB part in one PUT). Local: a tie within noise (arrow 95-141 / 130-252, fsspec
# 87-136 / 127-288; Parquet encode / decode dominates); arrow keeps Python off the path.
BULK_DEFAULT: dict[str, BulkBackend] = {"file": "arrow", "s3": "fsspec"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class Storage:
    """A store rooted at `config.root` (local folder or s3://bucket/prefix)."""

    def __init__(self, config: StorageConfig, *, bulk: BulkBackend | Literal["auto"] = "auto"):
        # The config refuses these already; checked again for a config built without
        # validation (model_construct, model_copy(update=...)).
        check_storage_root(config.root)
        refuse_credentials(config.endpoint_url)
        self.config = config
        root = config.root
        if root.startswith("s3://"):
            self.protocol = "s3"
            self.root = "s3://" + root[len("s3://") :].strip("/")
        elif "://" in root and not root.startswith("file://"):
            raise ValueError(f"unsupported storage root {root!r}: use a local folder or s3://")
        else:
            self.protocol = "file"
            self.root = os.path.abspath(root.removeprefix("file://"))
        self.bulk: BulkBackend = BULK_DEFAULT[self.protocol] if bulk == "auto" else bulk

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def __repr__(self) -> str:
        return (
            f"Storage(root={self.root!r}, endpoint_url={self.config.endpoint_url!r}, "
            f"region={self.config.region!r}, bulk={self.bulk!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Filesystem clients are rebuilt lazily in the receiving process (fresh event
        # loop, credentials re-read from that process's environment).
        return {"config": self.config, "bulk": self.bulk}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], bulk=state["bulk"])  # type: ignore[misc]

    # ---- filesystems -------------------------------------------------------------

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (no listings cache: other writers change the store)."""
        if self.is_local:
            return fsspec.filesystem("file", auto_mkdir=True)
        import s3fs

        client_kwargs: dict[str, str] = {}
        if self.config.endpoint_url:
            client_kwargs["endpoint_url"] = self.config.endpoint_url
        if self.config.region:
            client_kwargs["region_name"] = self.config.region
        return s3fs.S3FileSystem(
            client_kwargs=client_kwargs, use_listings_cache=False, skip_instance_cache=True
        )

    @cached_property
    def arrow_fs(self) -> pafs.FileSystem:
        """pyarrow's native filesystem for this store."""
        if self.is_local:
            return pafs.LocalFileSystem()
        kwargs: dict[str, Any] = {}
        if self.config.endpoint_url:
            url = urlparse(self.config.endpoint_url)
            kwargs["endpoint_override"] = url.netloc + url.path.rstrip("/")
            kwargs["scheme"] = url.scheme or "https"
        region = (
            self.config.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs)

    @cached_property
    def bulk_fs(self) -> pafs.FileSystem:
        """The pyarrow filesystem that reads and writes Parquet parts (see `bulk`)."""
        if self.bulk == "arrow":
            return self.arrow_fs
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    # ---- paths -------------------------------------------------------------------

    def join(self, *parts: str) -> str:
        """A URI: parts joined onto the root, or onto the first part if it is a URI.
        A '..' segment is refused: a joined URI never leaves its base."""
        if parts and self._is_uri(parts[0]):
            base, rest = parts[0].rstrip("/"), parts[1:]
        else:
            base, rest = self.root, parts
        if any(segment == ".." for part in rest for segment in part.split("/")):
            raise UnsafeValue(f"path parts {list(rest)!r} hold '..': a URI may not leave its base")
        tail = "/".join(p.strip("/") for p in rest if p.strip("/"))
        return f"{base}/{tail}" if tail else base

    def _is_uri(self, text: str) -> bool:
        return text.startswith("s3://") if self.protocol == "s3" else os.path.isabs(text)

    def stage_uri(self, run_id: str, iteration: int, stage: str) -> str:
        """`{root}/{run_id}/iter={iteration:05d}/{stage}`."""
        for what, name in (("run_id", run_id), ("stage", stage)):
            if not _NAME.match(name):
                raise ValueError(f"{what} {name!r} must match {_NAME.pattern}")
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        return self.join(run_id, f"iter={iteration:05d}", stage)

    def path(self, uri: str) -> str:
        """The filesystem path of a URI (`bucket/key` on S3, an absolute path locally)."""
        if self.protocol == "s3":
            if not uri.startswith("s3://"):
                raise ValueError(f"{uri!r} is not an s3:// URI of this store")
            return uri[len("s3://") :]
        if "://" in uri and not uri.startswith("file://"):
            raise ValueError(f"{uri!r} is not a local path")
        return os.path.abspath(uri.removeprefix("file://"))

    # ---- small-object operations (fsspec) ------------------------------------------

    def exists(self, uri: str) -> bool:
        return self.fs.exists(self.path(uri))

    def open(self, uri: str, mode: str = "rb") -> IO[Any]:
        return self.fs.open(self.path(uri), mode)

    def read_bytes(self, uri: str) -> bytes:
        """The object's bytes; FileNotFoundError when it does not exist."""
        return self.fs.cat_file(self.path(uri))

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write (overwrite) one object."""
        self.fs.pipe_file(self.path(uri), data)

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """Atomically create an object unless it exists; True when this call created it.

        Local: write a temporary file, fsync, then os.link it to the name (link fails
        when the name exists, and readers never see a partial file). S3: PutObject with
        If-None-Match: * (s3fs `mode="create"`), answered 412 when the key exists.
        """
        path = self.path(uri)
        if not self.is_local:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            return True
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{os.path.basename(path)}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
        except FileNotFoundError:
            # A rival that committed meanwhile swept our temporary file away.
            if not os.path.exists(path):
                raise
            created = False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # A filesystem without hard links: O_EXCL (readers may see a partial file).
            created = _create_exclusive(path, data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if created:
            _fsync_dir(folder)
        return created

    def list(self, uri: str) -> list[str]:
        """Names of the direct children of a folder (files and subfolders); [] if absent."""
        try:
            entries = self.fs.ls(self.path(uri), detail=False)
        except FileNotFoundError:
            return []
        base = self.path(uri).rstrip("/")
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != base)

    def remove(self, uri: str, *, recursive: bool = False) -> None:
        """Delete a file or (recursive) a folder; a missing one is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(uri), recursive=recursive)

    def upload(self, local_path: str, uri: str) -> None:
        """Copy one local file to the store."""
        self.fs.put_file(local_path, self.path(uri))

    def download(self, uri: str, local_path: str) -> None:
        """Copy one object to a local file."""
        self.fs.get_file(self.path(uri), local_path)

    def makedirs(self, uri: str) -> None:
        """Create a local folder (object stores have no folders; a no-op there)."""
        if self.is_local:
            os.makedirs(self.path(uri), exist_ok=True)


def _create_exclusive(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def _fsync_dir(folder: str) -> None:
    # Make the new directory entry durable (a crash must not lose a committed manifest).
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
