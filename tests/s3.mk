# tests/s3.mk — S3 tests against a real Ceph RADOS Gateway (issue 11).
# tests/rgw.sh starts one RGW per `make check` (the first test that needs it
# starts it, the others reuse it, it stops once make exits); a test skips
# when radosgw is not installed.  tests/rgw_util.c holds what they share.
EXTRA_DIST += tests/rgw.sh
# rgw_util.c is also in CLIENT_TEST_SOURCES (client_util's "rgw" kind).
RGW_TEST_SOURCES = tests/rgw_util.c tests/rgw_util.h
CLEANFILES += tests/rgw.state/rgw.lock

S3_TESTS = tests/test_s3_rgw tests/test_aws tests/test_s3_store
check_PROGRAMS += $(S3_TESTS) tests/test_s3_client
TESTS += $(S3_TESTS)
LONG_TESTS += tests/test_s3_client

tests_test_s3_rgw_SOURCES = tests/test_s3_rgw.c $(RGW_TEST_SOURCES)
tests_test_s3_rgw_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(CMOCKA_CFLAGS)
tests_test_s3_rgw_LDADD = $(CURL_LIBS) $(CMOCKA_LIBS)

# The AWS configuration and s3:// URLs alone (no server).
tests_test_aws_SOURCES = tests/test_aws.c
tests_test_aws_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_test_aws_LDADD = client/libblkmap.la $(CMOCKA_LIBS)
tests_test_aws_LDFLAGS = $(IN_PLACE_LINK)

# libblkmap and the CLI on s3:// URLs against RGW.
tests_test_s3_client_SOURCES = tests/test_s3_client.c tests/wcfs_util.c tests/wcfs_util.h \
	$(CLIENT_TEST_SOURCES)
tests_test_s3_client_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_s3_client_LDADD = $(CLIENT_TEST_LDADD)
tests_test_s3_client_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_s3_client_DEPENDENCIES = $(CLIENT_TEST_DEPS) blkmap-wcfs$(EXEEXT)

# The S3 store backend through the store interface, against RGW.
tests_test_s3_store_SOURCES = tests/test_s3_store.c $(CLIENT_TEST_SOURCES)
tests_test_s3_store_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_s3_store_LDADD = $(CLIENT_TEST_LDADD)
tests_test_s3_store_LDFLAGS = $(IN_PLACE_LINK)

# Benchmark (`make bench`): libblkmap on s3:// vs curl --aws-sigv4 on RGW.
check_PROGRAMS += tests/bench_s3
BENCHMARKS += tests/bench_s3
tests_bench_s3_SOURCES = tests/bench_s3.c tests/bench_util.h $(CLIENT_TEST_SOURCES)
tests_bench_s3_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_bench_s3_LDADD = $(CLIENT_TEST_LDADD)
