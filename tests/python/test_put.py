# tests/python/test_put.py — blkmap.put and blkmap.put_array: bytes, files
# and arrays of any dtype, shape and order come back from open().array();
# a second put uploads only the blocks that changed; put drops the array
# description put_array stored, keeping the other attributes; piece_bytes
# makes a format 4 dataset, whose later puts keep its pieces.
import numpy as np
import pytest

import blkmap

BS = 4096


@pytest.mark.parametrize("array", [
    np.arange(3 * 5 * 7, dtype=">i4").reshape(3, 5, 7),
    np.asfortranarray(np.arange(600, dtype=np.float32).reshape(20, 30)),
    np.arange(1000, dtype=np.int16)[::3],  # not contiguous: stored C
    np.zeros(10, dtype=[("t", "<f8"), ("n", "u1", (3,))]),
    np.array(7.5),  # zero-dimensional
    np.zeros((0, 4)),
], ids=["big-endian-3d", "fortran", "strided", "structured", "scalar", "empty"])
def test_put_array_comes_back_from_array(url, array):
    if array.dtype.names:
        array["t"] = np.arange(10) * 0.5
        array["n"] = np.arange(30).reshape(10, 3)
    gen = blkmap.put_array(url, array, blksize=BS)
    assert gen == 1
    with blkmap.open(url) as ds:
        got = ds.array()
        assert got.dtype == array.dtype
        assert got.shape == array.shape
        assert np.array_equal(got, array)
        if array.ndim == 2 and array.flags.f_contiguous and not array.flags.c_contiguous:
            assert ds.attrs["order"] == "F" and got.flags.f_contiguous
        assert ds.size == array.nbytes


def test_put_bytes_and_files_and_only_changed_blocks_upload(url, tmp_path):
    data = bytearray(np.random.default_rng(1).integers(0, 256, 10 * BS, dtype=np.uint8).tobytes())
    assert blkmap.put(url, bytes(data), blksize=BS) == 1
    data[5 * BS] ^= 0xFF
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    assert blkmap.put(url, str(f)) == 2
    with blkmap.open(url) as ds:
        assert bytes(ds.map()) == bytes(data)
        assert ds.log()[0]["generation"] == 2
    # Through a handle: one block differs, one block is uploaded.
    with blkmap.open(url) as ds:
        data[0] ^= 1
        ds.write(0, data)
        assert ds.commit() == 3
        assert ds.stats()["uploaded_blocks"] == 1
    with pytest.raises(blkmap.InvalidError, match="blocks of 4096 bytes, not 8192"):
        blkmap.put(url, b"x", blksize=8192)


def test_put_with_piece_bytes_makes_format_4_and_later_puts_keep_it(url):
    data = bytearray(np.random.default_rng(2).integers(0, 256, 5 * 65536 + 100, dtype=np.uint8).tobytes())
    assert blkmap.put(url, bytes(data), blksize=65536, piece_bytes=16384) == 1
    with blkmap.open(url) as ds:
        assert ds.format_version == 4
        assert bytes(ds.read(0, len(data))) == bytes(data)
    data[3 * 65536 + 20000] ^= 0x5A
    assert blkmap.put(url, bytes(data), piece_bytes=8192) == 2  # keeps 16384
    with blkmap.open(url) as ds:
        assert ds.format_version == 4
        assert bytes(ds.read(3 * 65536 + 16384, 8192)) == bytes(data[3 * 65536 + 16384:3 * 65536 + 24576])
    with pytest.raises(blkmap.InvalidError, match="a power of two from 4096"):
        blkmap.put(url + "-bad", b"x" * 10, blksize=65536, piece_bytes=3000)


def test_put_drops_the_array_description_and_keeps_other_attrs(url):
    blkmap.put_array(url, np.ones(10), blksize=BS)
    with blkmap.open(url) as ds:
        ds.attrs["units"] = "m"
        ds.commit()
    blkmap.put(url, b"\x01" * 16)
    with blkmap.open(url) as ds:
        assert ds.attrs == {"units": "m"}
        assert ds.array().dtype == np.uint8 and ds.array().shape == (16,)
        assert ds.array(dtype="<u2", shape=(2, 4)).shape == (2, 4)
        with pytest.raises(blkmap.InvalidError, match="do not fit"):
            ds.array(dtype="<f8", shape=(3,))
