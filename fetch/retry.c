/* SPDX-License-Identifier: Apache-2.0 */
/* A registry request's attempts: retries with full-jitter backoff, 429 and Retry-After, each host's
 * concurrency slots and circuit breaker, and the deadline that bounds every wait of a read. */
#include "registry.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "registry_i.h"
#include "util/log.h"

#define BACKOFF_BASE_MS		200L
#define BACKOFF_MAX_SHIFT	8
#define RETRY_AFTER_LIMIT_S	86400L /* a host's "not before" is kept at most this far ahead */
#define MAX_THROTTLED		8 /* 429 answers one request waits out, beyond its max_attempts */
#define BREAKER_COOLDOWN_MAX_MS 120000L

/* --- 429, 5xx and Retry-After: whether and when to try again --- */

long fetch_retry_after_parse(const char *v)
{
	uint64_t secs;
	char *end;
	time_t t;

	if (!v[0])
		return 0;
	if (fetch_http_parse_u64(v, &end, &secs) == 0 && *end == '\0')
		return secs > (uint64_t)RETRY_AFTER_LIMIT_S ? RETRY_AFTER_LIMIT_S : (long)secs;
	t = curl_getdate(v, NULL);
	if (t == (time_t)-1)
		return 0;
	t -= time(NULL);
	if (t <= 0)
		return 0;
	return t > RETRY_AFTER_LIMIT_S ? RETRY_AFTER_LIMIT_S : (long)t;
}

/* Whether the attempt's final HTTP status asks for another attempt: 429 (the host pacing its
 * clients) and 5xx do, with the server's delay (Retry-After, 0 when none) in *retry_after_s. Only
 * for an attempt that ended in its status (r->status_err); the errno is fetch_http_perform()'s. */
static int status_retry(const struct req *r, long *retry_after_s)
{
	*retry_after_s = 0;
	if (!r->status_err || !(r->status == 429 || r->status >= 500))
		return 0;
	*retry_after_s = fetch_retry_after_parse(r->retry_after);
	return 1;
}

/* A random delay in [0, cap] ms. */
static long jitter_ms(long cap)
{
	static _Thread_local unsigned int seed;

	if (seed == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (unsigned int)(ts.tv_nsec ^ ts.tv_sec ^ (long)(uintptr_t)&seed) | 1u;
	}
	return (long)((double)rand_r(&seed) / RAND_MAX * (double)cap);
}

/* Full-jitter backoff: a random delay in [0, 200 ms * 2^attempt]. */
static long backoff_ms(int attempt)
{
	return jitter_ms(BACKOFF_BASE_MS
			 << (attempt < BACKOFF_MAX_SHIFT ? attempt : BACKOFF_MAX_SHIFT));
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* --- per-host state: Retry-After, concurrency, circuit breaker --- */

void fetch_retry_clear(struct fetch_client *c)
{
	while (c->hosts) {
		struct host_state *hs = c->hosts;

		c->hosts = hs->next;
		free(hs->host);
		free(hs);
	}
}

/* The state of host, listed on first use. Returns it (owned by the client), or NULL without memory. */
static struct host_state *host_state_get(struct fetch_client *c, const char *host)
{
	struct host_state *hs;

	pthread_mutex_lock(&c->hs_lock);
	for (hs = c->hosts; hs; hs = hs->next)
		if (strcmp(hs->host, host) == 0)
			goto out;
	hs = calloc(1, sizeof(*hs));
	if (hs && !(hs->host = strdup(host))) {
		free(hs);
		hs = NULL;
	}
	if (hs) {
		struct host_state **tail = &c->hosts;

		while (*tail)
			tail = &(*tail)->next;
		*tail = hs;
	}
out:
	pthread_mutex_unlock(&c->hs_lock);
	return hs;
}

/* "cannot try" error for an open circuit. Caller holds hs_lock. */
static int breaker_err(const struct host_state *hs, int64_t now)
{
	int64_t left = hs->open_until_ms > now ? hs->open_until_ms - now : 0;

	return strata_err(EHOSTUNREACH, "%s: circuit open after %u failures, retrying after %llds",
			  hs->host, hs->fails, (long long)((left + 999) / 1000));
}

/* --- the deadline of a call (a read's timeout) --- */

/* The error for a call whose deadline passed, with the failure that used up the time (rc, may be
 * 0). */
int fetch_deadline_err(const struct req *r, int rc)
{
	char last[512] = "";

	if (rc < 0)
		snprintf(last, sizeof(last), " (last error: %s)", strata_errmsg(rc));
	if (r->deadline_what[0])
		return strata_err(ETIMEDOUT, "%s: %s expired%s", r->what, r->deadline_what, last);
	return strata_err(ETIMEDOUT, "%s: read timeout of %lds expired%s", r->what,
			  (r->timeout_ms + 999) / 1000, last);
}

/* What is left of r's deadline in ms (at least 1), or 0 when r has none. */
long fetch_deadline_left_ms(const struct req *r)
{
	int64_t left;

	if (!r->deadline_ms)
		return 0;
	left = r->deadline_ms - fetch_now_ms();
	return left > 1 ? (long)left : 1;
}

/* --- per-host slots and circuit breaker --- */

/*
 * Admits one attempt of r to its host: fails fast while the host's circuit is open (during the
 * half-open period one request, *probe set, goes through) unless the host is the last endpoint
 * that could take r (then the request goes through, bounded by its deadline, so the first
 * request after the registry recovered succeeds and closes the circuit), then waits for a free slot of the host's
 * semaphore and for the host's Retry-After to pass. A wait longer than the client's Retry-After
 * bound, or past r's deadline, fails instead (the host is not asked early). Returns 0 holding a
 * slot (give it back with slot_release()), or negative errno with strata_err set.
 */
static int slot_acquire(struct req *r, int *probe, int prev_rc)
{
	struct fetch_client *c = r->c;
	struct host_state *hs = r->hs;
	int rc = 0;

	*probe = 0;
	pthread_mutex_lock(&c->hs_lock);
	for (;;) {
		int64_t now = fetch_now_ms(), until;
		struct timespec ts;

		if (hs->open_until_ms && !r->last_endpoint) {
			if (now < hs->open_until_ms || hs->probing) {
				rc = breaker_err(hs, now);
				break;
			}
		}
		if (r->deadline_ms && now >= r->deadline_ms) {
			rc = fetch_deadline_err(r, prev_rc);
			break;
		}
		if (hs->not_before_ms > now) {
			if (hs->not_before_ms - now >
			    c->retry_after_max_ms * 5 / 4) { /* + jitter */
				rc = strata_err(EAGAIN,
						"%s: rate limited, retry after %llds (more than "
						"the %lds wait bound)",
						hs->host,
						(long long)((hs->not_before_ms - now + 999) / 1000),
						c->retry_after_max_ms / 1000);
				break;
			}
			if (r->deadline_ms && hs->not_before_ms > r->deadline_ms) {
				rc = fetch_deadline_err(r, prev_rc);
				break;
			}
			until = hs->not_before_ms;
		} else if (hs->inflight >= c->max_per_host) {
			until = now + 1000;
			if (r->deadline_ms && until > r->deadline_ms)
				until = r->deadline_ms;
		} else {
			hs->inflight++;
			if (hs->open_until_ms && !hs->probing) {
				hs->probing = 1;
				*probe = 1;
			}
			break;
		}
		ts.tv_sec = until / 1000;
		ts.tv_nsec = (until % 1000) * 1000000L;
		pthread_cond_timedwait(&c->hs_cond, &c->hs_lock, &ts);
	}
	pthread_mutex_unlock(&c->hs_lock);
	return rc;
}

enum outcome { O_OK, O_FAIL, O_NEUTRAL };

/* Gives back the slot of slot_acquire() and feeds the attempt's outcome to the host's breaker:
 * O_OK (an HTTP answer that is not 429 or 5xx) closes it; O_FAIL (connection error, timeout, 5xx)
 * counts towards opening it, and a failed probe opens it again for twice as long; O_NEUTRAL (429,
 * local errors) only ends a probe. retry_after_s > 0 moves the host's "not before" time. */
static void slot_release(struct req *r, int probe, enum outcome o, long retry_after_s)
{
	struct fetch_client *c = r->c;
	struct host_state *hs = r->hs;
	int64_t now = fetch_now_ms();
	int opened = 0;

	pthread_mutex_lock(&c->hs_lock);
	assert(hs->inflight > 0);
	hs->inflight--;
	if (retry_after_s > 0) {
		/* never before Retry-After; a little after it, at random, so that the clients a
		 * host throttled at once do not all come back at once */
		int64_t nb = now + retry_after_s * 1000 + jitter_ms(retry_after_s * 250);

		if (nb > hs->not_before_ms)
			hs->not_before_ms = nb;
	}
	if (probe)
		hs->probing = 0;
	if (o == O_OK) {
		if (hs->open_until_ms)
			strata_log(LOG_NOTICE, "%s: circuit closed (probe succeeded)", hs->host);
		hs->fails = 0;
		hs->open_until_ms = 0;
		hs->cooldown_ms = 0;
	} else if (o == O_FAIL) {
		hs->fails++;
		if (probe) {
			hs->cooldown_ms = hs->cooldown_ms * 2 > BREAKER_COOLDOWN_MAX_MS ?
						  BREAKER_COOLDOWN_MAX_MS :
						  hs->cooldown_ms * 2;
			hs->open_until_ms = now + hs->cooldown_ms;
			opened = 1;
		} else if (!hs->open_until_ms && hs->fails >= c->breaker_failures) {
			hs->cooldown_ms = c->breaker_cooldown_ms;
			hs->open_until_ms = now + hs->cooldown_ms;
			opened = 1;
		}
	}
	if (opened)
		strata_log(LOG_WARNING, "%s: circuit open after %u failures, retrying after %lds",
			   hs->host, hs->fails, (hs->cooldown_ms + 999) / 1000);
	pthread_cond_broadcast(&c->hs_cond);
	pthread_mutex_unlock(&c->hs_lock);
}

/* How an attempt's result counts for the breaker. */
static enum outcome attempt_outcome(const struct req *r, int rc)
{
	if (rc == 0)
		return O_OK;
	if (r->transport_err)
		return O_FAIL;
	if (r->status >= 500)
		return O_FAIL;
	if (r->status == 429 || r->status == 0)
		return O_NEUTRAL;
	return O_OK; /* 4xx, short range: the host answered */
}

/* --- the request loop --- */

/* Runs r to completion with retries, each attempt admitted by slot_acquire(). Returns 0 with the
 * body in the sink, or negative errno with strata_err set. r->mem and r->errbody stay owned by the
 * caller either way. */
int fetch_retry_request(struct req *r)
{
	struct curl_slist *headers = NULL;
	CURL *h;
	int rc, retry, probe = 0, throttled = 0;
	long retry_after_s, delay;

	r->hs = r->host ? host_state_get(r->c, r->host) : NULL;
	if (r->host && !r->hs)
		return -ENOMEM;
	h = fetch_handle_get(r->c);
	if (!h)
		return strata_err(ENOMEM, "%s: cannot create a curl handle", fetch_http_url(r));
	rc = fetch_http_setup(r, h, &headers);
	if (rc < 0)
		goto out;
	for (int attempt = 0;; attempt++) {
		if (attempt > 0) {
			int rrc = fetch_http_sink_reset(r);

			if (rrc < 0) {
				strata_debug("%s: cannot rewind the output to retry: %s",
					     fetch_http_url(r), strerror(-rrc));
				break; /* keep the transfer's error, it says more */
			}
		}
		if (r->hs) {
			int arc = slot_acquire(r, &probe, attempt > 0 ? rc : 0);

			if (arc < 0) {
				rc = arc;
				break;
			}
		}
		if (r->deadline_ms) {
			int64_t left = r->deadline_ms - fetch_now_ms();

			if (r->kind == SINK_MEM && left > FETCH_DOC_TIMEOUT_MS)
				left = FETCH_DOC_TIMEOUT_MS;
			curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(left > 1 ? left : 1));
		}
		r->retry_after[0] = '\0';
		rc = fetch_http_perform(r, h, attempt, &retry);
		if (status_retry(r, &retry_after_s))
			retry = 1;
		if (r->status == 429 && rc < 0)
			throttled++;
		if (r->hs) {
			if (r->status == 429)
				atomic_fetch_add_explicit(&r->hs->n_429, 1, memory_order_relaxed);
			slot_release(r, probe, attempt_outcome(r, rc), retry_after_s);
		}
		/* a 429 is the host pacing its clients, not a failure: it does not use up an attempt
		 * (up to MAX_THROTTLED of them) */
		if (rc == 0 || !retry || attempt + 1 - throttled >= r->c->max_attempts ||
		    throttled > MAX_THROTTLED)
			break;
		/* a Retry-After is waited for in slot_acquire(), for every request to the host */
		delay = retry_after_s > 0 && r->hs ? 0 : backoff_ms(attempt);
		if (retry_after_s > 0 && !r->hs)
			delay = retry_after_s * 1000 > r->c->retry_after_max_ms ?
					r->c->retry_after_max_ms :
					retry_after_s * 1000;
		if (r->deadline_ms) {
			int64_t left = r->deadline_ms - fetch_now_ms();

			if (left <= 0) {
				rc = fetch_deadline_err(r, rc);
				break;
			}
			if (delay > left)
				delay = (long)left;
		}
		strata_debug("%s: attempt %d failed (%s); retrying in %ld ms", fetch_http_url(r),
			     attempt + 1, strata_errmsg(rc), delay);
		sleep_ms(delay);
	}
out:
	curl_slist_free_all(headers);
	fetch_handle_put(r->c, h);
	return rc;
}

/* --- per-host statistics --- */

void fetch_client_hosts(struct fetch_client *c,
			void (*fn)(void *ctx, const struct fetch_host_stats *s), void *ctx)
{
	int64_t now = fetch_now_ms();

	if (!c)
		return;
	pthread_mutex_lock(&c->hs_lock);
	for (const struct host_state *hs = c->hosts; hs; hs = hs->next) {
		struct fetch_host_stats st = {
			.host = hs->host,
			.requests = atomic_load_explicit(&hs->n_requests, memory_order_relaxed),
			.bytes = atomic_load_explicit(&hs->n_bytes, memory_order_relaxed),
			.retries = atomic_load_explicit(&hs->n_retries, memory_order_relaxed),
			.throttled = atomic_load_explicit(&hs->n_429, memory_order_relaxed),
			.fallbacks = atomic_load_explicit(&hs->n_fallbacks, memory_order_relaxed),
			.breaker = !hs->open_until_ms	   ? "closed" :
				   now < hs->open_until_ms ? "open" :
							     "half-open",
			.failures = hs->fails,
		};

		fn(ctx, &st);
	}
	pthread_mutex_unlock(&c->hs_lock);
}
