"""Copy a byte range between two open files as cheaply as the filesystem allows.

:func:`copy_range` is what seeds use to move a chunk from a seed file into the
output. When both files live on one filesystem that can share blocks (XFS
with reflink, btrfs) and the two offsets are congruent modulo the block
size, the block-aligned middle of the range is cloned with the
``FICLONERANGE`` ioctl, so no data is read or written, and only the partial
blocks at the head and tail are copied (a tail that ends exactly at the
source's end of file is cloned too where the kernel allows it). Everything
else is copied in the kernel with ``os.copy_file_range`` and, where that is
missing or refused (``EXDEV``, ``ENOSYS``, ``EOPNOTSUPP``, ``EINVAL``), with
plain positional reads and writes. A pair of devices on which cloning or
``copy_file_range`` failed for a reason that will not change is remembered,
so the refused call is not retried for every chunk. A source that ends
before the range does raises :class:`ShortSourceError`.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
import threading

from .fileio import pread, pwrite_all

__all__ = [
    "FICLONERANGE",
    "ShortSourceError",
    "block_size",
    "can_clone",
    "clone_range",
    "copy_range",
    "forget_failures",
]

FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)
# struct file_clone_range { __s64 src_fd; __u64 src_offset, src_length, dest_offset; }
_CLONE_ARGS = struct.Struct("=qQQQ")

_COPY_PIECE = 1 << 20  # bytes per pread/pwrite of the last fallback
_CFR_PIECE = 1 << 30  # bytes asked of one copy_file_range call

# Errors that mean "this pair of filesystems will never do it": remembered.
_NEVER = frozenset(
    e
    for e in (
        errno.EXDEV,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.ENOTTY,
    )
)
# Errors after which the next way of copying is tried for this range only (EPERM: an
# immutable or append-only file, a property of one file, not of the filesystem).
_FALL_BACK = _NEVER | {errno.EINVAL, errno.EBADF, errno.EPERM, errno.ETXTBSY, errno.EISDIR}

_lock = threading.Lock()
_no_clone: set[tuple[int, int]] = set()  # (src st_dev, dst st_dev) that cannot clone
_can_clone: set[tuple[int, int]] = set()  # pairs a probe found able to clone
_no_cfr: set[tuple[int, int]] = set()  # pairs where copy_file_range is refused

_HAVE_CFR = hasattr(os, "copy_file_range")
_HAVE_IOCTL = sys.platform.startswith("linux")


class ShortSourceError(OSError, EOFError):
    """The source file ended before the range to copy did (a seed shorter than its index)."""


def forget_failures() -> None:
    """Forget which device pairs refused cloning or ``copy_file_range`` (for tests)."""
    with _lock:
        _no_clone.clear()
        _can_clone.clear()
        _no_cfr.clear()


def block_size(fd: int) -> int:
    """The block size of the filesystem holding ``fd`` (the unit clones must align to)."""
    try:
        size = os.fstatvfs(fd).f_bsize
    except (OSError, AttributeError):
        size = 0
    if size <= 0:
        try:
            size = os.fstat(fd).st_blksize
        except (OSError, AttributeError):
            size = 0
    return size if size > 0 else 4096


def _pair(src_fd: int, dst_fd: int) -> tuple[int, int]:
    return os.fstat(src_fd).st_dev, os.fstat(dst_fd).st_dev


def _ioctl_clone(src_fd: int, src_off: int, dst_fd: int, dst_off: int, length: int) -> None:
    import fcntl  # POSIX only; only reached on Linux

    fcntl.ioctl(dst_fd, FICLONERANGE, _CLONE_ARGS.pack(src_fd, src_off, length, dst_off))


def can_clone(src_fd: int, dst_fd: int) -> bool:
    """Whether ranges of ``src_fd`` can be cloned into ``dst_fd`` (``dst_fd`` open for writing).

    Both must be regular files on one filesystem that shares blocks. The
    answer is probed once per pair of devices with a clone request beyond the
    source's end (which a reflink filesystem rejects with ``EINVAL`` and any
    other with ``EOPNOTSUPP``/``EXDEV``, changing nothing) and then remembered.
    """
    if not _HAVE_IOCTL:
        return False
    try:
        st_src, st_dst = os.fstat(src_fd), os.fstat(dst_fd)
    except OSError:
        return False
    import stat

    if not (stat.S_ISREG(st_src.st_mode) and stat.S_ISREG(st_dst.st_mode)):
        return False
    pair = (st_src.st_dev, st_dst.st_dev)
    if st_src.st_dev != st_dst.st_dev or pair in _no_clone:
        return False
    if pair in _can_clone:
        return True
    bs = block_size(dst_fd)
    beyond = (max(st_src.st_size, st_dst.st_size) // bs + 16) * bs
    try:
        _ioctl_clone(src_fd, beyond, dst_fd, beyond, bs)
    except OSError as e:
        if e.errno not in _NEVER and e.errno != errno.EINVAL:
            return False  # about these files (EPERM, EBADF: not open for writing), not the filesystem
        able = e.errno == errno.EINVAL
    else:  # nothing there to clone, yet it worked: trust it
        able = True
    with _lock:
        (_can_clone if able else _no_clone).add(pair)
    return able


def clone_range(src_fd: int, src_off: int, dst_fd: int, dst_off: int, length: int) -> bool:
    """Clone exactly ``length`` bytes with ``FICLONERANGE``; ``False`` when the kernel refuses.

    Offsets must be block-aligned, and so must ``length`` unless the range
    ends at the source's end of file. A refusal that will not change for this
    pair of devices is remembered, and later calls return ``False`` at once.
    """
    if length <= 0:
        return True
    if not _HAVE_IOCTL:
        return False
    pair = _pair(src_fd, dst_fd)
    if pair in _no_clone or pair[0] != pair[1]:
        return False
    try:
        _ioctl_clone(src_fd, src_off, dst_fd, dst_off, length)
    except OSError as e:
        if e.errno in _NEVER:
            with _lock:
                _no_clone.add(pair)
                _can_clone.discard(pair)
            return False
        if e.errno in _FALL_BACK:
            return False
        raise
    return True


def _plain_copy(src_fd: int, src_off: int, dst_fd: int, dst_off: int, length: int) -> None:
    done = 0
    while done < length:
        data = pread(src_fd, min(_COPY_PIECE, length - done), src_off + done)
        if not data:
            raise ShortSourceError(
                errno.EIO, f"source ends at offset {src_off + done}, {length - done} bytes early"
            )
        pwrite_all(dst_fd, data, dst_off + done)
        done += len(data)


def _copy(src_fd: int, src_off: int, dst_fd: int, dst_off: int, length: int) -> None:
    """Copy ``length`` bytes: ``copy_file_range`` where it works, else reads and writes."""
    done = 0
    if _HAVE_CFR:
        pair = _pair(src_fd, dst_fd)
        if pair not in _no_cfr:
            while done < length:
                try:
                    n = os.copy_file_range(  # type: ignore[attr-defined,unused-ignore]
                        src_fd,
                        dst_fd,
                        min(_CFR_PIECE, length - done),
                        src_off + done,
                        dst_off + done,
                    )
                except OSError as e:
                    if e.errno in _NEVER:
                        with _lock:
                            _no_cfr.add(pair)
                    if e.errno in _FALL_BACK:
                        break
                    raise
                if n == 0:
                    raise ShortSourceError(
                        errno.EIO,
                        f"source ends at offset {src_off + done}, {length - done} bytes early",
                    )
                done += n
    if done < length:
        _plain_copy(src_fd, src_off + done, dst_fd, dst_off + done, length - done)


def copy_range(src_fd: int, src_off: int, dst_fd: int, dst_off: int, length: int) -> tuple[int, int]:
    """Put ``length`` bytes of ``src_fd`` at ``src_off`` into ``dst_fd`` at ``dst_off``.

    Returns ``(bytes_cloned, bytes_copied)``, which add up to ``length``.
    Blocks are shared where the filesystem can (see the module docstring);
    the destination may be extended, also past its current end. Both may be
    one file, but the two ranges must not overlap. Raises
    :class:`ShortSourceError` when the source ends early (some bytes may have
    been written by then) and ``OSError`` for any other failure.
    """
    if length <= 0:
        return 0, 0
    cloned = 0
    if can_clone(src_fd, dst_fd):
        bs = block_size(dst_fd)
        if (src_off - dst_off) % bs == 0:
            head = min((-src_off) % bs, length)
            mid_len = (length - head) // bs * bs
            tail = length - head - mid_len
            mid_src, mid_dst = src_off + head, dst_off + head
            # A tail ending at the source's end of file may be cloned with the middle.
            at_eof = tail and src_off + length == os.fstat(src_fd).st_size
            if at_eof and clone_range(src_fd, mid_src, dst_fd, mid_dst, mid_len + tail):
                cloned, mid_len, tail = mid_len + tail, 0, 0
            if mid_len and clone_range(src_fd, mid_src, dst_fd, mid_dst, mid_len):
                cloned = mid_len
            if cloned:
                if head:
                    _copy(src_fd, src_off, dst_fd, dst_off, head)
                if tail:
                    at = length - tail
                    _copy(src_fd, src_off + at, dst_fd, dst_off + at, tail)
                return cloned, length - cloned
    _copy(src_fd, src_off, dst_fd, dst_off, length)
    return 0, length
