/* tests/fuzz/fuzz.h — what the fuzz targets share: the libFuzzer entry
 * point each one defines, and fuzz_fail(), which reports a broken property
 * of the code under test and aborts (libFuzzer then saves the input; the
 * replay program names the input that broke it).
 * Locking: none (one input at a time). */
#ifndef BLKMAP_FUZZ_H
#define BLKMAP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define fuzz_fail(...)                                                        \
	do {                                                                  \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);               \
		fprintf(stderr, __VA_ARGS__);                                 \
		fputc('\n', stderr);                                          \
		abort();                                                      \
	} while (0)

/* A message a user reads: non-empty and one line. */
#define fuzz_check_message(what, msg)                                        \
	do {                                                                  \
		const char *m_ = (msg);                                       \
		if (m_ == NULL || m_[0] == '\0' || strchr(m_, '\n'))          \
			fuzz_fail("%s: the error message is not one line: '%s'", \
				  (what), m_ ? m_ : "(null)");                \
	} while (0)

#endif
