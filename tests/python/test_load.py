# tests/python/test_load.py — where the package finds libblkmap (the build
# tree's here; BLKMAP_LIBRARY overrides, and a wrong one is an ImportError
# naming it) and that it works without numpy (memoryviews; array() says
# what is missing).
import os
import subprocess
import sys

import blkmap
import blkmap._lib


def run(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=e)


def test_the_build_tree_library_is_found_next_to_the_package():
    here = os.path.dirname(os.path.abspath(blkmap.__file__))
    want = os.path.normpath(os.path.join(here, "..", "..", "client", ".libs", "libblkmap.so.0"))
    assert blkmap._lib.lib._name == want


def test_blkmap_library_overrides_and_a_wrong_one_is_named():
    lib = blkmap._lib.lib._name
    out = run("import blkmap._lib as l; print(l.lib._name)", BLKMAP_LIBRARY=lib)
    assert out.returncode == 0 and out.stdout.strip() == lib
    out = run("import blkmap", BLKMAP_LIBRARY="/nonexistent/libblkmap.so")
    assert out.returncode == 1
    assert "ImportError: blkmap: cannot load BLKMAP_LIBRARY=/nonexistent/libblkmap.so" in out.stderr


def test_without_numpy_maps_give_memoryviews(url):
    blkmap.put(url, b"no numpy here", blksize=4096)
    code = ("import sys; sys.modules['numpy'] = None\n"
            "import blkmap\n"
            "with blkmap.open(%r) as ds:\n"
            "    print(bytes(ds.map(3, 5)).decode())\n"
            "    try:\n"
            "        ds.array()\n"
            "    except ImportError as e:\n"
            "        print(e)\n" % url)
    out = run(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "numpy"
    assert "needs numpy" in lines[1]
