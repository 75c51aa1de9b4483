# blkmap/_lib.py — finds and loads libblkmap with ctypes, declares the C API
# (blkmap.h) the package uses, and turns its error codes into exceptions.
#
# Where the library comes from, first found wins:
#   1. $BLKMAP_LIBRARY (a path);
#   2. a build tree: this package inside <builddir>/python/ next to
#      <builddir>/client/.libs/ (so `PYTHONPATH=python` works there);
#   3. the dynamic loader ("libblkmap.so.0": LD_LIBRARY_PATH, ld.so.cache);
#   4. the libdir configure was given (_config.py, written at build time).
# Nothing here holds a lock; the library's own rules apply (blkmap.h).

import ctypes
import os
from ctypes import (POINTER, byref, c_char, c_char_p, c_int, c_int64, c_long,
                    c_size_t, c_uint64, c_void_p)

SONAME = "libblkmap.so.0"

BM_OPEN_CREATE = 1
BM_OPEN_FLAT = 2


def _candidates():
    env = os.environ.get("BLKMAP_LIBRARY")
    if env:
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    found = []
    built = os.path.join(here, "..", "..", "client", ".libs", SONAME)
    if os.path.exists(built):
        found.append(os.path.normpath(built))
    found.append(SONAME)
    try:
        from . import _config
        found.append(os.path.join(_config.LIBDIR, SONAME))
    except ImportError:
        pass
    return found, False


def _load():
    paths, forced = _candidates()
    errors = []
    for p in paths:
        try:
            return ctypes.CDLL(p)
        except OSError as e:
            errors.append("%s (%s)" % (p, e))
    what = "BLKMAP_LIBRARY=" + paths[0] if forced else "libblkmap"
    raise ImportError("blkmap: cannot load %s: tried %s" % (what, "; ".join(errors)))


class Options(ctypes.Structure):
    """struct bm_options (blkmap.h), field for field."""
    _fields_ = [
        ("cache_bytes", c_size_t),
        ("token", c_char_p),
        ("connect_timeout_ms", c_long),
        ("timeout_ms", c_long),
        ("retries", c_int),
        ("retry_base_ms", c_long),
        ("connections", c_int),
        ("readahead_bytes", c_size_t),
        ("spare_bytes", c_size_t),
        ("blksize", c_size_t),
        ("generation", c_uint64),
        ("flags", c_int),
        ("verbose", c_int),
        ("wcfs", c_char_p),
        ("commit_hook", c_void_p),
        ("commit_hook_arg", c_void_p),
        ("tag", c_char_p),
        ("piece_bytes", c_size_t),
    ]


class Stats(ctypes.Structure):
    """struct bm_stats."""
    _fields_ = [
        ("mode", c_char_p),
        ("mode_why", c_char_p),
        ("fetched_blocks", c_uint64),
        ("fetched_bytes", c_uint64),
        ("hole_blocks", c_uint64),
        ("cache_hits", c_uint64),
        ("cache_misses", c_uint64),
        ("readahead_blocks", c_uint64),
        ("retries", c_uint64),
        ("uploaded_blocks", c_uint64),
        ("uploaded_bytes", c_uint64),
        ("commits", c_uint64),
        ("conflicts", c_uint64),
        ("ram_bytes", c_size_t),
        ("engine", c_char_p),
    ]


class GenerationInfo(ctypes.Structure):
    """struct bm_generation_info."""
    _fields_ = [
        ("generation", c_uint64),
        ("size", c_uint64),
        ("blksize", c_size_t),
        ("nblocks", c_uint64),
        ("created", c_char * 40),
    ]


lib = _load()

_P = c_void_p  # bm_dataset *, bm_mapping *
_SIGS = {
    "bm_strerror": (c_char_p, [c_int]),
    "bm_options_init": (c_int, [POINTER(Options)]),
    "bm_open": (c_int, [POINTER(_P), c_char_p, POINTER(Options)]),
    "bm_close": (None, [_P]),
    "bm_size": (c_uint64, [_P]),
    "bm_blksize": (c_size_t, [_P]),
    "bm_generation": (c_uint64, [_P]),
    "bm_is_flat": (c_int, [_P]),
    "bm_format_version": (c_int, [_P]),
    "bm_is_latest": (c_int, [_P]),
    "bm_nblocks_stored": (c_uint64, [_P]),
    "bm_url": (c_char_p, [_P]),
    "bm_resize": (c_int, [_P, c_uint64]),
    "bm_map": (c_int, [_P, c_uint64, c_size_t, POINTER(c_void_p), POINTER(_P)]),
    "bm_unmap": (None, [_P]),
    "bm_read": (c_int64, [_P, c_uint64, c_void_p, c_size_t]),
    "bm_write": (c_int, [_P, c_uint64, c_void_p, c_size_t]),
    "bm_commit": (c_int, [_P, POINTER(c_uint64)]),
    "bm_discard": (c_int, [_P]),
    "bm_refresh": (c_int, [_P]),
    "bm_attrs_get": (c_int, [_P, c_char_p, c_size_t]),
    "bm_attrs_set": (c_int, [_P, c_char_p]),
    "bm_generation_prev": (c_int, [_P, c_uint64, POINTER(GenerationInfo)]),
    "bm_generation_info": (c_int, [_P, c_uint64, POINTER(GenerationInfo)]),
    "bm_generations": (c_int, [_P, POINTER(POINTER(c_uint64)), POINTER(c_size_t), POINTER(c_uint64)]),
    "bm_stats": (None, [_P, POINTER(Stats)]),
    "bm_last_error": (c_char_p, [_P]),
}
for _name, (_res, _args) in _SIGS.items():
    try:
        _f = getattr(lib, _name)
    except AttributeError:
        raise ImportError("blkmap: %s has no %s: it is older than this package"
                          % (lib._name, _name)) from None
    _f.restype = _res
    _f.argtypes = _args

ATTRS_MAX = 65536  # BM_ATTRS_MAX

# What the library returns malloc'd (bm_generations) is given back to the
# process's malloc, the one libblkmap calls.
free = ctypes.CDLL(None).free
free.restype = None
free.argtypes = [c_void_p]


# ---- errors -----------------------------------------------------------------

class Error(Exception):
    """An error of libblkmap: .code is its BM_E* code (or -errno), the
    message the library's one line naming the URL and what was wrong."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class InvalidError(Error, ValueError):
    """BM_EINVAL: a bad argument or option."""


class HTTPError(Error):
    """BM_EHTTP: the server could not be reached or kept failing."""


class NotFoundError(Error):
    """BM_ENOTFOUND: no dataset or object at the URL (404)."""


class FormatError(Error):
    """BM_EFORMAT: a bad manifest or a bad response from the server."""


class ChecksumError(Error):
    """BM_ECHECKSUM: block bytes do not match their checksum."""


class ConflictError(Error):
    """BM_ECONFLICT: another writer committed first."""


class ReadOnlyError(Error):
    """BM_EREADONLY: writing to a flat object or an old generation."""


class ChangedError(Error):
    """BM_ECHANGED: a flat object changed on the server while mapped."""


class AuthError(Error):
    """BM_EAUTH: the server refused the credentials (401/403)."""


class BusyError(Error):
    """BM_EBUSY: dirty pages, mappings or views in the way."""


class OutOfMemoryError(Error, MemoryError):
    """BM_ENOMEM: out of memory or RAM budget."""


class LocalIOError(Error, OSError):
    """BM_EIO: a local file could not be read or written."""


ERRORS = {
    -1001: InvalidError, -1002: HTTPError, -1003: NotFoundError,
    -1004: FormatError, -1005: ChecksumError, -1006: ConflictError,
    -1007: ReadOnlyError, -1008: ChangedError, -1009: AuthError,
    -1010: BusyError, -1011: OutOfMemoryError, -1012: LocalIOError,
}


def last_error(ds=None):
    """The library's last message for ds (None: this thread's bm_open)."""
    msg = lib.bm_last_error(ds)
    return msg.decode("utf-8", "replace") if msg else ""


def error(code, ds=None, what=None, before=None):
    """The exception for code, with the library's message for ds (a
    bm_dataset pointer, or None for bm_open's thread message).  A message
    equal to before (what it said before the call) is an older failure's:
    then the code's text, prefixed with what, is said instead."""
    msg = last_error(ds)
    if not msg or msg == before:
        msg = lib.bm_strerror(code).decode("utf-8", "replace")
        if what:
            msg = "%s: %s" % (what, msg)
    return ERRORS.get(code, Error)(msg, code)
