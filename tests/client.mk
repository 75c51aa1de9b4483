# tests/client.mk — libblkmap integration tests (issue 4) and the client
# benchmark.  Each test starts a real server on loopback and drives it
# through the public API and the `blkmap` CLI; tests/client_util.c holds
# what they share.  The parameterised suites (roundtrip, flat, changes, reads...) are built
# once per kind of server (-DTC_KIND, client_util.h's tc_kinds): a kind
# that is not installed makes its programs SKIP with the reason.
CLIENT_TEST_SOURCES = tests/client_util.c tests/client_util.h \
	tests/test_server_util.c tests/test_server_util.h \
	tests/rgw_util.c tests/rgw_util.h
CLIENT_TEST_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS) \
	$(CMOCKA_CFLAGS)
CLIENT_TEST_LDADD = client/libblkmap.la $(CURL_LIBS) $(JANSSON_LIBS) \
	$(CMOCKA_LIBS)
CLIENT_TEST_DEPS = blkmap-server$(EXEEXT) blkmap$(EXEEXT)

# The longest, longest first (LONG_TESTS in Makefile.am).
CLIENT_LONG_TESTS = \
	tests/test_client_gc_rgw \
	tests/test_client_gc_apache \
	tests/test_cli_history \
	tests/test_client_gc \
	tests/test_client_v2_rgw \
	tests/test_client_roundtrip_rgw \
	tests/test_client_gc_nginx \
	tests/test_cli_errors
CLIENT_TESTS = \
	tests/test_client_roundtrip \
	tests/test_client_flat \
	tests/test_client_changes \
	tests/test_client_faults \
	tests/test_client_bad \
	tests/test_client_readahead \
	tests/test_client_roundtrip_nginx \
	tests/test_client_roundtrip_apache \
	tests/test_client_flat_nginx \
	tests/test_client_flat_apache \
	tests/test_client_changes_nginx \
	tests/test_client_changes_apache \
	tests/test_store_http \
	tests/test_store_http_nginx \
	tests/test_store_http_apache \
	tests/test_index_load \
	tests/test_index_load_nginx \
	tests/test_client_v2 \
	tests/test_client_v2_nginx \
	tests/test_client_v2_apache \
	tests/test_client_v3 \
	tests/test_client_v3_nginx \
	tests/test_client_v3_apache \
	tests/test_client_v3_rgw \
	tests/test_client_flat_rgw \
	tests/test_client_changes_rgw \
	tests/test_store_rgw \
	tests/test_client_cli \
	tests/test_client_reads \
	tests/test_client_reads_nginx \
	tests/test_client_reads_apache \
	tests/test_client_reads_rgw \
	tests/test_client_attrs \
	tests/test_client_errors \
	tests/test_store_answers \
	tests/test_client_edges \
	tests/test_demos \
	tests/test_client_lists
check_PROGRAMS += $(CLIENT_LONG_TESTS) $(CLIENT_TESTS)
LONG_TESTS += $(CLIENT_LONG_TESTS)
TESTS += $(CLIENT_TESTS)

# The manifest parser alone (no server): mutated manifests.
check_PROGRAMS += tests/test_manifest
TESTS += tests/test_manifest

# How many GETs a streamed `blkmap sum` keeps in flight (client/ramp.c
# alone: fed rates and round trips, no server).
check_PROGRAMS += tests/test_cli_ramp
TESTS += tests/test_cli_ramp
tests_test_cli_ramp_SOURCES = tests/test_cli_ramp.c client/ramp.c
tests_test_cli_ramp_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_test_cli_ramp_LDADD = $(CMOCKA_LIBS)

# How many block GETs a dataset's read-ahead keeps in flight
# (bm_ramp_epoch in client/ramp.c alone: fed rates and needs, no
# server).
check_PROGRAMS += tests/test_readahead_ramp
TESTS += tests/test_readahead_ramp
tests_test_readahead_ramp_SOURCES = tests/test_readahead_ramp.c
tests_test_readahead_ramp_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_readahead_ramp_LDADD = $(CLIENT_TEST_LDADD)
tests_test_readahead_ramp_LDFLAGS = $(IN_PLACE_LINK)

# The wcfs mirror's URL and mountpoint naming (no server).
check_PROGRAMS += tests/test_wcfs_path
TESTS += tests/test_wcfs_path
tests_test_wcfs_path_SOURCES = tests/test_wcfs_path.c
tests_test_wcfs_path_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_wcfs_path_LDADD = $(CLIENT_TEST_LDADD)
tests_test_wcfs_path_LDFLAGS = $(IN_PLACE_LINK)
tests_test_manifest_SOURCES = tests/test_manifest.c
tests_test_manifest_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_manifest_LDADD = $(CLIENT_TEST_LDADD)
tests_test_manifest_LDFLAGS = $(IN_PLACE_LINK)

tests_test_client_roundtrip_SOURCES = tests/test_client_roundtrip.c $(CLIENT_TEST_SOURCES)
tests_test_client_roundtrip_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_roundtrip_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_roundtrip_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_roundtrip_DEPENDENCIES = $(CLIENT_TEST_DEPS)

tests_test_client_changes_SOURCES = tests/test_client_changes.c $(CLIENT_TEST_SOURCES)
tests_test_client_changes_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_changes_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_changes_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_changes_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_flat_SOURCES = tests/test_client_flat.c $(CLIENT_TEST_SOURCES)
tests_test_client_flat_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_flat_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_flat_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_flat_DEPENDENCIES = $(CLIENT_TEST_DEPS)

tests_test_client_faults_SOURCES = tests/test_client_faults.c $(CLIENT_TEST_SOURCES)
tests_test_client_faults_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_faults_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_faults_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_faults_DEPENDENCIES = $(CLIENT_TEST_DEPS)

tests_test_client_bad_SOURCES = tests/test_client_bad.c $(CLIENT_TEST_SOURCES)
tests_test_client_bad_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_bad_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_bad_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_bad_DEPENDENCIES = $(CLIENT_TEST_DEPS)

tests_test_client_readahead_SOURCES = tests/test_client_readahead.c $(CLIENT_TEST_SOURCES)
tests_test_client_readahead_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_readahead_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_readahead_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_readahead_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# The same suites on nginx and Apache with WebDAV.
tests_test_client_roundtrip_nginx_SOURCES = tests/test_client_roundtrip.c $(CLIENT_TEST_SOURCES)
tests_test_client_roundtrip_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_client_roundtrip_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_roundtrip_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_roundtrip_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_roundtrip_apache_SOURCES = tests/test_client_roundtrip.c $(CLIENT_TEST_SOURCES)
tests_test_client_roundtrip_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_client_roundtrip_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_roundtrip_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_roundtrip_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_flat_nginx_SOURCES = tests/test_client_flat.c $(CLIENT_TEST_SOURCES)
tests_test_client_flat_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_client_flat_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_flat_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_flat_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_flat_apache_SOURCES = tests/test_client_flat.c $(CLIENT_TEST_SOURCES)
tests_test_client_flat_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_client_flat_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_flat_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_flat_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_changes_nginx_SOURCES = tests/test_client_changes.c $(CLIENT_TEST_SOURCES)
tests_test_client_changes_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_client_changes_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_changes_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_changes_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_changes_apache_SOURCES = tests/test_client_changes.c $(CLIENT_TEST_SOURCES)
tests_test_client_changes_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_client_changes_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_changes_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_changes_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# The store interface of the HTTP backend (client/store.h), on each kind.
tests_test_store_http_SOURCES = tests/test_store_http.c $(CLIENT_TEST_SOURCES)
tests_test_store_http_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_store_http_LDADD = $(CLIENT_TEST_LDADD)
tests_test_store_http_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_store_http_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_store_http_nginx_SOURCES = tests/test_store_http.c $(CLIENT_TEST_SOURCES)
tests_test_store_http_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_store_http_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_store_http_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_store_http_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_store_http_apache_SOURCES = tests/test_store_http.c $(CLIENT_TEST_SOURCES)
tests_test_store_http_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_store_http_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_store_http_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_store_http_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# The store-backed index page loader (client/index_load.c), on each kind.
tests_test_index_load_SOURCES = tests/test_index_load.c $(CLIENT_TEST_SOURCES)
tests_test_index_load_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_index_load_LDADD = $(CLIENT_TEST_LDADD)
tests_test_index_load_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_index_load_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_index_load_nginx_SOURCES = tests/test_index_load.c $(CLIENT_TEST_SOURCES)
tests_test_index_load_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_index_load_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_index_load_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_index_load_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# Dataset format version 2 through the library, on each kind.
tests_test_client_v2_SOURCES = tests/test_client_v2.c $(CLIENT_TEST_SOURCES)
tests_test_client_v2_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_v2_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v2_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v2_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_v2_nginx_SOURCES = tests/test_client_v2.c $(CLIENT_TEST_SOURCES)
tests_test_client_v2_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_client_v2_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v2_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v2_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_v2_apache_SOURCES = tests/test_client_v2.c $(CLIENT_TEST_SOURCES)
tests_test_client_v2_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_client_v2_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v2_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v2_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_v2_rgw_SOURCES = tests/test_client_v2.c $(CLIENT_TEST_SOURCES)
tests_test_client_v2_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_client_v2_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v2_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v2_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_v3_SOURCES = tests/test_client_v3.c $(CLIENT_TEST_SOURCES)
tests_test_client_v3_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_v3_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v3_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v3_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_v3_nginx_SOURCES = tests/test_client_v3.c $(CLIENT_TEST_SOURCES)
tests_test_client_v3_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_client_v3_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v3_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v3_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_v3_apache_SOURCES = tests/test_client_v3.c $(CLIENT_TEST_SOURCES)
tests_test_client_v3_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_client_v3_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v3_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v3_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_v3_rgw_SOURCES = tests/test_client_v3.c $(CLIENT_TEST_SOURCES)
tests_test_client_v3_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_client_v3_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_v3_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_v3_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)

tests_test_client_reads_SOURCES = tests/test_client_reads.c $(CLIENT_TEST_SOURCES)
tests_test_client_reads_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_reads_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_reads_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_reads_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_reads_nginx_SOURCES = tests/test_client_reads.c $(CLIENT_TEST_SOURCES)
tests_test_client_reads_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_client_reads_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_reads_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_reads_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_reads_apache_SOURCES = tests/test_client_reads.c $(CLIENT_TEST_SOURCES)
tests_test_client_reads_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_client_reads_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_reads_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_reads_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_reads_rgw_SOURCES = tests/test_client_reads.c $(CLIENT_TEST_SOURCES)
tests_test_client_reads_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_client_reads_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_reads_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_reads_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_cli_SOURCES = tests/test_client_cli.c $(CLIENT_TEST_SOURCES)
tests_test_client_cli_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_cli_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_cli_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_cli_DEPENDENCIES = $(CLIENT_TEST_DEPS)

tests_test_cli_errors_SOURCES = tests/test_cli_errors.c $(CLIENT_TEST_SOURCES)
tests_test_cli_errors_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_cli_errors_LDADD = $(CLIENT_TEST_LDADD)
tests_test_cli_errors_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_cli_errors_DEPENDENCIES = $(CLIENT_TEST_DEPS)

tests_test_client_errors_SOURCES = tests/test_client_errors.c $(CLIENT_TEST_SOURCES)
tests_test_client_errors_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_errors_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_errors_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_errors_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# The store backends against canned answers (no real server).
tests_test_store_answers_SOURCES = tests/test_store_answers.c $(CLIENT_TEST_SOURCES)
tests_test_store_answers_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_store_answers_LDADD = $(CLIENT_TEST_LDADD)
tests_test_store_answers_LDFLAGS = $(IN_PLACE_LINK)

# libblkmap on datasets a writer of this version does not leave.
tests_test_client_edges_SOURCES = tests/test_client_edges.c $(CLIENT_TEST_SOURCES)
tests_test_client_edges_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_edges_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_edges_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_edges_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# diff, tag, tags and gc beyond the round trips of test_client_gc.
tests_test_cli_history_SOURCES = tests/test_cli_history.c $(CLIENT_TEST_SOURCES)
tests_test_cli_history_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_cli_history_LDADD = $(CLIENT_TEST_LDADD)
tests_test_cli_history_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_cli_history_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# bm_list_keys and bm_generations.
tests_test_client_lists_SOURCES = tests/test_client_lists.c $(CLIENT_TEST_SOURCES)
tests_test_client_lists_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_lists_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_lists_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_lists_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# blkmap-demo and virtmem-demo run as a user runs them (small sizes).
tests_test_demos_SOURCES = tests/test_demos.c $(CLIENT_TEST_SOURCES)
tests_test_demos_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_demos_LDADD = $(CLIENT_TEST_LDADD) -lm
tests_test_demos_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_demos_DEPENDENCIES = $(CLIENT_TEST_DEPS) blkmap-demo$(EXEEXT) virtmem/virtmem-demo$(EXEEXT)

tests_test_client_attrs_SOURCES = tests/test_client_attrs.c $(CLIENT_TEST_SOURCES)
tests_test_client_attrs_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_attrs_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_attrs_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_attrs_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# Benchmark (`make bench`): libblkmap vs curl on the same block objects.
check_PROGRAMS += tests/bench_client
BENCHMARKS += tests/bench_client
tests_bench_client_SOURCES = tests/bench_client.c tests/bench_util.h $(CLIENT_TEST_SOURCES)
tests_bench_client_CFLAGS = $(CLIENT_TEST_CFLAGS) $(XXHASH_CFLAGS) -I$(top_srcdir)/client
tests_bench_client_LDADD = $(CLIENT_TEST_LDADD) $(XXHASH_LIBS)
EXTRA_tests_bench_client_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# `make bench`: blkmap's reads against the peers installed (GDAL /vsicurl/,
# fsspec, curl | openssl; its mappings against an mmap on an rclone or
# httpdirfs mount; tests/bench_peers.py), run with Debian's python
# (/usr/bin/python3: GDAL's binding is there).
EXTRA_DIST += tests/bench_peers.py
BENCHMARKS += tests/bench_peers
tests/bench_peers: $(srcdir)/tests/bench_peers.py Makefile
	$(AM_V_GEN)$(MKDIR_P) tests && cp $(srcdir)/tests/bench_peers.py $@ && chmod +x $@
CLEANFILES += tests/bench_peers

# Benchmark (`make bench`): what metadata costs as a dataset grows (format 2).
check_PROGRAMS += tests/bench_scale
BENCHMARKS += tests/bench_scale
tests_bench_scale_SOURCES = tests/bench_scale.c tests/bench_util.h $(CLIENT_TEST_SOURCES)
tests_bench_scale_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_bench_scale_LDADD = $(CLIENT_TEST_LDADD)
EXTRA_tests_bench_scale_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# The same suites on Ceph RGW (S3): tests/s3.mk starts it.
tests_test_client_roundtrip_rgw_SOURCES = tests/test_client_roundtrip.c $(CLIENT_TEST_SOURCES)
tests_test_client_roundtrip_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_client_roundtrip_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_roundtrip_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_roundtrip_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_flat_rgw_SOURCES = tests/test_client_flat.c $(CLIENT_TEST_SOURCES)
tests_test_client_flat_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_client_flat_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_flat_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_flat_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_changes_rgw_SOURCES = tests/test_client_changes.c $(CLIENT_TEST_SOURCES)
tests_test_client_changes_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_client_changes_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_changes_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_changes_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# The format layer of dataset format v2 alone (no server): index pages and
# the v2 manifest over an in-memory page store.
check_PROGRAMS += tests/test_index
TESTS += tests/test_index
tests_test_index_SOURCES = tests/test_index.c
tests_test_index_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_index_LDADD = $(CLIENT_TEST_LDADD)
tests_test_index_LDFLAGS = $(IN_PLACE_LINK)
tests_test_store_rgw_SOURCES = tests/test_store_http.c $(CLIENT_TEST_SOURCES)
tests_test_store_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_store_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_store_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_store_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)

# gc, tags, --at and diff (test_client_gc.c), on every kind of server.
tests_test_client_gc_SOURCES = tests/test_client_gc.c $(CLIENT_TEST_SOURCES)
tests_test_client_gc_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_client_gc_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_gc_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_gc_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_gc_nginx_SOURCES = tests/test_client_gc.c $(CLIENT_TEST_SOURCES)
tests_test_client_gc_nginx_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"nginx\"
tests_test_client_gc_nginx_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_gc_nginx_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_gc_nginx_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_gc_apache_SOURCES = tests/test_client_gc.c $(CLIENT_TEST_SOURCES)
tests_test_client_gc_apache_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"apache\"
tests_test_client_gc_apache_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_gc_apache_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_gc_apache_DEPENDENCIES = $(CLIENT_TEST_DEPS)
tests_test_client_gc_rgw_SOURCES = tests/test_client_gc.c $(CLIENT_TEST_SOURCES)
tests_test_client_gc_rgw_CFLAGS = $(CLIENT_TEST_CFLAGS) -DTC_KIND=\"rgw\"
tests_test_client_gc_rgw_LDADD = $(CLIENT_TEST_LDADD)
tests_test_client_gc_rgw_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_client_gc_rgw_DEPENDENCIES = $(CLIENT_TEST_DEPS)
