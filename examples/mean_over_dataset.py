#!/usr/bin/python3
"""mean_over_dataset.py — the mean, minimum and maximum of a dataset of
float64 on a blkmap server, computed over a mapping with a RAM cache smaller
than the dataset: blocks load as the slices reach them and the ones already
used are evicted, so any size fits in --cache-bytes.

    mean_over_dataset.py URL [--cache-bytes BYTES]
    mean_over_dataset.py URL --create N     # first store N random float64

Prints one line: n= mean= min= max= and what it took (bytes fetched, RAM
held at most by the cache).
"""
import argparse
import sys

import numpy as np

import blkmap


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("--cache-bytes", type=int, default=8 << 20,
                   help="RAM budget of the page cache (default 8 MiB)")
    p.add_argument("--create", type=int, metavar="N",
                   help="store N random float64 at URL first")
    p.add_argument("--blksize", type=int, default=1 << 20,
                   help="block size of a created dataset (default 1 MiB)")
    args = p.parse_args()

    if args.create is not None:
        values = np.random.default_rng(0).normal(280.0, 15.0, args.create)
        blkmap.put_array(args.url, values, blksize=args.blksize)

    try:
        ds = blkmap.open(args.url, cache_bytes=args.cache_bytes)
    except blkmap.Error as e:
        sys.exit("mean_over_dataset: %s" % e)
    with ds:
        a = ds.array(dtype="<f8", shape=(ds.size // 8,))
        if a.size == 0:
            sys.exit("mean_over_dataset: %s holds no float64" % args.url)
        # Slices of an eighth of the cache: each is loaded, reduced, and
        # left for the cache to evict.
        step = max(ds.blksize, args.cache_bytes // 8) // 8
        total, lo, hi, ram = 0.0, np.inf, -np.inf, 0
        for i in range(0, a.size, step):
            part = a[i:i + step]
            total += float(part.sum())
            lo = min(lo, float(part.min()))
            hi = max(hi, float(part.max()))
            ram = max(ram, ds.stats()["ram_bytes"])
        st = ds.stats()
        print("n=%d mean=%.17g min=%.17g max=%.17g fetched_bytes=%d max_ram_bytes=%d "
              "cache_bytes=%d" % (a.size, total / a.size, lo, hi, st["fetched_bytes"],
                                  ram, args.cache_bytes))


if __name__ == "__main__":
    main()
