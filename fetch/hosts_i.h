/* SPDX-License-Identifier: Apache-2.0 */
/* Private to fetch/: the host list's representation, shared by the hosts.toml model (hosts.c) and
 * the certs.d directory lookup (hosts_dir.c). */
#ifndef STRATA_FETCH_HOSTS_I_H
#define STRATA_FETCH_HOSTS_I_H

#include <stddef.h>

#include "hosts.h"

struct warning {
	int line;
	size_t seq;
	char *msg;
};

struct fetch_hosts {
	struct fetch_host *hosts;
	size_t n;
	struct warning *warnings;
	size_t nwarnings;
	char *source;
};

/* --- hosts.c --- */

/* A new zeroed host at the end of h (skip_verify and dial_timeout unset, all capabilities).
 * Returns it (owned by h), or NULL on allocation failure. */
struct fetch_host *fetch_hosts_add(struct fetch_hosts *h);

/* Appends a CA path to host; consumes path (NULL: -ENOMEM), also on failure. Returns 0 or
 * -ENOMEM. */
int fetch_host_add_ca(struct fetch_host *host, char *path);

/* Appends a client certificate (key NULL: in the cert file) to host; consumes cert and key, also
 * on failure; want_key: key must not be NULL. Returns 0 or -ENOMEM (also for a NULL that should
 * not be). */
int fetch_host_add_client(struct fetch_host *host, char *cert, char *key, int want_key);

/* Makes host the server containerd uses when hosts.toml names none: https://<registry>/v2
 * (registry-1.docker.io for docker.io; http:// and skip_verify for loopback registries unless
 * set), all capabilities. Returns 0 or -ENOMEM. */
int fetch_hosts_default_server(const char *registry, struct fetch_host *host);

/* 0 when registry can name a host directory, else -EINVAL with strata_err set. */
int fetch_hosts_check_registry(const char *registry);

/* --- hosts_dir.c --- */

/* Go's path.Clean, in place; s must not be empty. */
void fetch_path_clean(char *s);

/* base/p cleaned (Go's filepath.Join). Returns a malloc'd string or NULL. */
char *fetch_path_join(const char *base, const char *p);

#endif
