# virtmem/ — libvirtmem, shared and static, with its pkg-config file.
lib_LTLIBRARIES += virtmem/libvirtmem.la
virtmem_libvirtmem_la_SOURCES = \
	virtmem/internal.h \
	virtmem/engine.c \
	virtmem/fault.c \
	virtmem/fileh.c \
	virtmem/fill.c \
	virtmem/lock.c \
	virtmem/mapping.c \
	virtmem/page.c \
	virtmem/pagetab.c \
	virtmem/ram.c \
	virtmem/release.c \
	virtmem/sigsegv.c \
	virtmem/uffd.c \
	virtmem/writeout.c
virtmem_libvirtmem_la_LDFLAGS = $(AM_LDFLAGS) -version-info 0:0:0 -no-undefined
virtmemincludedir = $(includedir)/virtmem
virtmeminclude_HEADERS = include/virtmem/virtmem.h
pkgconfig_DATA += virtmem/virtmem.pc

# The demo that `./quickstart demo` runs until the HTTP client exists.
noinst_PROGRAMS += virtmem/virtmem-demo
virtmem_virtmem_demo_SOURCES = virtmem/demo.c
virtmem_virtmem_demo_LDADD = virtmem/libvirtmem.la
