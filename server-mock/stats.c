/* server-mock/stats.c — the counters behind GET /_admin/stats: requests
 * by method, responses by status, bytes in and out, faults injected,
 * connections, the most requests in flight at once since the previous read.
 * Requests to /_admin/ are not counted, so that a test reads exactly what it
 * caused. Locking: stats.lock guards every counter. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "srv.h"

static const char *const method_names[SRV_NMETHODS] = {
	"GET", "HEAD", "PUT", "DELETE", "other"
};
static const char *const fault_names[SRV_NFAULTS] = {
	"error", "drop", "corrupt", "latency"
};

void srv_stats_init(struct srv_stats *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
}

void srv_stats_destroy(struct srv_stats *s)
{
	pthread_mutex_destroy(&s->lock);
}

void srv_stats_add(struct srv_stats *s, uint64_t *counter, int64_t delta)
{
	pthread_mutex_lock(&s->lock);
	/* A count (open connections, requests in flight) never goes below 0:
	 * each decrement matches an increment. */
	srv_assert(delta >= 0 || *counter >= (uint64_t)-delta);
	*counter += delta;
	pthread_mutex_unlock(&s->lock);
}

json_t *srv_stats_to_json(struct srv_stats *s)
{
	json_t *o = json_object(), *req = json_object(), *st = json_object();
	json_t *faults = json_object();
	char code[8];

	pthread_mutex_lock(&s->lock);
	srv_assert(s->in_flight_max >= s->in_flight);
	for (int i = 0; i < SRV_NMETHODS; i++)
		json_object_set_new(req, method_names[i],
				    json_integer((json_int_t)s->requests[i]));
	for (int i = 0; i < 600; i++) {
		if (!s->status[i])
			continue;
		snprintf(code, sizeof(code), "%d", i);
		json_object_set_new(st, code,
				    json_integer((json_int_t)s->status[i]));
	}
	for (int i = 0; i < SRV_NFAULTS; i++)
		json_object_set_new(faults, fault_names[i],
				    json_integer((json_int_t)s->faults[i]));
	json_object_set_new(o, "requests", req);
	json_object_set_new(o, "responses", st);
	json_object_set_new(o, "faults", faults);
	json_object_set_new(o, "bytes_in", json_integer(s->bytes_in));
	json_object_set_new(o, "bytes_out", json_integer(s->bytes_out));
	json_object_set_new(o, "requests_in_flight",
			    json_integer(s->in_flight));
	/* A peak is read once: the next read covers the time since. */
	json_object_set_new(o, "requests_in_flight_max",
			    json_integer(s->in_flight_max));
	s->in_flight_max = s->in_flight;
	json_object_set_new(o, "connections", json_pack(
		"{s:I, s:I, s:I}", "open", (json_int_t)s->open,
		"accepted", (json_int_t)s->accepted,
		"rejected", (json_int_t)s->rejected));
	pthread_mutex_unlock(&s->lock);
	return o;
}
