/* server-mock/store.c — what both object stores share: the precondition
 * check of PUT and DELETE. Each store calls it with its namespace lock
 * (struct srv_store.lock) held, between reading the current ETag and
 * making the change, which is what makes If-Match / If-None-Match: *
 * race-free across concurrent requests. */
#include "config.h"

#include "srv.h"

/* ETAG is the current object's, or NULL when there is none. Returns 0 when
 * the change may go ahead, 412 when it must not. */
int srv_cond_check(const struct srv_cond *cond, const char *etag)
{
	if (cond->if_match &&
	    (!etag || !srv_etag_list_matches(cond->if_match, etag, 0)))
		return 412;
	if (cond->if_none_match && etag &&
	    srv_etag_list_matches(cond->if_none_match, etag, 1))
		return 412;
	return 0;
}
