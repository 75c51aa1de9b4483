# tests/python/test_examples.py — examples/mean_over_dataset.py on a small
# dataset four times larger than its cache: it prints numpy's mean, min
# and max of the whole data, fetched every byte, and the cache never held
# more than its budget.
import os
import subprocess
import sys

import numpy as np

import blkmap


def test_mean_over_a_dataset_larger_than_the_cache(url, srcdir):
    values = np.random.default_rng(3).normal(10.0, 2.0, 512 * 1024)  # 4 MiB
    blkmap.put_array(url, values, blksize=64 * 1024)
    cache = 1 << 20
    prog = os.path.join(srcdir, "examples", "mean_over_dataset.py")
    out = subprocess.run([sys.executable, prog, url, "--cache-bytes", str(cache)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = dict(kv.split("=") for kv in out.stdout.split())
    assert int(got["n"]) == values.size
    assert np.isclose(float(got["mean"]), values.mean(), rtol=1e-12)
    assert float(got["min"]) == values.min() and float(got["max"]) == values.max()
    assert int(got["fetched_bytes"]) >= values.nbytes
    assert 0 < int(got["max_ram_bytes"]) <= cache


def test_the_example_says_what_is_wrong_in_one_line(server):
    prog = os.path.join(os.environ.get("BLKMAP_TEST_SRCDIR", "."), "examples", "mean_over_dataset.py")
    out = subprocess.run([sys.executable, prog, server + "/py/none-here"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "no dataset" in out.stderr
