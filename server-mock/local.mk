# server-mock/ — blkmap-server, the HTTP object server the tests and the
# demo point at (issue 3). Its tests are tests/test_server_*.c; its
# benchmark is tests/bench_server.c (`make bench`).

bin_PROGRAMS += blkmap-server
blkmap_server_SOURCES = \
	server-mock/srv.h \
	server-mock/main.c \
	server-mock/server.c \
	server-mock/conn.c \
	server-mock/handler.c \
	server-mock/key.c \
	server-mock/etag.c \
	server-mock/store.c \
	server-mock/store_disk.c \
	server-mock/store_mem.c \
	server-mock/faults.c \
	server-mock/stats.c
blkmap_server_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(JANSSON_CFLAGS)
blkmap_server_LDADD = $(LIBEVENT_LIBS) $(JANSSON_LIBS)
