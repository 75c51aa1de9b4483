/* server-mock/main.c — blkmap-server's command line: parses and checks the
 * options into a struct srv_config, prints --help, and runs the server.
 * Bad options get one line on stderr and exit status 2.
 * Single-threaded; nothing here is shared. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv.h"

static const char usage_text[] =
"Usage: blkmap-server (--root DIR | --memory) [OPTION]...\n"
"A small HTTP/1.1 object server: GET/HEAD/PUT/DELETE on keys (URL paths),\n"
"Range, strong ETags, If-Match/If-None-Match, JSON listings, fault\n"
"injection. When ready it prints one line with its base URL on stdout.\n"
"\n"
"Storage (exactly one):\n"
"  --root DIR              keep objects in DIR/objects/<key> (uploads go\n"
"                          through DIR/tmp, fsync, rename); they survive\n"
"                          restarts\n"
"  --memory                keep objects in process memory\n"
"\n"
"Network:\n"
"  --listen HOST:PORT      address to listen on (default 127.0.0.1:8080);\n"
"                          port 0 picks a free port\n"
"  --token TOKEN           require 'Authorization: Bearer TOKEN' (else 401);\n"
"                          default: $BLKMAP_SERVER_TOKEN if set\n"
"  --threads N             worker threads (default 2)\n"
"  --max-connections N     open connections served (default 256); more\n"
"                          get 503 and are closed\n"
"  --max-header-bytes N    request line + headers limit (default 8192); 431\n"
"  --max-body-bytes N      PUT body limit (default 268435456); 413\n"
"  --idle-timeout-ms N     close a keep-alive connection idle this long\n"
"                          (default 30000)\n"
"  --request-timeout-ms N  a request must arrive within this (else 408),\n"
"                          and a response must make progress (default 60000)\n"
"\n"
"Admin and logs:\n"
"  --admin                 serve GET /_admin/stats, GET|PUT /_admin/faults\n"
"  --verbose               access log on stderr\n"
"\n"
"Fault injection (all off by default; never applied to /_admin/):\n"
"  --fault-error-rate P    answer 503 to a fraction P (0..1) of requests\n"
"  --fault-drop-rate P     close the connection in the middle of a\n"
"                          fraction P of responses\n"
"  --fault-corrupt-rate P  flip one byte in the body of a fraction P of GET\n"
"                          responses (headers unchanged)\n"
"  --fault-latency-ms N    delay every response by N ms\n"
"  --fault-pad-bytes N     add N bytes of body to every PUT answer and\n"
"                          error answer (a 204 becomes a 200)\n"
"  --fault-put-no-etag     answer PUTs without the ETag header\n"
"  --fault-method M        error, drop and corrupt only requests of method M\n"
"                          (GET, HEAD, PUT or DELETE; default: every method)\n"
"  --fault-path S          every fault (latency too) only for keys that\n"
"                          hold S (default: every key)\n"
"  --fault-seed N          seed of the fault sequence (default 0)\n"
"\n"
"  --help                  this text\n"
"  --version               the version\n"
"\n"
"SIGINT/SIGTERM: stop accepting, finish requests in flight, exit 0.\n"
"Protocol, listing JSON and /_admin/: see docs/server.md.\n";

enum {
	OPT_LISTEN = 256, OPT_ROOT, OPT_MEMORY, OPT_TOKEN, OPT_ADMIN,
	OPT_VERBOSE, OPT_THREADS, OPT_MAX_CONN, OPT_MAX_HEADER, OPT_MAX_BODY,
	OPT_IDLE, OPT_REQUEST, OPT_F_ERROR, OPT_F_DROP, OPT_F_CORRUPT,
	OPT_F_LATENCY, OPT_F_SEED, OPT_F_PAD, OPT_F_NOETAG, OPT_F_METHOD, OPT_F_PATH, OPT_HELP,
	OPT_VERSION,
};

static const struct option options[] = {
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "root", required_argument, NULL, OPT_ROOT },
	{ "memory", no_argument, NULL, OPT_MEMORY },
	{ "token", required_argument, NULL, OPT_TOKEN },
	{ "admin", no_argument, NULL, OPT_ADMIN },
	{ "verbose", no_argument, NULL, OPT_VERBOSE },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "max-connections", required_argument, NULL, OPT_MAX_CONN },
	{ "max-header-bytes", required_argument, NULL, OPT_MAX_HEADER },
	{ "max-body-bytes", required_argument, NULL, OPT_MAX_BODY },
	{ "idle-timeout-ms", required_argument, NULL, OPT_IDLE },
	{ "request-timeout-ms", required_argument, NULL, OPT_REQUEST },
	{ "fault-error-rate", required_argument, NULL, OPT_F_ERROR },
	{ "fault-drop-rate", required_argument, NULL, OPT_F_DROP },
	{ "fault-corrupt-rate", required_argument, NULL, OPT_F_CORRUPT },
	{ "fault-latency-ms", required_argument, NULL, OPT_F_LATENCY },
	{ "fault-seed", required_argument, NULL, OPT_F_SEED },
	{ "fault-pad-bytes", required_argument, NULL, OPT_F_PAD },
	{ "fault-put-no-etag", no_argument, NULL, OPT_F_NOETAG },
	{ "fault-method", required_argument, NULL, OPT_F_METHOD },
	{ "fault-path", required_argument, NULL, OPT_F_PATH },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

static void die_usage(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "blkmap-server: ");
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, " (see --help)\n");
	exit(2);
}

static uint64_t parse_uint(const char *opt, const char *s, uint64_t min,
			   uint64_t max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		char range[64];
		snprintf(range, sizeof(range), "%llu..%llu",
			 (unsigned long long)min, (unsigned long long)max);
		fprintf(stderr, "blkmap-server: --%s: expected an integer in "
			"%s, got '%s' (see --help)\n", opt, range, s);
		exit(2);
	}
	return v;
}

static double parse_rate(const char *opt, const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0 && v <= 1))
		die_usage("--%s: expected a number from 0 to 1, got '%s'",
			  opt, s);
	return v;
}

static void parse_option(struct srv_config *cfg, int opt, const char *arg,
			 const char *name)
{
	switch (opt) {
	case OPT_LISTEN: cfg->listen = arg; break;
	case OPT_ROOT: cfg->root = arg; break;
	case OPT_MEMORY: cfg->memory = 1; break;
	case OPT_TOKEN: cfg->token = arg; break;
	case OPT_ADMIN: cfg->admin = 1; break;
	case OPT_VERBOSE: cfg->verbose = 1; break;
	case OPT_THREADS:
		cfg->threads = parse_uint(name, arg, 1, 64);
		break;
	case OPT_MAX_CONN:
		cfg->max_connections = parse_uint(name, arg, 1, 100000);
		break;
	case OPT_MAX_HEADER:
		cfg->max_header_bytes = parse_uint(name, arg, 256, 1 << 20);
		break;
	case OPT_MAX_BODY:
		cfg->max_body_bytes = parse_uint(name, arg, 0, 1ull << 40);
		break;
	case OPT_IDLE:
		cfg->idle_timeout_ms = parse_uint(name, arg, 1, 86400000);
		break;
	case OPT_REQUEST:
		cfg->request_timeout_ms = parse_uint(name, arg, 1, 86400000);
		break;
	case OPT_F_ERROR: cfg->fault_error_rate = parse_rate(name, arg); break;
	case OPT_F_DROP: cfg->fault_drop_rate = parse_rate(name, arg); break;
	case OPT_F_CORRUPT:
		cfg->fault_corrupt_rate = parse_rate(name, arg);
		break;
	case OPT_F_LATENCY:
		cfg->fault_latency_ms = parse_uint(name, arg, 0, 3600000);
		break;
	case OPT_F_SEED:
		cfg->fault_seed = parse_uint(name, arg, 0, INT64_MAX);
		break;
	case OPT_F_PAD:
		cfg->fault_pad_bytes = (unsigned)parse_uint(name, arg, 0, 1 << 26);
		break;
	case OPT_F_NOETAG: cfg->fault_put_no_etag = 1; break;
	case OPT_F_METHOD:
		if ((cfg->fault_method = srv_faults_method(arg)) <= 0)
			die_usage("--%s: '%s' is not GET, HEAD, PUT or DELETE", name, arg);
		break;
	case OPT_F_PATH:
		if (strlen(arg) > SRV_FAULT_PATH_MAX)
			die_usage("--%s: '%s' is longer than 255 bytes", name, arg);
		cfg->fault_path = arg;
		break;
	case OPT_HELP:
		fputs(usage_text, stdout);
		exit(0);
	case OPT_VERSION:
		printf("blkmap-server %s\n", PACKAGE_VERSION);
		exit(0);
	default:
		exit(2);  /* getopt printed the reason */
	}
}

int main(int argc, char **argv)
{
	struct srv_config cfg = {
		.listen = "127.0.0.1:8080",
		.threads = 2,
		.max_connections = 256,
		.max_header_bytes = 8192,
		.max_body_bytes = 256ull << 20,
		.idle_timeout_ms = 30000,
		.request_timeout_ms = 60000,
	};
	int opt, index;

	opterr = 1;
	while ((opt = getopt_long(argc, argv, "", options, &index)) != -1)
		parse_option(&cfg, opt, optarg,
			     opt >= OPT_LISTEN ? options[opt - OPT_LISTEN].name
					       : "?");
	if (optind < argc)
		die_usage("unexpected argument '%s'%s", argv[optind], "");
	if (!cfg.root == !cfg.memory)
		die_usage("give exactly one of --root DIR and --memory%s%s",
			  "", "");
	if (!cfg.token && getenv("BLKMAP_SERVER_TOKEN"))
		cfg.token = getenv("BLKMAP_SERVER_TOKEN");
	if (cfg.token && !*cfg.token)
		die_usage("--token must not be empty%s%s", "", "");
	return srv_server_run(&cfg);
}
