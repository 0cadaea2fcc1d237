"""Directory bundles: a directory (a Hugging Face export, a TF SavedModel) packed into a
deterministic tar archive, so the same files always give the same sha256."""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isdir():
        info.mode = 0o755
    elif info.isfile():
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    return info


def pack_directory(directory: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Packs `directory` into an uncompressed tar with sorted entries, zeroed times and
    owners and normalized modes. Symbolic links are refused (they would point outside the
    bundle). Returns the archive's path (a temporary file unless `out` is given)."""
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    if out is None:
        fd, name = tempfile.mkstemp(prefix="modelreg-bundle-", suffix=".tar")
        os.close(fd)
        out = name
    out = Path(out)
    entries: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames + sorted(filenames):
            entries.append(base / name)
    entries.sort(key=lambda p: p.relative_to(root).as_posix())
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries:
            if path.is_symlink():
                raise ValueError(f"{path} is a symbolic link; bundles hold only regular files and directories")
            arcname = path.relative_to(root).as_posix()
            info = _normalize(tar.gettarinfo(str(path), arcname))
            info.pax_headers = {}
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return out


def extract_bundle(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpacks a bundle into `dest` (created if missing), refusing paths that escape it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r") as tar:
        tar.extractall(dest, filter="data")
    return dest
