/* tests/abi_layout.c — prints the layout of blkmap.h's public structs as
 * this compiler lays them out: "STRUCT size N" and "STRUCT.FIELD offset N"
 * lines.  The Python package declares the same structs with ctypes
 * (python/blkmap/_lib.py); tests/python/test_abi.py compares the two, so a
 * field added to blkmap.h without its ctypes twin fails make check instead
 * of letting the library write past a Python struct.  Owns nothing.
 */
#include <stddef.h>
#include <stdio.h>

#include <blkmap/blkmap.h>

#define SIZE(s) printf("%s size %zu\n", #s, sizeof(struct s))
#define FIELD(s, f) printf("%s.%s offset %zu\n", #s, #f, offsetof(struct s, f))

int main(void)
{
	SIZE(bm_options);
	FIELD(bm_options, cache_bytes);
	FIELD(bm_options, token);
	FIELD(bm_options, connect_timeout_ms);
	FIELD(bm_options, timeout_ms);
	FIELD(bm_options, retries);
	FIELD(bm_options, retry_base_ms);
	FIELD(bm_options, connections);
	FIELD(bm_options, readahead_bytes);
	FIELD(bm_options, spare_bytes);
	FIELD(bm_options, blksize);
	FIELD(bm_options, generation);
	FIELD(bm_options, flags);
	FIELD(bm_options, verbose);
	FIELD(bm_options, wcfs);
	FIELD(bm_options, commit_hook);
	FIELD(bm_options, commit_hook_arg);
	FIELD(bm_options, tag);
	FIELD(bm_options, piece_bytes);

	SIZE(bm_stats);
	FIELD(bm_stats, mode);
	FIELD(bm_stats, mode_why);
	FIELD(bm_stats, fetched_blocks);
	FIELD(bm_stats, fetched_bytes);
	FIELD(bm_stats, hole_blocks);
	FIELD(bm_stats, cache_hits);
	FIELD(bm_stats, cache_misses);
	FIELD(bm_stats, readahead_blocks);
	FIELD(bm_stats, retries);
	FIELD(bm_stats, uploaded_blocks);
	FIELD(bm_stats, uploaded_bytes);
	FIELD(bm_stats, commits);
	FIELD(bm_stats, conflicts);
	FIELD(bm_stats, ram_bytes);
	FIELD(bm_stats, engine);

	SIZE(bm_generation_info);
	FIELD(bm_generation_info, generation);
	FIELD(bm_generation_info, size);
	FIELD(bm_generation_info, blksize);
	FIELD(bm_generation_info, nblocks);
	FIELD(bm_generation_info, created);
	return 0;
}
