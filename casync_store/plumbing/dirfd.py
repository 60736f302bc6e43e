"""Directories handled through descriptors: opened relative to their parent, never through a symlink.

Shared by ``untar`` (which fills trees of any depth) and its removal of what
is in the way: :func:`remove` deletes a file or a whole directory tree with
a loop over an explicit stack, not recursion, so depth is bounded by neither
Python's recursion limit nor the descriptor limit: only the last
:data:`FD_WINDOW` levels keep a descriptor, and an ancestor is reopened as
``..`` and checked to be the same directory (:func:`reopen_dotdot`).
"""

from __future__ import annotations

import contextlib
import errno
import os

__all__ = ["DIR_FLAGS", "FD_WINDOW", "remove", "remove_tree", "reopen_dotdot"]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
FD_WINDOW = 64  # ancestor directories kept open; deeper ones are reopened through ".."


def remove(pfd: int, name: bytes | str) -> None:
    """Delete ``name`` in ``pfd`` (a whole directory tree too), never following symlinks."""
    try:
        os.unlink(name, dir_fd=pfd)
        return
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.EPERM):
            raise
    remove_tree(pfd, name)


class _Doomed:
    """A directory being emptied by :func:`remove_tree`: its descriptor and subdirectories left."""

    __slots__ = ("fd", "ident", "name", "subdirs")

    def __init__(self, fd: int, name: bytes | str) -> None:
        self.fd = fd
        self.name = name
        st = os.fstat(fd)
        self.ident = (st.st_dev, st.st_ino)
        self.subdirs: list[str] = []


def remove_tree(pfd: int, name: bytes | str) -> None:
    """Delete the directory ``name`` in ``pfd`` and all below it, without recursion.

    A loop over an explicit stack, so any depth works (Python's recursion limit
    is about 1,000). Only the last :data:`FD_WINDOW` levels keep a descriptor;
    an ancestor whose descriptor was closed is reopened through ``..`` and must
    be the very directory left (same device and inode), so nothing outside the
    tree is touched even if the tree is moved meanwhile. Every open is
    ``O_NOFOLLOW`` relative to its parent and symlinks are unlinked, never
    followed: their targets survive.
    """
    stack = [_open_doomed(pfd, name)]
    try:
        while stack:
            top = stack[-1]
            if top.subdirs:
                child = top.subdirs.pop()
                try:
                    stack.append(_open_doomed(top.fd, child))
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # replaced meanwhile: not a tree
                        os.unlink(child, dir_fd=top.fd)
                    elif exc.errno != errno.ENOENT:
                        raise
                if len(stack) > FD_WINDOW and stack[-FD_WINDOW - 1].fd >= 0:
                    os.close(stack[-FD_WINDOW - 1].fd)
                    stack[-FD_WINDOW - 1].fd = -1
                continue
            stack.pop()
            parent = stack[-1] if stack else None
            try:
                if parent is not None and parent.fd < 0:
                    parent.fd = reopen_dotdot(top.fd, parent.ident, "while it was removed")
            finally:
                os.close(top.fd)
            os.rmdir(top.name, dir_fd=parent.fd if parent is not None else pfd)
    finally:
        for doomed in stack:
            if doomed.fd >= 0:
                os.close(doomed.fd)


def _open_doomed(pfd: int, name: bytes | str) -> _Doomed:
    """Open the directory ``name`` (never through a symlink), unlink its non-directories, list the rest."""
    fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
    try:
        doomed = _Doomed(fd, name)
        with os.scandir(fd) as entries:
            children = [(child.name, child.is_dir(follow_symlinks=False)) for child in entries]
        for child, is_dir in children:
            if is_dir:
                doomed.subdirs.append(child)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(child, dir_fd=fd)
    except BaseException:
        os.close(fd)
        raise
    return doomed


def reopen_dotdot(fd: int, ident: tuple[int, int], when: str, name: str = "") -> int:
    """``..`` of ``fd`` opened again; ESTALE unless it is still the directory ``ident`` (dev, inode)."""
    pfd = os.open("..", DIR_FLAGS, dir_fd=fd)
    st = os.fstat(pfd)
    if (st.st_dev, st.st_ino) != ident:
        os.close(pfd)
        raise OSError(errno.ESTALE, f"directory was moved {when}", *([name] if name else []))
    return pfd
