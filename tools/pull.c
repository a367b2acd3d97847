/* SPDX-License-Identifier: Apache-2.0 */
/* strata pull: resolve images, index their layers into the store, and register them. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "pull_i.h"
#include "artifact.h"
#include "cli.h"
#include "cmd.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "index/decomp.h"
#include "index/layer.h"
#include "sign.h"
#include "store/store.h"
#include "util/log.h"

static char *image_json(const char *name, const struct fetch_image *img, struct pull_layer *pls)
{
	json_t *layers = json_array();
	json_t *o;
	char *s;

	for (size_t i = 0; i < img->nlayers; i++) {
		const struct fetch_layer *fl = &img->layers[i];

		json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:s}", "digest",
							fl->digest, "media_type", fl->media_type,
							"size", (json_int_t)fl->size, "diff_id",
							pls[i].info.diff_id));
	}
	o = json_pack("{s:s, s:s, s:I, s:s?, s:s, s:s, s:s, s:o, s:I}", "ref", name, "manifest",
		      img->manifest_digest, "manifest_size", (json_int_t)img->manifest_len, "index",
		      img->index_digest, "media_type", img->media_type, "config",
		      img->config_digest, "platform", img->platform ? img->platform : "", "layers",
		      layers, "pulled", (json_int_t)time(NULL));
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

/* Parses the reference and resolves it to an image manifest. */
static int resolve(struct pull *p, const char *arg)
{
	struct cli *c = p->c;
	int rc = fetch_ref_parse(arg, &p->ref);

	if (rc < 0)
		return cli_fail(c, "%s", strata_errmsg(rc));
	p->name = fetch_ref_string(p->ref);
	if (!p->name)
		return cli_fail(c, "out of memory");
	if (p->po->push) { /* before any work: a push nowhere may go (--strict-cache) sends nothing */
		rc = fetch_push_check(p->fc, p->ref);
		if (rc < 0)
			return cli_fail(c, "%s", strata_errmsg(rc));
	}
	rc = fetch_resolve(p->fc, p->ref, &p->img);
	if (rc < 0)
		return cli_fail(c, "%s", strata_errmsg(rc));
	p->pls = calloc(p->img->nlayers ? p->img->nlayers : 1, sizeof(*p->pls));
	if (!p->pls)
		return cli_fail(c, "out of memory");
	return 0;
}

/* artifact_trust "signed": the artifact found is used only when a trusted key signed it (its
 * cosign signature in the image's repository names it and the repository). Returns 0, or an error
 * after which the artifact is dropped (strata_err says why). */
static int check_signature(struct pull *p)
{
	const char *d = artifact_digest(p->art);
	int rc = sign_verify(p->fc, p->ref, d, p->po->keys, p->po->nkeys, p->art_signer);

	if (rc == 0) {
		strata_log(LOG_INFO, "%s: index artifact %s is signed by %s", p->name, d,
			   p->art_signer);
		return 0;
	}
	rc = strata_err_prefix(rc == -ENOENT ? EPERM : -rc,
			       "index artifact %s is not signed by a trusted key", d);
	artifact_free(p->art);
	p->art = NULL;
	p->art_signer[0] = '\0';
	return rc;
}

/* Checks every layer before fetching any, counts those missing from the store and, when some
 * are, looks for an index artifact. */
static int check_layers(struct pull *p)
{
	const struct fetch_image *img = p->img;
	int rc;

	for (size_t i = 0; i < img->nlayers; i++) {
		enum index_compression comp;

		p->pls[i].fl = &img->layers[i];
		p->pls[i].dup_of = -1;
		if (index_compression_of_media_type(img->layers[i].media_type, &comp) < 0)
			return cli_fail(p->c, "%s: layer %s has unsupported media type %s", p->name,
					img->layers[i].digest, img->layers[i].media_type);
	}
	/* Layers not in the store, or whose record only this image's own source can vouch for. */
	for (size_t i = 0; i < img->nlayers; i++) {
		struct store_layer tmp;

		const struct fetch_layer *fl = &img->layers[i];
		int toc_vouched;

		if (store_layer_get(p->c->store, fl->digest, &tmp, NULL, NULL) < 0) {
			p->missing++;
			continue;
		}
		toc_vouched = p->po->mode == MODE_AUTO && tmp.prov == STORE_PROV_TOC &&
			      fl->toc_digest && strcmp(tmp.prov_digest, fl->toc_digest) == 0;
		if (tmp.quarantine[0] || (tmp.prov != STORE_PROV_VERIFIED && !toc_vouched))
			p->missing++;
	}
	strata_err_clear();
	if (p->missing && p->po->mode != MODE_BUILD && p->po->trust != ARTIFACT_TRUST_NONE) {
		rc = artifact_find(p->fc, p->ref, img->manifest_digest, &p->art);
		if (rc == 0 && p->po->trust == ARTIFACT_TRUST_SIGNED)
			rc = check_signature(p);
		if (rc < 0 && (p->po->mode == MODE_ARTIFACT || rc != -ENOENT)) {
			if (p->po->mode == MODE_ARTIFACT)
				return cli_fail(p->c, "%s: %s", p->name,
						rc == -ENOENT ?
							"no index artifact in the registry "
							"(push one with 'strata index --push')" :
							strata_errmsg(rc));
			strata_log(LOG_WARNING, "%s: ignoring the index artifact: %s", p->name,
				   strata_errmsg(rc));
		}
	}
	return 0;
}

/* Stores layer i's record (or its pending record). Returns 0 or negative errno. */
static int commit_layer(struct pull *p, size_t i)
{
	struct pull_layer *pl = &p->pls[i];
	void *buf;
	size_t len;
	int rc;

	if (pl->record_pending)
		return store_pending_put(p->c->store, &pl->info, p->name);
	if (!pl->idx)
		return 0;
	if (pl->enc)
		return store_layer_put(p->c->store, &pl->info, pl->enc, pl->enc_len);
	rc = index_layer_encode(pl->idx, &buf, &len);
	if (rc == 0) {
		rc = store_layer_put(p->c->store, &pl->info, buf, len);
		free(buf);
	}
	return rc;
}

/* Every layer checked out: only now does anything become visible, the layers, then the image,
 * under the store's layers lock (gc waits). */
static int commit_image(struct pull *p)
{
	struct cli *c = p->c;
	char *json = NULL;
	int rc = 0;

	store_layers_rdlock(c->store);
	for (size_t i = 0; i < p->img->nlayers; i++) {
		rc = commit_layer(p, i);
		if (rc < 0) {
			rc = cli_fail(c, "%s: layer %s: %s", p->name, p->pls[i].fl->digest,
				      strata_errmsg(rc));
			goto out;
		}
	}
	json = image_json(p->name, p->img, p->pls);
	if (!json) {
		rc = cli_fail(c, "out of memory");
		goto out;
	}
	rc = store_image_put(c->store, p->name, json);
	store_layers_unlock(c->store);
	free(json);
	if (rc < 0)
		return cli_fail(c, "%s: %s", p->name, strata_errmsg(rc));
	return 0;
out:
	store_layers_unlock(c->store);
	return rc;
}

/* strata index --push: the layer indexes go to the registry as an artifact. */
static int push_index(struct pull *p)
{
	const struct fetch_image *img = p->img;
	const char **digests;
	int rc;

	if (p->art)
		snprintf(p->art_digest, sizeof(p->art_digest), "%s", artifact_digest(p->art));
	if (!p->po->push)
		return 0;
	digests = calloc(img->nlayers ? img->nlayers : 1, sizeof(*digests));
	for (size_t i = 0; digests && i < img->nlayers; i++)
		digests[i] = img->layers[i].digest;
	rc = digests ? artifact_push(p->c->store, p->fc, p->ref, img->manifest_digest,
				     img->media_type, img->manifest_len, digests, img->nlayers,
				     p->art_digest) :
		       -ENOMEM;
	free(digests);
	if (rc < 0)
		return cli_fail(p->c, "%s: pushing the index artifact: %s", p->name,
				strata_errmsg(rc));
	if (p->po->sign_key) {
		rc = sign_push(p->fc, p->ref, p->art_digest, p->po->sign_key);
		if (rc < 0)
			return cli_fail(p->c, "%s: signing index artifact %s: %s", p->name,
					p->art_digest, strata_errmsg(rc));
		util_key_fingerprint(p->po->sign_key, p->art_signer);
	}
	return 0;
}

static void print_result(struct pull *p)
{
	struct cli *c = p->c;
	const struct fetch_image *img = p->img;
	struct fetch_counters after;

	fetch_client_counters(p->fc, &after);
	if (c->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:[], s:[], s:I, s:I, s:I, s:I, s:s?}",
				      "ref", p->name, "manifest", img->manifest_digest, "platform",
				      img->platform ? img->platform : "", "layers", "index_sources",
				      "new_layers", (json_int_t)p->fresh, "streaming",
				      (json_int_t)p->streaming, "bytes_fetched",
				      (json_int_t)(after.bytes - p->before.bytes), "requests",
				      (json_int_t)(after.requests - p->before.requests), "artifact",
				      p->art_digest[0] ? p->art_digest : NULL);
		char *s;

		for (size_t i = 0; o && i < img->nlayers; i++) {
			json_array_append_new(json_object_get(o, "layers"),
					      json_string(img->layers[i].digest));
			json_array_append_new(json_object_get(o, "index_sources"),
					      json_string(p->pls[i].how));
		}
		if (o && p->art_signer[0])
			json_object_set_new(o, "signer", json_string(p->art_signer));
		s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		fprintf(c->out, "%s\n", s ? s : "{}");
		free(s);
		json_decref(o);
	} else {
		char b[32];

		char sbuf[48] = "";

		if (p->streaming)
			snprintf(sbuf, sizeof(sbuf), ", %zu streaming in the background",
				 p->streaming);
		fprintf(c->out, "pulled %s (%s, %s, %zu layers, %zu new%s%s, %s fetched)\n",
			p->name, img->manifest_digest, img->platform ? img->platform : "?",
			img->nlayers, p->fresh, p->art ? " from an index artifact" : "", sbuf,
			cli_bytes(after.bytes - p->before.bytes, b, sizeof(b)));
		if (p->po->push)
			fprintf(c->out, "pushed index artifact %s\n", p->art_digest);
		else if (p->art)
			fprintf(c->out, "used index artifact %s\n", p->art_digest);
		if (p->art_signer[0])
			fprintf(c->out, "%s by key %s\n",
				p->po->push ? "signed" : "its signature verified", p->art_signer);
	}
	fflush(c->out);
}

static int pull_one(struct cli *c, struct fetch_client *fc, const char *arg,
		    const struct pull_opts *po)
{
	struct pull p;
	int rc;

	memset(&p, 0, sizeof(p));
	p.c = c;
	p.fc = fc;
	p.po = po;
	/* Inside the daemon, layers without an index stream in the background. */
	p.stream = c->in_daemon && po->mode == MODE_AUTO;
	fetch_client_counters(fc, &p.before);
	rc = resolve(&p, arg);
	if (rc == 0)
		rc = check_layers(&p);
	if (rc == 0) {
		p.pg.c = c;
		p.pg.ref = p.name;
		p.pg.nlayers = p.img->nlayers;
		for (size_t i = 0; rc == 0 && i < p.img->nlayers; i++)
			rc = pull_choose_source(&p, i);
	}
	if (rc == 0 && c->tty && !c->json && p.fresh)
		fprintf(c->err, "\r\033[K");
	if (rc == 0)
		rc = commit_image(&p);
	if (rc == 0)
		rc = push_index(&p);
	if (rc == 0)
		print_result(&p);
	for (size_t i = 0; p.pls && p.img && i < p.img->nlayers; i++) {
		index_layer_free(p.pls[i].idx);
		free(p.pls[i].enc);
	}
	artifact_free(p.art);
	free(p.pls);
	free(p.name);
	fetch_image_free(p.img);
	fetch_ref_free(p.ref);
	return rc;
}

/* Shared by pull and index: options, then each reference. */
/* Loads the trusted public keys the configuration lists (artifact_trust "signed"). Returns 0,
 * or 1 after printing the error. */
static int load_trusted_keys(struct cli *c, struct pull_opts *po)
{
	if (!c->ntrusted_keys)
		return cli_fail(c,
				"artifact_trust \"signed\" needs trusted_keys = [\"/path/key.pub\"] "
				"in the configuration file");
	po->keys = calloc(c->ntrusted_keys, sizeof(*po->keys));
	if (!po->keys)
		return cli_fail(c, "out of memory");
	for (size_t i = 0; i < c->ntrusted_keys; i++) {
		int rc = util_key_load(c->trusted_keys[i], 0, &po->keys[po->nkeys]);

		if (rc < 0)
			return cli_fail(c, "trusted_keys: %s", strata_errmsg(rc));
		po->nkeys++;
	}
	return 0;
}

/* An option's value: "--name=V" or "--name V" (argv[*i] starts with name). NULL when missing. */
static const char *opt_value(int argc, char **argv, int *i, size_t namelen)
{
	if (argv[*i][namelen] == '=')
		return argv[*i] + namelen + 1;
	return *i + 1 < argc ? argv[++*i] : NULL;
}

static int is_opt(const char *arg, const char *name)
{
	size_t n = strlen(name);

	return strncmp(arg, name, n) == 0 && (!arg[n] || arg[n] == '=');
}

/* Parses pull's and index's options; the references are moved to argv[1..*nrefs]. Returns 0, or
 * the exit code after printing the error. */
static int parse_opts(struct cli *c, int argc, char **argv, struct pull_opts *po, int *nrefs,
		      const char **trust, const char **sign)
{
	uint64_t chunk_size = INDEX_DEFAULT_CHUNK_SIZE;
	int pull = strcmp(c->cmd, "pull") == 0;

	for (int i = 1; i < argc; i++) {
		if (is_opt(argv[i], "--chunk-size")) {
			const char *v = opt_value(argc, argv, &i, 12);

			if (!v || cli_parse_size(v, &chunk_size) < 0 ||
			    chunk_size < INDEX_MIN_CHUNK_SIZE || chunk_size > INDEX_MAX_CHUNK_SIZE)
				return cli_usage(c, "--chunk-size takes a size from 4K to 16M");
		} else if (pull && strncmp(argv[i], "--index=", 8) == 0) {
			const char *v = argv[i] + 8;

			if (strcmp(v, "auto") == 0)
				po->mode = MODE_AUTO;
			else if (strcmp(v, "artifact") == 0)
				po->mode = MODE_ARTIFACT;
			else if (strcmp(v, "build") == 0)
				po->mode = MODE_BUILD;
			else
				return cli_usage(c, "--index takes auto, artifact or build");
		} else if (pull && is_opt(argv[i], "--artifact-trust")) {
			*trust = opt_value(argc, argv, &i, 16);
			if (!*trust || artifact_trust_parse(*trust, &po->trust) < 0 || !**trust)
				return cli_usage(
					c, "--artifact-trust takes repository, signed or none");
		} else if (!pull && strcmp(argv[i], "--push") == 0) {
			po->push = 1;
		} else if (!pull && is_opt(argv[i], "--sign")) {
			*sign = opt_value(argc, argv, &i, 6);
			if (!*sign || !**sign)
				return cli_usage(c, "--sign takes the path of a PEM private key");
		} else if (argv[i][0] == '-') {
			return cli_usage(c, "unknown option %s", argv[i]);
		} else {
			argv[++*nrefs] = argv[i];
		}
	}
	if (*nrefs == 0)
		return cli_usage(c, "%s needs at least one reference", c->cmd);
	if (*sign && !po->push)
		return cli_usage(c, "--sign needs --push");
	if (*sign && c->in_daemon && (*sign)[0] != '/')
		return cli_usage(c, "--sign needs an absolute path while a daemon runs");
	po->chunk_size = (uint32_t)chunk_size;
	return 0;
}

/* Shared by pull and index: options, then each reference. */
static int run_pull(struct cli *c, int argc, char **argv, struct pull_opts *po)
{
	struct fetch_client *fc = NULL;
	const char *trust = NULL, *sign = NULL;
	int nrefs = 0, failed = 0;

	failed = parse_opts(c, argc, argv, po, &nrefs, &trust, &sign);
	if (failed)
		return failed;
	if (!trust && artifact_trust_parse(c->artifact_trust, &po->trust) < 0)
		return cli_fail(c, "artifact_trust: unknown policy '%s'", c->artifact_trust);
	if (po->trust == ARTIFACT_TRUST_NONE && po->mode == MODE_ARTIFACT)
		return cli_usage(c,
				 "--index=artifact and artifact trust \"none\" exclude each other");
	if (po->trust == ARTIFACT_TRUST_SIGNED && po->mode != MODE_BUILD)
		failed = load_trusted_keys(c, po);
	if (!failed && sign) {
		int rc = util_key_load(sign, 1, &po->sign_key);

		if (rc < 0)
			failed = cli_fail(c, "--sign: %s", strata_errmsg(rc));
	}
	if (!failed)
		failed = cli_fetch_client(c, &fc);
	if (!failed) {
		for (int i = 1; i <= nrefs; i++) {
			if (pull_one(c, fc, argv[i], po))
				failed = 1;
		}
		fetch_client_free(fc);
	}
	for (size_t i = 0; i < po->nkeys; i++)
		util_key_free(po->keys[i]);
	free(po->keys);
	util_key_free(po->sign_key);
	return failed;
}

int cmd_pull(struct cli *c, int argc, char **argv)
{
	struct pull_opts po = { .mode = MODE_AUTO };

	return run_pull(c, argc, argv, &po);
}

int cmd_index(struct cli *c, int argc, char **argv)
{
	struct pull_opts po = { .mode = MODE_BUILD };

	return run_pull(c, argc, argv, &po);
}
