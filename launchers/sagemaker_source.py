"""Packages the project's own files (what git tracks or would track) for a SageMaker job."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path


class SourcePackageError(RuntimeError):
    """The source cannot be packaged: not a git work tree, or the package is too large."""


@dataclass(frozen=True)
class SourcePackage:
    """A gzipped tarball of the project source, ready to upload."""

    path: Path
    """Local path of the tarball."""
    size_bytes: int
    """Compressed size of the tarball, in bytes."""
    file_count: int
    """Number of files in the tarball."""
    sha256: str
    """Hex digest of the tarball; equal sources give equal digests."""
    git_commit: str
    """Commit the work tree is on."""
    git_dirty: bool
    """Whether files differ from that commit (modified or untracked files are packaged as they are)."""


def _git(root: Path, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True).stdout
    except FileNotFoundError as error:
        raise SourcePackageError("git is needed to package the source but was not found") from error
    except subprocess.CalledProcessError as error:
        message = error.stderr.decode(errors="replace").strip()
        raise SourcePackageError(f"{root} is not a usable git work tree: {message}") from error


def list_source_files(root: Path) -> list[str]:
    """Paths, relative to the work tree root, of the files git tracks or would track.

    Untracked files that .gitignore does not exclude are included, so a new module is
    shipped before it is committed; ignored outputs, virtual environments and caches are not.
    Tracked files deleted from the work tree are skipped.
    """
    listing = _git(root, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    names = sorted({name for name in listing.decode().split("\0") if name})
    return [name for name in names if (root / name).is_file() or (root / name).is_symlink()]


def git_state(root: Path) -> tuple[str, bool]:
    """The commit the work tree is on ("none" before the first commit) and whether it is dirty."""
    try:
        commit = _git(root, "rev-parse", "HEAD").decode().strip()
    except SourcePackageError:
        commit = "none"
    dirty = bool(_git(root, "status", "--porcelain").strip())
    return commit, dirty


def package_source(root: Path, destination: Path, max_bytes: int) -> SourcePackage:
    """Write `destination` (a .tar.gz) holding the source files of the work tree at `root`.

    The tarball is reproducible: files are sorted and carry neither owners nor times, so an
    unchanged tree gives the same digest and need not be uploaded again.

    Raises:
        SourcePackageError: `root` is not a git work tree, or the package exceeds `max_bytes`.
    """
    root = Path(_git(Path(root), "rev-parse", "--show-toplevel").decode().strip())
    names = list_source_files(root)
    buffer = io.BytesIO()
    # mtime=0 in the gzip header keeps the digest independent of when the package was built.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed:
        with tarfile.open(fileobj=compressed, mode="w") as archive:
            for name in names:
                info = archive.gettarinfo(str(root / name), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(root / name, "rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        largest = sorted(names, key=lambda name: (root / name).lstat().st_size, reverse=True)[:5]
        listing = ", ".join(f"{name} ({(root / name).lstat().st_size / 1e6:.1f} MB)" for name in largest)
        raise SourcePackageError(
            f"source package is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit "
            f"(launcher.max_source_mb); largest files: {listing}. Add large files to .gitignore "
            "or raise the limit."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)
    commit, dirty = git_state(root)
    return SourcePackage(
        path=destination,
        size_bytes=len(data),
        file_count=len(names),
        sha256=hashlib.sha256(data).hexdigest(),
        git_commit=commit,
        git_dirty=dirty,
    )
