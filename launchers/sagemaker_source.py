"""Packages the project's own files (what git tracks or would track) for a SageMaker job."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from core.rundir import GitError, commit_and_dirty, source_files, work_tree_root


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


def _in_work_tree(action):
    """Run a git question of core.rundir, its failure told as a packaging error."""
    try:
        return action()
    except GitError as error:
        raise SourcePackageError(str(error)) from error


def package_source(root: Path, destination: Path, max_bytes: int) -> SourcePackage:
    """Write `destination` (a .tar.gz) holding the source files of the work tree at `root`.

    The tarball is reproducible: files are sorted and carry neither owners nor times, so an
    unchanged tree gives the same digest and need not be uploaded again.

    Raises:
        SourcePackageError: `root` is not a git work tree, or the package exceeds `max_bytes`.
    """
    top = work_tree_root(Path(root))
    if top is None:
        raise SourcePackageError(f"{root} is not in a git work tree; the source is packaged from one")
    root = top
    names = _in_work_tree(lambda: source_files(root))
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
    commit, dirty = _in_work_tree(lambda: commit_and_dirty(root))
    return SourcePackage(
        path=destination,
        size_bytes=len(data),
        file_count=len(names),
        sha256=hashlib.sha256(data).hexdigest(),
        git_commit=commit,
        git_dirty=dirty,
    )
