"""The ctypes twins of blkmap.h's structs (python/blkmap/_lib.py) have the
C layout: the same size and every field at the same offset, as
tests/abi_layout (compiled from blkmap.h) prints them.  A struct that grows
in C without its twin would let the library write past Python's copy."""

import os
import subprocess

import pytest

from blkmap import _lib

TWINS = {
    "bm_options": _lib.Options,
    "bm_stats": _lib.Stats,
    "bm_generation_info": _lib.GenerationInfo,
}


def c_layout():
    prog = os.environ.get("BLKMAP_TEST_ABI_LAYOUT")
    if not prog or not os.path.exists(prog):
        pytest.skip("tests/abi_layout not built (BLKMAP_TEST_ABI_LAYOUT unset)")
    out = subprocess.run([prog], check=True, capture_output=True, text=True).stdout
    layout = {}
    for line in out.splitlines():
        name, what, value = line.split()
        layout[(name, what)] = int(value)
    return layout


@pytest.mark.parametrize("struct", sorted(TWINS))
def test_ctypes_struct_has_the_c_layout(struct):
    layout = c_layout()
    twin = TWINS[struct]
    assert ctypes_size(twin) == layout[(struct, "size")], \
        "%s: ctypes size %d, C size %d" % (struct, ctypes_size(twin), layout[(struct, "size")])
    c_fields = {name.split(".", 1)[1]: off for (name, what), off in layout.items()
                if what == "offset" and name.startswith(struct + ".")}
    py_fields = {f: getattr(twin, f).offset for f, _ in twin._fields_}
    assert py_fields == c_fields


def ctypes_size(t):
    import ctypes
    return ctypes.sizeof(t)
