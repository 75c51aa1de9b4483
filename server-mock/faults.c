/* server-mock/faults.c — fault injection for the client's reliability
 * tests: 503 answers, connections cut mid-response, corrupted GET bodies,
 * delayed responses, and the ways of other servers: long bodies on PUT
 * and error answers, PUT answers without an ETag; optionally only for
 * requests of one method, or for keys that hold a given string.  Owns the fault rates and the seeded random
 * sequence.
 * Locking: faults.lock guards rates and the generator; a roll takes it
 * once per request. */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "srv.h"

static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static int chance(uint64_t *state, double rate)
{
	double u = (double)(next_random(state) >> 11) * 0x1.0p-53;
	return u < rate;
}

void srv_faults_init(struct srv_faults *f, const struct srv_config *cfg)
{
	pthread_mutex_init(&f->lock, NULL);
	f->error_rate = cfg->fault_error_rate;
	f->drop_rate = cfg->fault_drop_rate;
	f->corrupt_rate = cfg->fault_corrupt_rate;
	f->latency_ms = cfg->fault_latency_ms;
	f->pad_bytes = cfg->fault_pad_bytes;
	f->put_no_etag = cfg->fault_put_no_etag;
	f->method = cfg->fault_method;
	snprintf(f->path, sizeof(f->path), "%s", cfg->fault_path ? cfg->fault_path : "");
	f->seed = f->rng = cfg->fault_seed;
}

void srv_faults_destroy(struct srv_faults *f)
{
	pthread_mutex_destroy(&f->lock);
}

static const char *const method_names[] = { "GET", "HEAD", "PUT", "DELETE" };

int srv_faults_method(const char *name)
{
	if (name[0] == '\0')
		return 0;
	for (int i = 0; i < (int)(sizeof(method_names) / sizeof(method_names[0])); i++)
		if (!strcmp(name, method_names[i]))
			return i + 1;
	return -1;
}

void srv_faults_roll(struct srv_faults *f, int m, const char *key, struct srv_fault_roll *r)
{
	pthread_mutex_lock(&f->lock);
	/* Drawn for every request, then masked: the sequence stays the
	 * same whatever the filters. */
	bool here = f->path[0] == '\0' || (key != NULL && strstr(key, f->path) != NULL);
	int any = (f->method == 0 || f->method == m + 1) && here;
	r->error = chance(&f->rng, f->error_rate) && any;
	r->drop = chance(&f->rng, f->drop_rate) && any;
	r->corrupt = chance(&f->rng, f->corrupt_rate) && any;
	r->pick = next_random(&f->rng);
	r->latency_ms = here ? f->latency_ms : 0;
	r->pad_bytes = here ? f->pad_bytes : 0;
	r->put_no_etag = here && f->put_no_etag;
	pthread_mutex_unlock(&f->lock);
}

json_t *srv_faults_to_json(struct srv_faults *f)
{
	json_t *o;

	pthread_mutex_lock(&f->lock);
	o = json_pack("{s:f, s:f, s:f, s:I, s:I, s:I, s:s, s:s, s:I}",
		      "fault-error-rate", f->error_rate,
		      "fault-drop-rate", f->drop_rate,
		      "fault-corrupt-rate", f->corrupt_rate,
		      "fault-latency-ms", (json_int_t)f->latency_ms,
		      "fault-pad-bytes", (json_int_t)f->pad_bytes,
		      "fault-put-no-etag", (json_int_t)f->put_no_etag,
		      "fault-method", f->method == 0 ? "" : method_names[f->method - 1],
		      "fault-path", f->path,
		      "fault-seed", (json_int_t)f->seed);
	pthread_mutex_unlock(&f->lock);
	return o;
}

static int get_rate(json_t *v, const char *name, double *out, char *err,
		    size_t n)
{
	if (!json_is_number(v) || json_number_value(v) < 0 ||
	    json_number_value(v) > 1) {
		snprintf(err, n, "%s must be a number from 0 to 1", name);
		return -1;
	}
	*out = json_number_value(v);
	return 0;
}

static int get_uint(json_t *v, const char *name, json_int_t max,
		    json_int_t *out, char *err, size_t n)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > max) {
		snprintf(err, n, "%s must be an integer from 0 to %lld", name,
			 (long long)max);
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

/* Check every name of OBJ into a copy, then apply the copy at once. */
int srv_faults_update(struct srv_faults *f, json_t *obj, char *err, size_t n)
{
	double rates[3];
	json_int_t latency, seed, pad, noetag;
	int method;
	char path[SRV_FAULT_PATH_MAX + 1];
	int has_seed = 0, r = 0;
	const char *name;
	json_t *v;

	if (!json_is_object(obj)) {
		snprintf(err, n, "body must be a JSON object of fault names");
		return -1;
	}
	pthread_mutex_lock(&f->lock);
	rates[0] = f->error_rate;
	rates[1] = f->drop_rate;
	rates[2] = f->corrupt_rate;
	latency = f->latency_ms;
	pad = f->pad_bytes;
	noetag = f->put_no_etag;
	method = f->method;
	memcpy(path, f->path, sizeof(path));
	seed = (json_int_t)f->seed;
	json_object_foreach(obj, name, v) {
		if (!strcmp(name, "fault-error-rate"))
			r = get_rate(v, name, &rates[0], err, n);
		else if (!strcmp(name, "fault-drop-rate"))
			r = get_rate(v, name, &rates[1], err, n);
		else if (!strcmp(name, "fault-corrupt-rate"))
			r = get_rate(v, name, &rates[2], err, n);
		else if (!strcmp(name, "fault-latency-ms"))
			r = get_uint(v, name, 3600000, &latency, err, n);
		else if (!strcmp(name, "fault-pad-bytes"))
			r = get_uint(v, name, 1 << 26, &pad, err, n);
		else if (!strcmp(name, "fault-put-no-etag"))
			r = get_uint(v, name, 1, &noetag, err, n);
		else if (!strcmp(name, "fault-method")) {
			if (!json_is_string(v) ||
			    (method = srv_faults_method(json_string_value(v))) < 0) {
				snprintf(err, n, "fault-method must be \"\" (every method), "
					 "\"GET\", \"HEAD\", \"PUT\" or \"DELETE\"");
				r = -1;
			}
		} else if (!strcmp(name, "fault-path")) {
			if (!json_is_string(v) || strlen(json_string_value(v)) > SRV_FAULT_PATH_MAX) {
				snprintf(err, n, "fault-path must be a string of at most %d bytes",
					 SRV_FAULT_PATH_MAX);
				r = -1;
			} else {
				snprintf(path, sizeof(path), "%s", json_string_value(v));
			}
		} else if (!strcmp(name, "fault-seed")) {
			r = get_uint(v, name, INT64_MAX, &seed, err, n);
			has_seed = 1;
		} else {
			snprintf(err, n, "unknown fault name '%s' (known: "
				 "fault-error-rate, fault-drop-rate, "
				 "fault-corrupt-rate, fault-latency-ms, "
				 "fault-pad-bytes, fault-put-no-etag, "
				 "fault-method, fault-path, fault-seed)", name);
			r = -1;
		}
		if (r < 0)
			break;
	}
	if (r == 0) {
		f->error_rate = rates[0];
		f->drop_rate = rates[1];
		f->corrupt_rate = rates[2];
		f->latency_ms = (unsigned)latency;
		f->pad_bytes = (unsigned)pad;
		f->put_no_etag = (int)noetag;
		f->method = method;
		memcpy(f->path, path, sizeof(path));
		if (has_seed)
			f->seed = f->rng = (uint64_t)seed;
	}
	pthread_mutex_unlock(&f->lock);
	return r;
}
