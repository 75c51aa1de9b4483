"""blkmap — datasets on an HTTP object server, mapped into memory.

    import blkmap
    with blkmap.open("http://127.0.0.1:8080/data/temps") as ds:
        a = ds.array()          # numpy array over the mapping: blocks load
        print(a.mean())         # on first access, checksum verified
        a[0] = 1.5              # a dirty page, in RAM
        ds.commit()             # the next generation, published atomically

Pure Python over libblkmap (ctypes); numpy is optional (.map() gives a
memoryview without it).  docs/python.md tells the whole story.

Lifetime: every array and memoryview keeps its mapping alive.  close()
while some still exist is deferred: the dataset stops taking calls at once
and is really closed when the last view goes, so no view ever points at
unmapped memory.  Locking: one lock per dataset guards its handle pointer
and view count (views may be freed by the garbage collector in any thread).
"""

import ctypes
import json
import os
import threading
import weakref
from ctypes import byref, c_uint64, c_void_p

from . import _lib
from ._lib import (AuthError, BusyError, ChangedError, ChecksumError,
                   ConflictError, Error, FormatError, HTTPError, InvalidError,
                   LocalIOError, NotFoundError, OutOfMemoryError, ReadOnlyError)

try:
    import numpy as _np
except ImportError:  # memoryviews only
    _np = None

__all__ = [
    "open", "put", "put_array", "Dataset", "Error", "InvalidError",
    "HTTPError", "NotFoundError", "FormatError", "ChecksumError",
    "ConflictError", "ReadOnlyError", "ChangedError", "AuthError",
    "BusyError", "OutOfMemoryError", "LocalIOError",
]

_lib_ = _lib.lib
_OPTION_NAMES = [f for f, _ in _lib.Options._fields_
                 if f not in ("commit_hook", "commit_hook_arg", "generation")]
# The attrs put_array writes (and put removes): what .array() reads back.
_ARRAY_KEYS = ("dtype", "shape", "order")


class _Handle:
    """The bm_dataset pointer, the count of live mappings, and the deferred
    close.  self.lock guards ptr, nmaps and closing."""

    def __init__(self, ptr, keep):
        self.ptr = ptr
        self.keep = keep          # strings bm_open's options point to
        self.nmaps = 0
        self.closing = False
        self.lock = threading.RLock()

    def close(self):
        with self.lock:
            self.closing = True
            if self.nmaps == 0 and self.ptr is not None:
                ptr, self.ptr = self.ptr, None
                _lib_.bm_close(ptr)

    def unmap(self, m):
        with self.lock:
            _lib_.bm_unmap(m)
            self.nmaps -= 1
            if self.closing and self.nmaps == 0 and self.ptr is not None:
                ptr, self.ptr = self.ptr, None
                _lib_.bm_close(ptr)


def _options(generation, options):
    o = _lib.Options()
    before = _lib.last_error(None)
    rc = _lib_.bm_options_init(byref(o))
    if rc < 0:
        raise _lib.error(rc, None, "options from the environment", before)
    keep = []
    flags = 0
    for name, value in options.items():
        if name in ("create", "flat"):
            flags |= (_lib.BM_OPEN_CREATE if name == "create" else _lib.BM_OPEN_FLAT) if value else 0
            continue
        if name not in _OPTION_NAMES:
            raise TypeError("blkmap.open: unknown option %r (options: %s)"
                            % (name, ", ".join(_OPTION_NAMES + ["create", "flat"])))
        if name in ("token", "wcfs"):
            if value is not None:
                value = os.fsencode(value) if isinstance(value, str) else bytes(value)
                keep.append(value)
        elif name == "verbose":
            value = int(bool(value))
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidError("blkmap.open: option %s=%r is not a non-negative integer"
                               % (name, value), -1001)
        setattr(o, name, value)
    o.flags |= flags
    if generation is not None:
        if not isinstance(generation, int) or generation < 1:
            raise InvalidError("blkmap.open: generation=%r is not a generation "
                               "number (1 or more)" % (generation,), -1001)
        o.generation = generation
    return o, keep


def open(url, generation=None, **options):
    """Opens the dataset (or plain object) at url, as of generation if
    given (else the latest).  options are struct bm_options' fields by name
    (cache_bytes, connections, retries, timeout_ms, connect_timeout_ms,
    retry_base_ms, readahead_bytes, spare_bytes, blksize, piece_bytes: the
    pieces of a created dataset's blocks, docs/FORMAT.md "Version 4", token,
    wcfs, verbose, tag: the generation a tag names) over the BLKMAP_*
    environment; create=True makes a missing dataset an empty one that the
    first commit creates; flat=True opens url as a plain object with one
    request (no dataset is looked for)."""
    if generation is None and not options:
        # bm_open reads the BLKMAP_* environment itself (and says what
        # does not parse): no options struct to make here.
        o, keep = None, []
    else:
        o, keep = _options(generation, options)
    burl = os.fsencode(url) if isinstance(url, str) else bytes(url)
    ptr = c_void_p()
    before = _lib.last_error(None)
    rc = _lib_.bm_open(byref(ptr), burl, None if o is None else byref(o))
    if rc < 0:
        raise _lib.error(rc, None, "open %s" % (url,), before)
    return Dataset(_Handle(ptr.value, keep))


class _Attrs(dict):
    """A dataset's user attributes: a dict whose changes (at the top level)
    are set on the dataset at once, for the next commit to publish."""

    def __init__(self, ds, items):
        super().__init__(items)
        self._ds = ds

    def _push(self):
        self._ds.attrs = dict(self)

    def __setitem__(self, k, v):
        super().__setitem__(k, v)
        self._push()

    def __delitem__(self, k):
        super().__delitem__(k)
        self._push()

    def update(self, *a, **kw):
        super().update(*a, **kw)
        self._push()

    def pop(self, *a):
        v = super().pop(*a)
        self._push()
        return v

    def popitem(self):
        v = super().popitem()
        self._push()
        return v

    def setdefault(self, k, v=None):
        v = super().setdefault(k, v)
        self._push()
        return v

    def clear(self):
        super().clear()
        self._push()


class Dataset:
    """An open dataset.  Made by blkmap.open().  Not for use by several
    threads at once for commit, discard, refresh, resize, attrs or close
    (the mappings themselves may be read and written by any thread)."""

    def __init__(self, handle):
        self._h = handle
        self._finalizer = weakref.finalize(self, handle.close)

    # ---- plumbing

    def _ptr(self):
        ptr = self._h.ptr
        if ptr is None or self._h.closing:
            raise ValueError("blkmap: the dataset is closed")
        return ptr

    def _call(self, what, fn, *args):
        ptr = self._ptr()
        before = _lib.last_error(ptr)
        rc = fn(ptr, *args)
        if rc < 0:
            raise _lib.error(rc, ptr, "%s: %s" % (self.url, what), before)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<blkmap.Dataset closed>"
        return "<blkmap.Dataset %s generation %d size %d>" % (self.url, self.generation, self.size)

    # ---- what it is

    @property
    def url(self):
        return _lib_.bm_url(self._ptr()).decode("utf-8", "replace")

    @property
    def size(self):
        """Bytes: what the next commit publishes (resize changes it)."""
        return _lib_.bm_size(self._ptr())

    @property
    def blksize(self):
        return _lib_.bm_blksize(self._ptr())

    @property
    def generation(self):
        return _lib_.bm_generation(self._ptr())

    @property
    def format_version(self):
        """The format version (docs/FORMAT.md) of the generation shown: 1
        to 4; None for a flat object or a dataset not committed yet."""
        return _lib_.bm_format_version(self._ptr()) or None

    @property
    def is_flat(self):
        """A plain object mapped read-only, not a dataset."""
        return bool(_lib_.bm_is_flat(self._ptr()))

    @property
    def writable(self):
        """Whether mappings are writable: not flat, not an old generation."""
        ptr = self._ptr()
        return not _lib_.bm_is_flat(ptr) and bool(_lib_.bm_is_latest(ptr))

    @property
    def closed(self):
        return self._h.ptr is None or self._h.closing

    @property
    def attrs(self):
        """The user attributes (a dict): those set since the last commit,
        else the generation's.  Setting a key, or the whole dict, sets them
        for the next commit to publish."""
        ptr = self._ptr()
        buf = ctypes.create_string_buffer(_lib.ATTRS_MAX + 1)
        n = _lib_.bm_attrs_get(ptr, buf, len(buf))
        if n < 0 or n > _lib.ATTRS_MAX:
            raise _lib.error(n if n < 0 else -1004, ptr, "%s: attrs" % self.url)
        return _Attrs(self, json.loads(buf.value.decode("utf-8")))

    @attrs.setter
    def attrs(self, value):
        if not isinstance(value, dict):
            raise TypeError("blkmap: attrs must be a dict, not %s" % type(value).__name__)
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self._call("attrs", _lib_.bm_attrs_set, text.encode("utf-8"))

    # ---- mapping

    def _map(self, offset, length):
        """A ctypes byte array over [offset, offset+length) that owns its
        mapping: unmapped when the array (and every view of it) is gone."""
        h = self._h
        with h.lock:
            ptr = self._ptr()
            addr, m = c_void_p(), c_void_p()
            before = _lib.last_error(ptr)
            rc = _lib_.bm_map(ptr, offset, length, byref(addr), byref(m))
            if rc < 0:
                raise _lib.error(rc, ptr, "%s: map" % self.url, before)
            h.nmaps += 1
        try:
            cls = type("_Mapped", (ctypes.c_ubyte * length,), {})
            buf = cls.from_address(addr.value)
        except BaseException:
            h.unmap(m.value)
            raise
        fin = weakref.finalize(buf, h.unmap, m.value)
        fin.atexit = False  # at exit the OS unmaps; views may outlive us
        return buf

    def _range(self, offset, length):
        size = self.size
        if not isinstance(offset, int) or offset < 0 or offset > size:
            raise InvalidError("%s: offset %r is not inside the dataset's %d bytes"
                               % (self.url, offset, size), -1001)
        if length is None:
            length = size - offset
        if not isinstance(length, int) or length < 0 or length > size - offset:
            raise InvalidError("%s: %r bytes at offset %d do not fit in the dataset's %d bytes"
                               % (self.url, length, offset, size), -1001)
        return length

    def map(self, offset=0, length=None):
        """A memoryview of bytes [offset, offset+length) (default: to the
        end), loaded on first access.  Writable unless the dataset is flat
        or an old generation.  A block that cannot be loaded kills the
        process with SIGBUS (the library prints why): use read() for a
        read that raises instead."""
        length = self._range(offset, length)
        writable = self.writable
        if length == 0:
            return memoryview(bytearray() if writable else b"")
        mv = memoryview(self._map(offset, length)).cast("B")
        return mv if writable else mv.toreadonly()

    def array(self, dtype=None, shape=None, offset=0, order=None):
        """A numpy array over the mapping.  dtype, shape and order default
        to the ones in attrs (what put_array stored), else bytes (uint8)
        and as many items as fit."""
        if _np is None:
            raise ImportError("blkmap: Dataset.array needs numpy (apt-get install python3-numpy); "
                              "Dataset.map gives a memoryview without it")
        attrs = self.attrs
        if dtype is None:
            dtype = _dtype_from_attrs(attrs.get("dtype")) if "dtype" in attrs else _np.uint8
        dtype = _np.dtype(dtype)
        if dtype.hasobject:
            raise TypeError("blkmap: a dtype with Python objects cannot map bytes")
        if order is None:
            order = attrs.get("order", "C")
        if order not in ("C", "F"):
            raise InvalidError("blkmap: order %r is not 'C' or 'F'" % (order,), -1001)
        size = self.size
        if shape is None and "shape" in attrs and offset == 0:
            shape = attrs["shape"]
        if shape is None:
            if dtype.itemsize == 0:
                raise InvalidError("blkmap: dtype %s has no size" % dtype, -1001)
            shape = (max(size - offset, 0) // dtype.itemsize,)
        shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
        if any(n < 0 for n in shape):
            raise InvalidError("blkmap: shape %r has a negative size" % (shape,), -1001)
        count = 1
        for n in shape:
            count *= n
        nbytes = count * dtype.itemsize
        length = self._range(offset, nbytes)
        writable = self.writable
        if length == 0:
            a = _np.zeros(shape, dtype, order=order)
            a.flags.writeable = writable
            return a
        buf = memoryview(self._map(offset, length)).cast("B")
        if not writable:
            buf = buf.toreadonly()  # the array cannot be made writeable again
        return _np.frombuffer(buf, dtype=dtype, count=count).reshape(shape, order=order)

    def read(self, offset, length):
        """Bytes [offset, offset+length) of the handle's generation (fewer
        at the end), fetched without mapping or caching: a failure raises."""
        if offset < 0 or length < 0:
            raise InvalidError("%s: read(%r, %r): negative" % (self.url, offset, length), -1001)
        buf = ctypes.create_string_buffer(length)
        ptr = self._ptr()
        before = _lib.last_error(ptr)
        n = _lib_.bm_read(ptr, offset, buf, length)
        if n < 0:
            raise _lib.error(n, ptr, "%s: read" % self.url, before)
        return buf.raw[:n]

    # ---- changes

    def commit(self):
        """Publishes what was written (and attrs set) as the next
        generation; returns its number (the same one when nothing changed).
        ConflictError when another writer published first: nothing was
        published, the changes stay (discard() or refresh after it)."""
        gen = c_uint64()
        self._call("commit", _lib_.bm_commit, byref(gen))
        return gen.value

    def discard(self):
        """Drops every change since the last commit (pages, attrs, size)."""
        self._call("discard", _lib_.bm_discard)

    def refresh(self):
        """Moves a handle without changes to the latest generation."""
        self._call("refresh", _lib_.bm_refresh)

    def resize(self, size):
        """Sets the size the next commit publishes (no mapping may exist:
        BusyError while arrays or memoryviews of this dataset are alive)."""
        if not isinstance(size, int) or size < 0:
            raise InvalidError("%s: size %r is not a number of bytes" % (self.url, size), -1001)
        self._call("resize to %d bytes" % size, _lib_.bm_resize, size)

    def write(self, offset, data):
        """Writes bytes at offset straight into the next generation, without
        mapping (what put uses); commit() publishes them."""
        with memoryview(data) as mv:
            self._write(offset, mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv)

    def _write(self, offset, mv):
        n = mv.nbytes
        if n == 0:
            return
        if not mv.readonly:
            buf = (ctypes.c_char * n).from_buffer(mv)
            self._call("write", _lib_.bm_write, offset, buf, n)
            return
        chunk = 1 << 24  # read-only memory: copied, a chunk at a time
        for at in range(0, n, chunk):
            piece = bytes(mv[at:at + chunk])
            self._call("write", _lib_.bm_write, offset + at, piece, len(piece))

    # ---- information

    def stats(self):
        """What the handle did: the counters of struct bm_stats."""
        st = _lib.Stats()
        _lib_.bm_stats(self._ptr(), byref(st))
        out = {}
        for name, _ in _lib.Stats._fields_:
            v = getattr(st, name)
            out[name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else (v if v is not None else "")
        return out

    def log(self):
        """The kept generations, newest first: dicts of generation, size,
        blksize, blocks (non-empty ones) and created ("" if not recorded).
        Listed through the store where it lists (blkmap-server, S3, WebDAV),
        as `blkmap log` does; on nginx looked up from the newest down."""
        ptr = self._ptr()
        if _lib_.bm_is_flat(ptr):
            return []
        gens = ctypes.POINTER(ctypes.c_uint64)()
        n = ctypes.c_size_t()
        self._call("log", _lib_.bm_generations, byref(gens), byref(n), None)
        try:
            numbers = [gens[i] for i in range(n.value)]
        finally:
            _lib.free(gens)
        out = []
        gi = _lib.GenerationInfo()
        for gen in numbers:
            try:
                self._call("log", _lib_.bm_generation_info, gen, byref(gi))
            except _lib.NotFoundError:
                continue  # dropped (gc) since it was listed
            out.append({"generation": gi.generation, "size": gi.size, "blksize": gi.blksize,
                        "blocks": gi.nblocks, "created": gi.created.decode("ascii", "replace")})
        return out

    def close(self):
        """Closes the dataset: dirty pages not committed are dropped.  While
        arrays or memoryviews of it are alive, the real close waits for the
        last of them; the dataset takes no more calls from now on."""
        self._h.close()


# ---- dtype in attrs ----------------------------------------------------------

def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def _dtype_from_attrs(d):
    if isinstance(d, list):  # a structured dtype, as numpy's .npy descr
        return _np.lib.format.descr_to_dtype([_tuples(f) for f in d])
    return _np.dtype(d)


def _dtype_to_attrs(dt):
    descr = _np.lib.format.dtype_to_descr(dt)
    return json.loads(json.dumps(descr))  # tuples to lists


# ---- whole datasets at once --------------------------------------------------

def _put(url, mv, blksize, attrs_update, piece_bytes=None):
    opts = {"create": True}
    if blksize is not None:
        opts["blksize"] = blksize
    if piece_bytes is not None:
        opts["piece_bytes"] = piece_bytes
    with open(url, **opts) as ds:
        if ds.is_flat:
            raise ReadOnlyError("%s is a plain object, not a dataset" % url, -1007)
        if blksize is not None and ds.blksize != blksize:
            raise InvalidError("%s has blocks of %d bytes, not %d" % (url, ds.blksize, blksize), -1001)
        ds.resize(mv.nbytes)
        ds._write(0, mv)
        attrs = dict(ds.attrs)
        attrs_update(attrs)
        ds.attrs = attrs
        return ds.commit()


def put(url, data_or_path, blksize=None, piece_bytes=None):
    """Stores bytes (any bytes-like object) or a file's content (a path) as
    the next generation of the dataset at url, creating it if needed (with
    blocks of blksize bytes, default the BLKMAP_BLKSIZE one, each with a sum
    per piece of piece_bytes, by default 16 KiB for blocks above 64 KiB:
    docs/FORMAT.md, "Version 4"); only changed
    blocks are uploaded.  The dtype, shape and order a put_array stored
    are removed from attrs (the other attributes stay).  Returns the new
    generation."""
    def drop(attrs):
        for k in _ARRAY_KEYS:
            attrs.pop(k, None)
    if isinstance(data_or_path, (str, os.PathLike)):
        import mmap
        with builtins_open(data_or_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return _put(url, memoryview(b""), blksize, drop, piece_bytes)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                with memoryview(mm) as mv:
                    return _put(url, mv, blksize, drop, piece_bytes)
    with memoryview(data_or_path) as mv:
        return _put(url, mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv, blksize, drop,
                    piece_bytes)


def put_array(url, array, blksize=None, piece_bytes=None):
    """Stores a numpy array's bytes as the next generation of the dataset at
    url and its dtype, shape and order in attrs, so that
    blkmap.open(url).array() gives it back.  Returns the new generation."""
    if _np is None:
        raise ImportError("blkmap.put_array needs numpy (apt-get install python3-numpy)")
    a = _np.asarray(array)
    if a.dtype.hasobject:
        raise TypeError("blkmap.put_array: arrays of Python objects have no bytes to store")
    if a.flags.c_contiguous:
        order, flat = "C", a
    elif a.flags.f_contiguous:
        order, flat = "F", a.T
    else:
        order, flat = "C", _np.ascontiguousarray(a)
    desc = {"dtype": _dtype_to_attrs(a.dtype), "shape": list(a.shape), "order": order}
    raw = flat.reshape(-1).view(_np.uint8) if flat.size else _np.zeros(0, _np.uint8)
    return _put(url, memoryview(raw), blksize, lambda attrs: attrs.update(desc), piece_bytes)


import builtins as _builtins  # noqa: E402  (open is ours in this module)
builtins_open = _builtins.open
