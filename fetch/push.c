/* SPDX-License-Identifier: Apache-2.0 */
/* Pushes: blobs (HEAD, then a monolithic upload) and manifests. */
#include "registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "registry_i.h"
#include "util/log.h"
#include "util/sha256.h"

/* Whether s is a tag or a digest that can go into a URL path unescaped. */
static int reference_safe(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("_.-:+=", *s)))
			return 0;
	return 1;
}

/* A resolved upload location: where to PUT, what to print instead, and which host it is on. */
struct upload {
	char *url;		   /* absolute, with digest=<digest> appended to the query */
	char *shown;		   /* without query, fragment and user info */
	char *host;		   /* "host" or "host:port" */
	const struct host_cfg *hc; /* the host that started the upload (TLS, headers) */
};

static void upload_clear(struct upload *up)
{
	free(up->url);
	free(up->shown);
	free(up->host);
	memset(up, 0, sizeof(*up));
}

/* Resolves an upload Location (absolute, or relative to base, the URL that returned it) into up.
 * The location's value is never printed: its query may carry a signature. Returns 0, -EIO for an
 * unusable location, or -ENOMEM; up is cleared by the caller either way. */
static int upload_resolve(const char *base, const char *location, const char *digest,
			  struct upload *up)
{
	CURLU *u = curl_url();
	char *sch = NULL, *host = NULL, *port = NULL, *s = NULL;
	int rc;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_URL, location, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &sch, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		rc = strata_err(EIO, "%s: the registry returned an unusable upload location", base);
		goto out;
	}
	if (strcasecmp(sch, "http") != 0 && strcasecmp(sch, "https") != 0) {
		rc = strata_err(EIO, "%s: the registry returned a %s:// upload location", base,
				sch);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK) {
		rc = -ENOMEM;
		goto out;
	}
	up->url = strdup(s);
	curl_free(s);
	s = NULL;
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
		port = NULL; /* the scheme's default */
	if (asprintf(&up->host, "%s%s%s", host, port ? ":" : "", port ? port : "") < 0)
		up->host = NULL;
	if (curl_url_set(u, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK) {
		rc = -ENOMEM;
		goto out;
	}
	up->shown = strdup(s);
	if (!up->url || !up->host || !up->shown) {
		rc = -ENOMEM;
		goto out;
	}
	rc = fetch_route_url_add_query(&up->url, "digest", digest);
	if (rc == -EINVAL)
		rc = strata_err(EIO, "%s: cannot add the digest to the upload location", up->shown);
out:
	curl_free(s);
	curl_free(port);
	curl_free(host);
	curl_free(sch);
	curl_url_cleanup(u);
	return rc;
}

/* HEAD of blob `digest`: 1 when the registry has it (2xx, or a redirect to its storage, which is
 * not followed), 0 when it does not (404), or negative errno with strata_err set. */
static int blob_exists(struct fetch_client *c, const struct fetch_ref *ref, const char *digest)
{
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = fetch_route_init(&r, c, ref, "blobs", digest, &url, &what);
	if (rc < 0)
		goto out;
	r.method = M_HEAD;
	r.need_cap = FETCH_CAP_PUSH; /* asks the registry it will push to */
	rc = fetch_route_request(&r);
	if (rc == 0) {
		rc = 1;
	} else if (rc == -ENOENT) {
		strata_err_clear();
		rc = 0;
	}
out:
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

/* POST /v2/<path>/blobs/uploads/ (202 with a Location) and resolves where the PUT goes into up. */
static int upload_start(struct fetch_client *c, const struct fetch_ref *ref, const char *what,
			const char *digest, struct upload *up)
{
	char *url = NULL, *rwhat = NULL;
	struct req r = { 0 };
	int rc;

	rc = fetch_route_init(&r, c, ref, "blobs/uploads", "", &url, &rwhat);
	if (rc < 0)
		goto out;
	r.what = what;
	r.method = M_POST;
	r.want_location = 1;
	rc = fetch_route_request(&r);
	if (rc < 0)
		goto out;
	if (r.status != 202) {
		rc = strata_err(EIO, "%s: starting an upload: HTTP %ld (want 202)", url, r.status);
		goto out;
	}
	if (!r.location || !*r.location) {
		rc = strata_err(EIO, "%s: HTTP 202 without a Location header", url);
		goto out;
	}
	rc = upload_resolve(url, r.location, digest, up);
	up->hc = r.hc;
out:
	free(r.location);
	free(r.errbody);
	free(rwhat);
	free(url);
	return rc;
}

/* PUTs the whole blob to an upload location, closing the upload (201). */
static int upload_put(struct fetch_client *c, const struct fetch_ref *ref, const struct upload *up,
		      const char *what, const char *digest, const void *data, size_t len)
{
	struct req r = { 0 };
	int rc;

	r.c = c;
	r.url = up->url;
	r.shown_url = up->shown;
	r.what = what;
	r.host = up->host;
	r.hc = up->hc;
	r.auth_ref = ref; /* the location is on the registry that started the upload */
	r.method = M_PUT;
	r.src = data;
	r.src_len = len;
	r.src_type = "application/octet-stream";
	rc = fetch_route_request(&r);
	if (rc < 0)
		goto out;
	if (r.status != 201) {
		rc = strata_err(EIO, "%s: finishing the upload: HTTP %ld (want 201)", up->shown,
				r.status);
		goto out;
	}
	if (strncmp(r.docker_digest, "sha256:", 7) == 0 &&
	    strcasecmp(r.docker_digest, digest) != 0) {
		rc = strata_err(EBADMSG, "%s: the registry stored the blob as %s", what,
				r.docker_digest);
		goto out;
	}
	rc = 0;
out:
	free(r.errbody);
	return rc;
}

int fetch_blob_push(struct fetch_client *c, const struct fetch_ref *ref, const void *data,
		    size_t len, const char *digest)
{
	char want[UTIL_DIGEST_STR_LEN];
	struct upload up = { 0 };
	char *what = NULL;
	int rc;

	rc = util_digest_normalize(digest, want);
	if (rc < 0)
		return rc;
	if (asprintf(&what, "%s/%s@%s", ref->domain, ref->path, want) < 0)
		return -ENOMEM;
	rc = blob_exists(c, ref, want);
	if (rc != 0) {
		if (rc > 0) {
			strata_debug("%s: already in the registry", what);
			rc = 0;
		}
		goto out;
	}
	rc = upload_start(c, ref, what, want, &up);
	if (rc < 0)
		goto out;
	rc = upload_put(c, ref, &up, what, want, data, len);
out:
	upload_clear(&up);
	free(what);
	return rc;
}

int fetch_manifest_push(struct fetch_client *c, const struct fetch_ref *ref,
			const char *tag_or_digest, const char *media_type, const void *body,
			size_t len)
{
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	if (!reference_safe(tag_or_digest))
		return strata_err(EINVAL, "invalid tag or digest '%.80s'", tag_or_digest);
	if (!media_type || !*media_type || !fetch_http_header_safe(media_type))
		return strata_err(EINVAL, "invalid manifest media type");
	rc = fetch_route_init(&r, c, ref, "manifests", tag_or_digest, &url, &what);
	if (rc < 0)
		goto out;
	r.method = M_PUT;
	r.src = body;
	r.src_len = len;
	r.src_type = media_type;
	rc = fetch_route_request(&r);
	if (rc < 0)
		goto out;
	if (r.status != 201) {
		rc = strata_err(EIO, "%s: HTTP %ld (want 201)", url, r.status);
		goto out;
	}
	rc = 0;
out:
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}
