# tests/python/test_dataset.py — the Dataset API against blkmap-server:
# what a dataset is (url, size, blksize, generation, format_version, is_flat), arrays and
# memoryviews over mappings that load and write the real bytes, commit,
# discard, refresh, resize, attrs, stats, log, read, and each library
# error as its own exception class with the library's one-line message.
import json
import subprocess
import urllib.request

import numpy as np
import pytest

import blkmap

BS = 4096


def put_bytes(url, data, blksize=BS):
    return blkmap.put(url, data, blksize=blksize)


def test_open_gives_what_the_dataset_is(url):
    data = bytes(range(256)) * 40  # 10240 bytes: 3 blocks, the last short
    assert put_bytes(url, data) == 1
    with blkmap.open(url) as ds:
        assert ds.url == url
        assert ds.size == len(data)
        assert ds.blksize == BS
        assert ds.generation == 1
        assert ds.is_flat is False
        assert ds.attrs == {}
        assert bytes(ds.map()) == data
        assert bytes(ds.map(100, 5000)) == data[100:5100]
        assert ds.read(10000, 1000) == data[10000:]
        assert ds.read(len(data), 10) == b""


def test_format_version_is_the_generations_and_none_without_one(server, url):
    assert put_bytes(url, b"x" * 5000) == 1
    with blkmap.open(url) as ds:
        assert ds.format_version == 2  # what blkmap writes (docs/FORMAT.md)
    with blkmap.open(url + "-new", create=True) as ds:
        assert ds.format_version is None  # nothing committed yet
    req = urllib.request.Request(server + "/py/flat-version.bin", data=b"flat", method="PUT")
    urllib.request.urlopen(req).close()
    with blkmap.open(server + "/py/flat-version.bin") as ds:
        assert ds.format_version is None


def test_array_writes_commit_as_the_next_generation(url):
    a = np.arange(10000, dtype="<f8")
    assert blkmap.put_array(url, a, blksize=BS) == 1
    with blkmap.open(url) as ds:
        v = ds.array()
        assert v.dtype == np.dtype("<f8") and v.shape == (10000,)
        assert v.flags.writeable
        assert np.array_equal(v, a)
        v[5000:5010] = -1
        assert ds.commit() == 2
        assert ds.generation == 2
        assert ds.commit() == 2  # nothing changed since
        del v
    want = a.copy()
    want[5000:5010] = -1
    with blkmap.open(url) as ds:
        assert np.array_equal(ds.array(), want)
    with blkmap.open(url, generation=1) as old:
        v = old.array()
        assert np.array_equal(v, a)
        assert not v.flags.writeable  # an old generation maps read-only
        assert old.map().readonly
        assert [g["generation"] for g in old.log()] == [1]
    with blkmap.open(url) as ds:
        log = ds.log()
        assert [g["generation"] for g in log] == [2, 1]
        assert log[0]["size"] == a.nbytes and log[0]["blksize"] == BS
        assert log[0]["blocks"] == (a.nbytes + BS - 1) // BS
        assert log[0]["created"].endswith("Z")


def test_memoryview_writes_and_discard(url):
    put_bytes(url, b"a" * (2 * BS))
    with blkmap.open(url) as ds:
        mv = ds.map()
        assert not mv.readonly
        mv[0:3] = b"xyz"
        assert ds.read(0, 3) == b"aaa"  # read() shows the published bytes
        ds.discard()
        assert bytes(mv[0:3]) == b"aaa"
        mv[BS:BS + 2] = b"!!"
        assert ds.commit() == 2
        assert ds.read(BS, 3) == b"!!a"


def test_attrs_set_alone_publish_and_carry_over(url):
    put_bytes(url, b"z" * BS)
    with blkmap.open(url) as ds:
        ds.attrs["units"] = "K"
        ds.attrs["scale"] = [1, 2.5]
        assert ds.attrs == {"units": "K", "scale": [1, 2.5]}
        assert ds.commit() == 2
        ds.map()[0:1] = b"y"
        assert ds.commit() == 3
    with blkmap.open(url) as ds:
        assert ds.attrs == {"units": "K", "scale": [1, 2.5]}
        del ds.attrs["units"]
        ds.attrs = dict(ds.attrs, more={"é": None})
        assert ds.commit() == 4
    with blkmap.open(url) as ds:
        assert ds.attrs == {"scale": [1, 2.5], "more": {"é": None}}
    out = subprocess.run([blkmap_cli(), "attr", url, "scale"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "[1,2.5]\n"
    with blkmap.open(url) as ds:
        with pytest.raises(TypeError):
            ds.attrs = [1]
        with pytest.raises(blkmap.InvalidError, match="above the limit of 65536"):
            ds.attrs = {"k": "v" * 70000}
        with pytest.raises(ValueError):
            ds.attrs = {"x": float("nan")}  # not JSON
        assert ds.commit() == 4


def blkmap_cli():
    import os
    return os.path.join(os.environ.get("top_builddir", "."), "blkmap")


def test_conflict_raises_conflict_error_and_keeps_changes(url):
    put_bytes(url, b"q" * BS)
    a, b = blkmap.open(url), blkmap.open(url)
    try:
        b.map()[0:1] = b"B"
        assert b.commit() == 2
        mv = a.map()
        mv[0:1] = b"A"
        with pytest.raises(blkmap.ConflictError) as e:
            a.commit()
        assert url in str(e.value) and "\n" not in str(e.value)
        assert e.value.code == -1006
        assert bytes(mv[0:1]) == b"A"  # kept
        with pytest.raises(blkmap.BusyError):
            a.refresh()  # changes first
        a.discard()
        del mv
        a.refresh()
        assert a.generation == 2 and a.read(0, 1) == b"B"
    finally:
        a.close()
        b.close()


def test_resize_and_refresh(url):
    put_bytes(url, b"r" * (3 * BS))
    with blkmap.open(url) as ds, blkmap.open(url) as other:
        ds.resize(BS + 10)
        assert ds.size == BS + 10
        assert ds.commit() == 2
        assert other.size == 3 * BS
        other.refresh()
        assert other.size == BS + 10 and other.generation == 2
        mv = other.map()
        with pytest.raises(blkmap.BusyError, match="mapped"):
            other.resize(10)  # a view is alive
        del mv
        other.resize(0)
        assert other.commit() == 3
        assert other.size == 0 and bytes(other.map()) == b""


def test_stats_count_fetches(url):
    put_bytes(url, bytes(BS) + b"x" * BS)  # a hole, then a block
    with blkmap.open(url, readahead_bytes=0) as ds:
        v = ds.map()
        assert v[BS] == ord("x") and v[0] == 0
        st = ds.stats()
        assert st["mode"] == "loadblk"
        assert st["fetched_blocks"] == 1 and st["fetched_bytes"] == BS
        assert st["hole_blocks"] == 1
        assert set(st) >= {"cache_hits", "cache_misses", "uploaded_bytes", "commits", "ram_bytes"}


def test_flat_object_maps_read_only(server):
    data = b"flat bytes " * 1000
    req = urllib.request.Request(server + "/py/flat.bin", data=data, method="PUT")
    urllib.request.urlopen(req).close()
    with blkmap.open(server + "/py/flat.bin") as ds:
        assert ds.is_flat and ds.size == len(data)
        assert ds.map().readonly
        assert bytes(ds.map()) == data
        a = ds.array()
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a.flags.writeable = True  # read-only memory stays read-only
        with pytest.raises(blkmap.ReadOnlyError):
            ds.commit()
        with pytest.raises(blkmap.ReadOnlyError):
            ds.attrs = {"a": 1}
        assert ds.log() == []


def test_flat_true_opens_a_plain_object_and_nothing_else(server, url):
    data = b"plain bytes " * 500
    req = urllib.request.Request(server + "/py/flat2.bin", data=data, method="PUT")
    urllib.request.urlopen(req).close()
    with blkmap.open(server + "/py/flat2.bin", flat=True) as ds:
        assert ds.is_flat and ds.size == len(data)
        assert bytes(ds.map()) == data
    put_bytes(url, b"x" * BS)
    with pytest.raises(blkmap.NotFoundError, match="opened as a plain object"):
        blkmap.open(url, flat=True)  # a dataset's name is no object
    with pytest.raises(blkmap.InvalidError, match="BM_OPEN_FLAT"):
        blkmap.open(server + "/py/flat2.bin", flat=True, create=True)


def test_each_error_code_is_its_own_exception_with_the_library_message(server, url):
    with pytest.raises(blkmap.NotFoundError) as e:
        blkmap.open(server + "/py/no/such/dataset")
    assert "no dataset" in str(e.value) and server in str(e.value)
    with pytest.raises(blkmap.InvalidError, match="not an http"):
        blkmap.open("ftp://x/y")
    with pytest.raises(TypeError, match="unknown option 'cash_bytes'"):
        blkmap.open(url, cash_bytes=1)
    with pytest.raises(blkmap.InvalidError, match="bad options"):
        blkmap.open(url, connections=0)
    req = urllib.request.Request(server + "/py/badman/manifest.json", data=b'{"format": 1}', method="PUT")
    urllib.request.urlopen(req).close()
    with pytest.raises(blkmap.FormatError, match="format"):
        blkmap.open(server + "/py/badman")
    put_bytes(url, b"e" * BS)
    with pytest.raises(blkmap.NotFoundError, match="generation 9"):
        blkmap.open(url, generation=9)
    # A block object damaged on the server: read() raises, no SIGBUS.
    man = json.load(urllib.request.urlopen(url + "/manifest.json"))
    if man["version"] == 1:
        key = man["blocks"][0]["key"]
    else:
        # Format 2 (docs/FORMAT.md): one block, so the root is the leaf;
        # its first entry (after the 8-byte header) is a slot byte and
        # the block's 16-byte sum.
        page = urllib.request.urlopen(url + "/index/" + man["root"]).read()
        key = "blocks/" + page[9:25].hex()
    req = urllib.request.Request(url + "/" + key, data=b"E" * BS, method="PUT")
    urllib.request.urlopen(req).close()
    with blkmap.open(url, retries=1, retry_base_ms=1) as ds:
        with pytest.raises(blkmap.ChecksumError, match="checksum mismatch") as e:
            ds.read(0, 10)
        assert "\n" not in str(e.value)
    assert issubclass(blkmap.ConflictError, blkmap.Error)
    for name in ("ConflictError", "NotFoundError", "AuthError", "ReadOnlyError", "ChecksumError",
                 "FormatError", "HTTPError", "BusyError", "InvalidError", "ChangedError",
                 "OutOfMemoryError", "LocalIOError"):
        assert issubclass(getattr(blkmap, name), blkmap.Error)


def test_auth_error_from_a_server_that_wants_a_token(tmp_path):
    import os
    server = os.path.join(os.environ.get("top_builddir", "."), "blkmap-server")
    p = subprocess.Popen([server, "--memory", "--listen", "127.0.0.1:0", "--token", "s3cret"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()  # the server says its URL when it listens
        assert line.startswith("blkmap-server: serving "), line
        base = line.split()[-1]
        with pytest.raises(blkmap.AuthError):
            blkmap.open(base + "/x", create=True)
        ds = blkmap.open(base + "/x", create=True, token="s3cret")
        ds.attrs = {"ok": True}
        assert ds.commit() == 1
        ds.close()
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_log_lists_generations_past_a_long_run_of_dropped_ones(url):
    # Generations 2..70 dropped (as gc drops them) and 1 kept: a walk from
    # the newest down gives up after BM_LOG_MAX_MISSING (64) missing ones;
    # the log lists the store instead and finds generation 1.
    put_bytes(url, b"a" * BS)
    with blkmap.open(url) as ds:
        for i in range(70):
            ds.write(0, bytes([i]))
            ds.commit()
        assert ds.generation == 71
    for gen in range(2, 71):
        req = urllib.request.Request("%s/gen/%d.json" % (url, gen), method="DELETE")
        with urllib.request.urlopen(req) as r:
            assert r.status in (200, 204)
    with blkmap.open(url) as ds:
        assert [g["generation"] for g in ds.log()] == [71, 1]
