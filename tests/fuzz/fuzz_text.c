/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz targets over small texts: hosts.toml, the config file, WWW-Authenticate, references and
 * Retry-After (FUZZ_TEXT selects which one this object is built as). */
#include <stdlib.h>
#include <string.h>

#include "fetch/auth.h"
#include "fetch/hosts.h"
#include "fetch/ref.h"
#include "fetch/registry_i.h"
#include "fuzz.h"
#include "tools/config.h"
#include "util/log.h"

#define TEXT_MAX (1u << 20)

static void one(const char *s, size_t len)
{
#if FUZZ_TEXT == 1
	struct fetch_hosts *h = NULL;

	if (fetch_hosts_parse(s, len, "hosts.toml", "registry.example:5000", &h) == 0) {
		for (size_t i = 0; i < fetch_hosts_count(h); i++)
			free(fetch_host_base_url(fetch_hosts_get(h, i)));
	}
	fetch_hosts_free(h);
#elif FUZZ_TEXT == 2
	struct config cfg;
	char err[256];

	if (config_parse("config.toml", s, len, &cfg, err, sizeof(err)) == 0)
		config_free(&cfg);
#elif FUZZ_TEXT == 3
	struct fetch_challenge ch = { 0 };

	(void)len;
	fetch_challenge_parse(s, &ch);
	fetch_challenge_clear(&ch);
#elif FUZZ_TEXT == 4
	struct fetch_ref *r = NULL;

	(void)len;
	if (fetch_ref_parse(s, &r) == 0) {
		free(fetch_ref_string(r));
		fetch_ref_api_host(r);
		fetch_ref_is_loopback(r);
	}
	fetch_ref_free(r);
#elif FUZZ_TEXT == 5
	long s_after = fetch_retry_after_parse(s);

	(void)len;
	if (s_after < 0 || s_after > 86400)
		abort();
#else
#error "FUZZ_TEXT selects the parser: 1 hosts.toml, 2 config, 3 WWW-Authenticate, 4 reference, 5 Retry-After"
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size > TEXT_MAX)
		return 0;
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	one(s, size);
	free(s);
	strata_err_clear();
	return 0;
}
