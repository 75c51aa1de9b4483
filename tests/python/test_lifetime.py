# tests/python/test_lifetime.py — arrays and memoryviews keep their mapping
# alive: close() while they exist defers the real close until the last one
# goes (the bytes stay readable, never a dangling pointer); afterwards the
# handle is closed; with no view, close() is immediate; a closed dataset
# refuses calls.  A view's own mapping is unmapped when it goes.
import gc
import subprocess
import sys

import numpy as np
import pytest

import blkmap

BS = 4096


def test_close_with_live_views_waits_for_the_last_one(url):
    a = np.arange(4 * BS // 8, dtype="<f8")
    blkmap.put_array(url, a, blksize=BS)
    ds = blkmap.open(url)
    arr = ds.array()
    mv = ds.map(BS, BS)
    part = arr[100:200]  # a view of a view
    ds.close()
    assert ds.closed
    with pytest.raises(ValueError, match="closed"):
        ds.map()
    with pytest.raises(ValueError, match="closed"):
        ds.commit()
    h = ds._h
    assert h.ptr is not None and h.nmaps == 2  # not closed yet: views alive
    # Every byte still there (a block not loaded before the close loads now).
    assert np.array_equal(arr, a)
    assert bytes(mv) == a.tobytes()[BS:2 * BS]
    del arr
    gc.collect()
    assert h.ptr is not None  # part still points into the mapping
    assert np.array_equal(part, a[100:200])
    del part
    gc.collect()
    assert h.nmaps == 1 and h.ptr is not None
    mv.release()
    del mv
    gc.collect()
    assert h.nmaps == 0 and h.ptr is None  # the last view went: closed


def test_close_without_views_is_immediate_and_views_unmap_when_they_go(url):
    blkmap.put(url, b"v" * (2 * BS), blksize=BS)
    with blkmap.open(url) as ds:
        h = ds._h
        for _ in range(50):
            v = ds.map()
            assert v[0] == ord("v")
        del v
        gc.collect()
        assert h.nmaps == 0  # each view's mapping went with it
        ds.resize(BS)  # no mapping left: allowed
    assert h.ptr is None


def test_a_dataset_dropped_without_close_closes_when_its_views_go(url):
    blkmap.put(url, b"w" * BS, blksize=BS)
    ds = blkmap.open(url)
    h = ds._h
    mv = ds.map()
    del ds
    gc.collect()
    assert h.ptr is not None and bytes(mv[:2]) == b"ww"
    del mv
    gc.collect()
    assert h.ptr is None


def test_a_process_exits_cleanly_with_views_alive(url, tmp_path):
    blkmap.put(url, b"x" * BS, blksize=BS)
    prog = ("import blkmap, sys\n"
            "ds = blkmap.open(%r)\n"
            "keep = ds.array()\n"
            "ds.close()\n"
            "print(int(keep.sum()))\n" % url)
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "%d\n" % (ord("x") * BS)
