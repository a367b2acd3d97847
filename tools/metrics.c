/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus text exposition of a daemon's counters over HTTP. */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fetch/registry.h"
#include "fs/fs.h"
#include "tools/quota.h"
#include "store/store.h"
#include "util/log.h"
#include "util/sock.h"
#include "util/thread.h"

#define REQUEST_TIMEOUT_MS 2000
#define REQUEST_MAX	   4096

/* ---------------------------------------------------------------- rendering */

struct text {
	char *buf;
	size_t len, cap;
	int oom;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = 1;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		{
			size_t cap = (t->cap + (size_t)n + 1) * 2;
			char *b = realloc(t->buf, cap);

			if (!b) {
				t->oom = 1;
				return;
			}
			t->buf = b;
			t->cap = cap;
		}
	}
}

static void metric(struct text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes host as a label value: backslash, quote and newline escaped. */
static void label(struct text *t, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			put(t, "\\%c", *v);
		else if (*v == '\n')
			put(t, "\\n");
		else
			put(t, "%c", *v);
	}
}

struct host_rows {
	struct text *t;
	int field;
};

static const struct {
	const char *name, *type, *help;
} host_metrics[] = {
	{ "strata_registry_requests_total", "counter",
	  "HTTP requests sent to the host, retries included" },
	{ "strata_registry_bytes_total", "counter", "Body bytes received from the host" },
	{ "strata_registry_retries_total", "counter", "Requests to the host that were retried" },
	{ "strata_registry_throttled_total", "counter", "HTTP 429 answers from the host" },
	{ "strata_registry_fallbacks_total", "counter",
	  "Requests handed from the host to the next" },
	{ "strata_registry_breaker_open", "gauge",
	  "1 while the host's circuit breaker is not closed" },
};

static void host_cb(void *ctx, const struct fetch_host_stats *h)
{
	struct host_rows *r = ctx;
	uint64_t v[] = { h->requests,  h->bytes,     h->retries,
			 h->throttled, h->fallbacks, strcmp(h->breaker, "closed") != 0 };

	put(r->t, "%s{host=\"", host_metrics[r->field].name);
	label(r->t, h->host);
	put(r->t, "\"} %llu\n", (unsigned long long)v[r->field]);
}

static int count_cb(void *ctx, const struct store_layer *l)
{
	(void)l;
	(*(uint64_t *)ctx)++;
	return 0;
}

static int count_pin_cb(void *ctx, const char *ref)
{
	(void)ref;
	(*(uint64_t *)ctx)++;
	return 0;
}

char *metrics_render(struct store *s, struct fetch_client *fc, struct quota *q)
{
	struct text t = { NULL, 0, 0, 0 };
	struct fs_read_stats rs;
	struct store_stats ss;
	uint64_t pending = 0, pins = 0, cum = 0, v;

	fs_read_stats_get(&rs);
	metric(&t, "strata_chunk_reads_total", "counter",
	       "Chunks FUSE reads needed, by where they came from");
	put(&t, "strata_chunk_reads_total{source=\"cache\"} %llu\n",
	    (unsigned long long)rs.cache_hits);
	put(&t, "strata_chunk_reads_total{source=\"store\"} %llu\n",
	    (unsigned long long)rs.store_hits);
	put(&t, "strata_chunk_reads_total{source=\"fetched\"} %llu\n",
	    (unsigned long long)rs.fetched);
	metric(&t, "strata_chunk_read_failures_total", "counter", "Chunk reads that failed (EIO)");
	put(&t, "strata_chunk_read_failures_total %llu\n", (unsigned long long)rs.failed);
	metric(&t, "strata_fetch_wait_seconds", "histogram",
	       "How long FUSE reads waited for chunks fetched from a registry");
	for (unsigned i = 0; i < FS_LAT_BUCKETS; i++) {
		cum += rs.fetch_us[i];
		/* one bucket per power of two (every 4th of the fine ones), exact at its bound */
		if (i >= 7 && i % 4 == 3 && i < FS_LAT_BUCKETS - 1)
			put(&t, "strata_fetch_wait_seconds_bucket{le=\"%.6f\"} %llu\n",
			    (double)fs_latency_bucket_us(i) / 1e6, (unsigned long long)cum);
	}
	put(&t, "strata_fetch_wait_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	put(&t, "strata_fetch_wait_seconds_count %llu\n", (unsigned long long)cum);

	if (fc) {
		for (size_t m = 0; m < sizeof(host_metrics) / sizeof(host_metrics[0]); m++) {
			struct host_rows r = { &t, (int)m };

			metric(&t, host_metrics[m].name, host_metrics[m].type,
			       host_metrics[m].help);
			fetch_client_hosts(fc, host_cb, &r);
		}
	}

	if (store_get_stats(s, &ss) == 0) {
		metric(&t, "strata_store_disk_bytes", "gauge",
		       "Bytes the store directory takes on disk");
		put(&t, "strata_store_disk_bytes %llu\n", (unsigned long long)ss.disk_bytes);
		metric(&t, "strata_store_chunks", "gauge",
		       "Chunks in the store (RocksDB's estimate)");
		put(&t, "strata_store_chunks %llu\n", (unsigned long long)ss.chunks);
	}
	if (store_pending_list(s, count_cb, &pending) == 0) {
		metric(&t, "strata_layers_streaming", "gauge",
		       "Layers recorded by a pull whose blob is still to be streamed and indexed");
		put(&t, "strata_layers_streaming %llu\n", (unsigned long long)pending);
	}
	if (store_pin_list(s, count_pin_cb, &pins) == 0) {
		metric(&t, "strata_pinned_images", "gauge", "Pinned images");
		put(&t, "strata_pinned_images %llu\n", (unsigned long long)pins);
	}
	metric(&t, "strata_quota_bytes", "gauge", "The store's quota (0: none)");
	put(&t, "strata_quota_bytes %llu\n", (unsigned long long)(q ? quota_bytes(q) : 0));
	{
		static const struct {
			const char *counter, *name, *help;
		} ev[] = {
			{ "evictions", "strata_evictions_total", "Quota eviction passes" },
			{ "evicted_chunks", "strata_evicted_chunks_total",
			  "Chunks evicted by the quota" },
			{ "evicted_bytes", "strata_evicted_bytes_total",
			  "Stored bytes evicted by the quota" },
		};

		for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++) {
			v = 0;
			if (store_counter_get(s, ev[i].counter, &v) < 0)
				continue;
			metric(&t, ev[i].name, "counter", ev[i].help);
			put(&t, "%s %llu\n", ev[i].name, (unsigned long long)v);
		}
	}
	strata_err_clear();
	if (t.oom) {
		free(t.buf);
		return NULL;
	}
	return t.buf;
}

/* ---------------------------------------------------------------- serving */

struct metrics {
	struct store *store;
	struct fetch_client *fetch;
	struct quota *quota;
	int lfd;
	int stop_pipe[2];
	char *unix_path; /* the socket file of a unix: address, removed at stop */
	pthread_t thread;
	int started;
};

/* Reads the request head (bounded in size and time) and answers it. */
static void serve(struct metrics *m, int fd)
{
	char req[REQUEST_MAX + 1], head[256];
	struct timespec t0, now;
	size_t got = 0;
	const char *status = "404 Not Found", *type = "text/plain; charset=utf-8";
	char *body = NULL;
	const char *text = "not found: try GET /metrics\n";

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (got < REQUEST_MAX && !memmem(req, got, "\r\n\r\n", 4) &&
	       !memmem(req, got, "\n\n", 2)) {
		struct pollfd p = { fd, POLLIN, 0 };
		long left;
		ssize_t n;

		clock_gettime(CLOCK_MONOTONIC, &now);
		left = REQUEST_TIMEOUT_MS -
		       ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return;
		n = recv(fd, req + got, REQUEST_MAX - got, 0);
		if (n <= 0)
			return;
		got += (size_t)n;
	}
	req[got] = '\0';
	if (strncmp(req, "GET /metrics ", 13) == 0 || strncmp(req, "GET /metrics?", 13) == 0) {
		body = metrics_render(m->store, m->fetch, m->quota);
		if (body) {
			status = "200 OK";
			type = "text/plain; version=0.0.4; charset=utf-8";
			text = body;
		} else {
			status = "500 Internal Server Error";
			text = "out of memory\n";
		}
	} else if (strncmp(req, "GET ", 4) != 0) {
		status = "405 Method Not Allowed";
		text = "only GET /metrics\n";
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n",
		 status, type, strlen(text));
	if (util_sock_write_all(fd, head, strlen(head)) == 0)
		util_sock_write_all(fd, text, strlen(text));
	free(body);
}

static void *metrics_main(void *arg)
{
	struct metrics *m = arg;

	for (;;) {
		int fd = util_sock_accept(m->lfd, m->stop_pipe[0], "metrics");

		if (fd < 0)
			break;
		serve(m, fd);
		close(fd);
	}
	return NULL;
}

/* Binds addr ("HOST:PORT", "[V6]:PORT" or "unix:PATH"). Returns the listening fd or -errno. */
static int bind_addr(struct metrics *m, const char *addr)
{
	int fd, rc, one = 1;

	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		const char *path = addr + 5;

		if (!*path || strlen(path) >= sizeof(sa.sun_path))
			return strata_err(EINVAL, "metrics address %s: bad socket path", addr);
		memcpy(sa.sun_path, path, strlen(path) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return strata_err(errno, "socket: %s", strerror(errno));
		unlink(path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0660) < 0 ||
		    listen(fd, 16) < 0) {
			rc = strata_err(errno, "metrics socket %s: %s", path, strerror(errno));
			close(fd);
			return rc;
		}
		m->unix_path = strdup(path);
		return fd;
	}
	{
		struct sockaddr_storage ss;
		socklen_t slen;
		char host[128];
		const char *colon = strrchr(addr, ':');
		char *end;
		long port;
		size_t hl;

		if (!colon || colon == addr)
			return strata_err(EINVAL,
					  "metrics address %s: expected HOST:PORT or unix:PATH",
					  addr);
		port = strtol(colon + 1, &end, 10);
		if (*end || port < 1 || port > 65535)
			return strata_err(EINVAL, "metrics address %s: bad port", addr);
		hl = (size_t)(colon - addr);
		if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
			addr++;
			hl -= 2;
		}
		if (hl >= sizeof(host))
			return strata_err(EINVAL, "metrics address %s: bad host", addr);
		memcpy(host, addr, hl);
		host[hl] = '\0';
		if (strcmp(host, "localhost") == 0)
			strcpy(host, "127.0.0.1");
		memset(&ss, 0, sizeof(ss));
		if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
			((struct sockaddr_in *)&ss)->sin_family = AF_INET;
			((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
			slen = sizeof(struct sockaddr_in);
		} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) ==
			   1) {
			((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
			((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
			slen = sizeof(struct sockaddr_in6);
		} else {
			return strata_err(EINVAL,
					  "metrics address %s: the host must be an IP address "
					  "or localhost",
					  addr);
		}
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return strata_err(errno, "socket: %s", strerror(errno));
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, 16) < 0) {
			rc = strata_err(errno, "metrics address %s: %s", addr, strerror(errno));
			close(fd);
			return rc;
		}
		return fd;
	}
}

int metrics_start(const char *addr, struct store *s, struct fetch_client *fc, struct quota *q,
		  struct metrics **out)
{
	struct metrics *m = calloc(1, sizeof(*m));
	int rc;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->store = s;
	m->fetch = fc;
	m->quota = q;
	m->stop_pipe[0] = m->stop_pipe[1] = -1;
	m->lfd = bind_addr(m, addr);
	if (m->lfd < 0) {
		rc = m->lfd;
		free(m);
		return rc;
	}
	if (pipe2(m->stop_pipe, O_CLOEXEC) < 0) {
		rc = strata_err(errno, "pipe: %s", strerror(errno));
		metrics_stop(m);
		return rc;
	}
	m->started = util_thread_start(&m->thread, metrics_main, m) == 0;
	if (!m->started) {
		metrics_stop(m);
		return strata_err(EAGAIN, "cannot start the metrics thread");
	}
	*out = m;
	return 0;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	if (m->started) {
		if (write(m->stop_pipe[1], "x", 1) < 0)
			strata_log(LOG_WARNING, "metrics: cannot stop the thread: %s",
				   strerror(errno));
		pthread_join(m->thread, NULL);
	}
	if (m->lfd >= 0)
		close(m->lfd);
	if (m->unix_path) {
		unlink(m->unix_path);
		free(m->unix_path);
	}
	for (int i = 0; i < 2; i++) {
		if (m->stop_pipe[i] >= 0)
			close(m->stop_pipe[i]);
	}
	free(m);
}
