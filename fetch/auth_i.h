/* SPDX-License-Identifier: Apache-2.0 */
/* Private to fetch/'s authentication (auth.h): what the credential and token files share. */
#ifndef STRATA_FETCH_AUTH_I_H
#define STRATA_FETCH_AUTH_I_H

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "clock_i.h"

/* Wipes and frees a secret string. Accepts NULL. */
static inline void fetch_auth_free_secret(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/*
 * Runs "docker-credential-<helper> get" (auth_helper.c) with server on stdin, for at most the
 * helper timeout (fetch_auth_helper_timeout_ms), or limit_ms when > 0 and shorter. Returns 0 with
 * the answer's fields in *out (caller frees with fetch_creds_clear); -ENOENT when the helper says it
 * has no credentials; -ETIMEDOUT, -EIO, -EINVAL, -ENOMEM with strata_err set (never quoting the
 * helper's output); *out is cleared on failure. Thread-safe.
 */
int fetch_auth_run_helper(const char *helper, const char *server, long limit_ms,
			  struct fetch_creds *out);

#endif
