/* SPDX-License-Identifier: Apache-2.0 */
/* The registry client: its options, shared curl state, pool of idle easy handles, and counters. */
#include "registry.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include <curl/curl.h>

#include "registry_i.h"
#include "util/log.h"

#define DEFAULT_CONNECT_TIMEOUT_MS  10000L
#define DEFAULT_LOW_SPEED_S	    30L
#define DEFAULT_ATTEMPTS	    3
#define RETRY_AFTER_MAX_S	    10L
#define DEFAULT_PER_HOST	    8
#define DEFAULT_BREAKER_FAILURES    5
#define DEFAULT_BREAKER_COOLDOWN_MS 10000L

/* --- process-wide setup --- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static pthread_once_t arch_once = PTHREAD_ONCE_INIT;
static const char *host_arch;
static char host_machine[65];

static void arch_init(void)
{
	static const struct {
		const char *machine;
		const char *goarch;
	} map[] = {
		{ "x86_64", "amd64" }, { "amd64", "amd64" },	 { "aarch64", "arm64" },
		{ "arm64", "arm64" },  { "i386", "386" },	 { "i486", "386" },
		{ "i586", "386" },     { "i686", "386" },	 { "ppc64le", "ppc64le" },
		{ "s390x", "s390x" },  { "riscv64", "riscv64" },
	};
	struct utsname u;

	host_arch = "unknown";
	if (uname(&u) != 0)
		return;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(u.machine, map[i].machine) == 0) {
			host_arch = map[i].goarch;
			return;
		}
	}
	if (strncmp(u.machine, "arm", 3) == 0) {
		host_arch = "arm";
		return;
	}
	snprintf(host_machine, sizeof(host_machine), "%s", u.machine);
	host_arch = host_machine;
}

const char *fetch_host_arch(void)
{
	pthread_once(&arch_once, arch_init);
	return host_arch;
}

/* --- client --- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userp)
{
	struct fetch_client *c = userp;

	(void)h;
	(void)access;
	assert((unsigned int)data < CURL_LOCK_DATA_LAST);
	pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userp)
{
	struct fetch_client *c = userp;

	(void)h;
	assert((unsigned int)data < CURL_LOCK_DATA_LAST);
	pthread_mutex_unlock(&c->share_locks[data]);
}

void fetch_client_free(struct fetch_client *c)
{
	if (!c)
		return;
	/* easy handles first: they may still reference the share */
	for (size_t i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	if (c->share)
		curl_share_cleanup(c->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_locks[i]);
	pthread_mutex_destroy(&c->pool_lock);
	fetch_route_clear(c);
	pthread_mutex_destroy(&c->hosts_lock);
	fetch_authorize_clear(c);
	pthread_mutex_destroy(&c->auth_lock);
	fetch_retry_clear(c);
	pthread_cond_destroy(&c->hs_cond);
	pthread_mutex_destroy(&c->hs_lock);
	free(c->hosts_dir);
	free(c->os);
	free(c->arch);
	free(c->variant);
	free(c);
}

int fetch_client_new(const struct fetch_opts *opts, struct fetch_client **out)
{
	static const struct fetch_opts defaults;
	struct fetch_client *c = NULL;
	int rc;

	*out = NULL;
	if (!opts)
		opts = &defaults;
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return strata_err(EIO, "curl_global_init: %s", curl_easy_strerror(global_rc));

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_mutex_init(&c->hosts_lock, NULL);
	pthread_mutex_init(&c->auth_lock, NULL);
	pthread_mutex_init(&c->hs_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&c->hs_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	c->read_timeout_ms = opts->read_timeout_ms > 0 ? opts->read_timeout_ms : 0;
	c->retry_after_max_ms = 1000L * (opts->retry_after_max_s > 0 ? opts->retry_after_max_s :
								       RETRY_AFTER_MAX_S);
	c->max_per_host = opts->max_per_host > 0 ? opts->max_per_host : DEFAULT_PER_HOST;
	c->breaker_failures = opts->breaker_failures > 0 ? (unsigned)opts->breaker_failures :
							   DEFAULT_BREAKER_FAILURES;
	c->breaker_cooldown_ms = opts->breaker_cooldown_ms > 0 ? opts->breaker_cooldown_ms :
								 DEFAULT_BREAKER_COOLDOWN_MS;
	c->strict_cache = opts->strict_cache;
	c->hosts_dir = opts->hosts_dir && *opts->hosts_dir ? strdup(opts->hosts_dir) : NULL;
	c->os = strdup(opts->platform_os ? opts->platform_os : "linux");
	c->arch = strdup(opts->platform_arch ? opts->platform_arch : fetch_host_arch());
	c->variant = opts->platform_variant ? strdup(opts->platform_variant) : NULL;
	c->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms :
							       DEFAULT_CONNECT_TIMEOUT_MS;
	c->download_base_s = opts->download_base_s > 0 ? opts->download_base_s :
							 FETCH_DOWNLOAD_BASE_S;
	c->download_min_rate = opts->download_min_rate > 0 ? opts->download_min_rate :
							     FETCH_DOWNLOAD_MIN_RATE;
	c->low_speed_s = opts->low_speed_timeout_s > 0 ? opts->low_speed_timeout_s :
							 DEFAULT_LOW_SPEED_S;
	c->max_attempts = opts->max_attempts > 0 ? opts->max_attempts : DEFAULT_ATTEMPTS;
	if (!c->os || !c->arch || (opts->platform_variant && !c->variant) ||
	    (opts->hosts_dir && *opts->hosts_dir && !c->hosts_dir)) {
		rc = -ENOMEM;
		goto out;
	}

	c->share = curl_share_init();
	if (!c->share) {
		rc = -ENOMEM;
		goto out;
	}
	if (curl_share_setopt(c->share, CURLSHOPT_USERDATA, c) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) !=
		    CURLSHE_OK) {
		rc = strata_err(EIO, "curl share setup failed");
		goto out;
	}
	*out = c;
	c = NULL;
	rc = 0;
out:
	fetch_client_free(c);
	return rc;
}

/* --- the handle pool --- */

/* Takes an idle easy handle from the pool, or makes one. Returns NULL on allocation failure. */
CURL *fetch_handle_get(struct fetch_client *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->npool > 0)
		h = c->pool[--c->npool];
	pthread_mutex_unlock(&c->pool_lock);
	return h ? h : curl_easy_init();
}

/* Returns h to the pool with its options cleared (its live connections stay open). */
void fetch_handle_put(struct fetch_client *c, CURL *h)
{
	if (!h)
		return;
	curl_easy_reset(h);
	pthread_mutex_lock(&c->pool_lock);
	if (c->npool < POOL_MAX) {
		c->pool[c->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

/* --- counters --- */

void fetch_client_counters(struct fetch_client *c, struct fetch_counters *out)
{
	memset(out, 0, sizeof(*out));
	if (!c)
		return;
	out->requests = atomic_load_explicit(&c->n_requests, memory_order_relaxed);
	out->bytes = atomic_load_explicit(&c->n_bytes, memory_order_relaxed);
	out->retries = atomic_load_explicit(&c->n_retries, memory_order_relaxed);
	out->range_requests = atomic_load_explicit(&c->n_range, memory_order_relaxed);
	out->fallbacks = atomic_load_explicit(&c->n_fallbacks, memory_order_relaxed);
}
