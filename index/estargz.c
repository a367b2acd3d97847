/* SPDX-License-Identifier: Apache-2.0 */
/* Converts an eStargz TOC (stargz.index.json) into a layer index: entries, chunks laid out in
 * gzip members, and the member checkpoints of a virtual uncompressed stream. */
#include "estargz.h"
#include "estargz_i.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "layer_i.h"
#include "tar.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

#define MAX_INNER (1ull << 48) /* innerOffset bound; keeps virtual offsets far from overflow */
#define MAX_SIZE  (1ull << 48) /* file size bound, likewise */

/* ---------------------------------------------------------------- TOC JSON */

/* Cleans a TOC name as the tar reader cleans paths: no leading "/" or "./", no empty or "."
 * components, ".." resolved lexically and clamped at the root. Returns a malloc'd copy or NULL. */
static char *clean_name(const char *in)
{
	size_t n = strlen(in), len = 0;
	char *out = malloc(n + 1);
	const char *p = in;

	if (!out)
		return NULL;
	while (*p) {
		const char *s = strchr(p, '/');
		size_t c = s ? (size_t)(s - p) : strlen(p);

		if (c == 0 || (c == 1 && p[0] == '.')) {
			/* skip */
		} else if (c == 2 && p[0] == '.' && p[1] == '.') {
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
		} else {
			if (len > 0)
				out[len++] = '/';
			memcpy(out + len, p, c);
			len += c;
		}
		p += c;
		if (*p == '/')
			p++;
	}
	out[len] = '\0';
	return out;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* Parses an RFC 3339 date-time ("2006-01-02T15:04:05[.frac](Z|±hh:mm)"). Returns 0 or -1. */
static int parse_rfc3339(const char *s, int64_t *sec, uint32_t *nsec)
{
	int y, mo, d, h, mi, se, n = 0, oh = 0, om = 0, sign = 0;
	uint32_t frac = 0;
	const char *p;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) != 6 || n != 19)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 || y < 0 ||
	    h < 0 || mi < 0 || se < 0)
		return -1;
	p = s + n;
	if (*p == '.') {
		int digits = 0;

		for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
			if (digits < 9)
				frac = frac * 10 + (uint32_t)(*p - '0');
		}
		if (digits == 0)
			return -1;
		for (; digits < 9; digits++)
			frac *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		if (!(p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' && p[3] == ':' &&
		      p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9'))
			return -1;
		oh = (p[1] - '0') * 10 + (p[2] - '0');
		om = (p[4] - '0') * 10 + (p[5] - '0');
		if (oh > 23 || om > 59)
			return -1;
		p += 6;
	} else {
		return -1;
	}
	if (*p)
		return -1;
	*sec = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se -
	       sign * (oh * 3600 + om * 60);
	*nsec = frac;
	return 0;
}

/* Reads optional non-negative integer key (absent or null = 0) bounded by max. Returns 0 or -1. */
static int get_uint(json_t *o, const char *key, uint64_t max, uint64_t *v)
{
	json_t *j = json_object_get(o, key);

	*v = 0;
	if (!j || json_is_null(j))
		return 0;
	if (!json_is_integer(j) || json_integer_value(j) < 0 ||
	    (uint64_t)json_integer_value(j) > max)
		return -1;
	*v = (uint64_t)json_integer_value(j);
	return 0;
}

/* Reads an optional string key: NULL when absent or null; -1 (in *bad) for another type. */
static const char *get_str(json_t *o, const char *key, int *bad)
{
	json_t *j = json_object_get(o, key);

	if (!j || json_is_null(j))
		return NULL;
	if (!json_is_string(j)) {
		*bad = 1;
		return NULL;
	}
	return json_string_value(j);
}

/* ---------------------------------------------------------------- layout */

/* One piece of file content as the TOC places it. */
struct tchunk {
	uint64_t coff;	/* compressed offset of the gzip member holding it ("offset") */
	uint64_t inner; /* uncompressed offset inside that member ("innerOffset") */
	uint64_t size;
	uint8_t digest[32];
	bool has_digest;
};

/* A regular file's chunks, in the order of the TOC. */
struct tfile {
	size_t entry;	 /* index in the TOC's entries */
	size_t first, n; /* into the tchunk array */
	uint64_t size;
	uint64_t done;	   /* bytes covered by its chunks so far */
	bool whole_digest; /* "digest" given (used when chunkDigest is missing) */
	uint8_t digest[32];
};

struct member {
	uint64_t coff;
	uint64_t end;  /* largest inner + size of a chunk in it */
	uint64_t uoff; /* virtual */
};

struct layout {
	struct tchunk *chunks;
	size_t nchunks, cap_chunks;
	struct tfile *files;
	size_t nfiles, cap_files;
	struct member *members;
	size_t nmembers;
};

static int bad_entry(size_t i, const char *what)
{
	return strata_err(EBADMSG, "malformed eStargz TOC: entry %zu: %s", i, what);
}

/* Appends the data piece of TOC entry ent (a "reg" with content, or a "chunk") to file f. */
static int add_piece(struct layout *lo, struct tfile *f, json_t *ent, size_t i, uint64_t toc_off)
{
	uint64_t coff, inner, choff, csize;
	struct tchunk *c;
	const char *dg;
	int bad = 0;

	if (get_uint(ent, "offset", INT64_MAX, &coff) < 0 ||
	    get_uint(ent, "innerOffset", MAX_INNER, &inner) < 0 ||
	    get_uint(ent, "chunkOffset", MAX_SIZE, &choff) < 0 ||
	    get_uint(ent, "chunkSize", MAX_SIZE, &csize) < 0)
		return bad_entry(i, "bad offset, innerOffset, chunkOffset or chunkSize");
	if (choff != f->done)
		return bad_entry(i, "chunkOffset does not continue the file's previous chunks");
	if (choff >= f->size)
		return bad_entry(i, "chunk starts past the end of its file");
	if (csize == 0 || csize > f->size - choff)
		csize = f->size - choff; /* 0 means "to the end of the file" */
	if (coff >= toc_off)
		return strata_err(EBADMSG,
				  "malformed eStargz TOC: entry %zu: chunk at compressed "
				  "offset %llu is not before the TOC at %llu",
				  i, (unsigned long long)coff, (unsigned long long)toc_off);
	if (f->n > 0) {
		const struct tchunk *p = &lo->chunks[f->first + f->n - 1];

		/* a file's chunks follow each other in the blob: reads plan spans by that order */
		if (coff < p->coff || (coff == p->coff && inner < p->inner + p->size))
			return strata_err(EBADMSG,
					  "malformed eStargz TOC: entry %zu: chunk at compressed "
					  "offset %llu+%llu is out of order (the previous chunk of "
					  "its file is at %llu+%llu)",
					  i, (unsigned long long)coff, (unsigned long long)inner,
					  (unsigned long long)p->coff,
					  (unsigned long long)p->inner);
	}
	if (util_grow((void **)&lo->chunks, &lo->cap_chunks, lo->nchunks + 1, sizeof(*lo->chunks)) <
	    0)
		return -ENOMEM;
	c = &lo->chunks[lo->nchunks++];
	memset(c, 0, sizeof(*c));
	c->coff = coff;
	c->inner = inner;
	c->size = csize;
	dg = get_str(ent, "chunkDigest", &bad);
	if (bad)
		return bad_entry(i, "chunkDigest is not a string");
	if (dg && *dg) {
		if (util_digest_parse(dg, c->digest) < 0)
			return bad_entry(i, "bad chunkDigest");
		c->has_digest = true;
	}
	f->n++;
	f->done += csize;
	return 0;
}

/* Checks a finished file's chunks cover it. */
static int end_file(const struct tfile *f)
{
	if (f->done != f->size)
		return bad_entry(f->entry, "chunks do not cover the file");
	return 0;
}

/* First pass: every file's chunks, validated. */
static int collect(struct layout *lo, json_t *entries, uint64_t toc_off)
{
	struct tfile *cur = NULL;
	size_t i;
	json_t *ent;
	int rc;

	json_array_foreach (entries, i, ent) {
		const char *type, *name;
		int bad = 0;

		if (!json_is_object(ent))
			return bad_entry(i, "not an object");
		type = get_str(ent, "type", &bad);
		name = get_str(ent, "name", &bad);
		if (bad || !type)
			return bad_entry(i, "missing type");
		if (strcmp(type, "chunk") == 0) {
			if (!cur)
				return bad_entry(i, "chunk entry without a regular file before it");
			rc = add_piece(lo, cur, ent, i, toc_off);
			if (rc < 0)
				return rc;
			continue;
		}
		if (cur) {
			rc = end_file(cur);
			if (rc < 0)
				return rc;
			cur = NULL;
		}
		if (!name)
			return bad_entry(i, "missing name");
		if (strcmp(type, "reg") == 0) {
			char *path = clean_name(name);
			const char *dg;

			if (!path)
				return -ENOMEM;
			if (util_grow((void **)&lo->files, &lo->cap_files, lo->nfiles + 1,
				      sizeof(*lo->files)) < 0) {
				free(path);
				return -ENOMEM;
			}
			cur = &lo->files[lo->nfiles++];
			memset(cur, 0, sizeof(*cur));
			cur->entry = i;
			cur->first = lo->nchunks;
			free(path);
			if (get_uint(ent, "size", MAX_SIZE, &cur->size) < 0)
				return bad_entry(i, "bad size");
			dg = get_str(ent, "digest", &bad);
			if (bad)
				return bad_entry(i, "digest is not a string");
			if (dg && *dg) {
				if (util_digest_parse(dg, cur->digest) < 0)
					return bad_entry(i, "bad digest");
				cur->whole_digest = true;
			}
			if (cur->size > 0) {
				rc = add_piece(lo, cur, ent, i, toc_off);
				if (rc < 0)
					return rc;
			}
		}
	}
	return cur ? end_file(cur) : 0;
}

/* Fills in missing chunk digests from whole-file digests and picks the index chunk size. */
static int check_chunks(struct layout *lo, uint32_t *chunk_size)
{
	uint64_t split = 0, largest = 0;

	for (size_t f = 0; f < lo->nfiles; f++) {
		struct tfile *tf = &lo->files[f];

		for (size_t k = tf->first; k < tf->first + tf->n; k++) {
			struct tchunk *c = &lo->chunks[k];

			if (!c->has_digest && tf->n == 1 && tf->whole_digest) {
				memcpy(c->digest, tf->digest, 32);
				c->has_digest = true;
			}
			if (!c->has_digest)
				return strata_err(ENOTSUP,
						  "eStargz TOC entry %zu has no chunk digest "
						  "(legacy stargz without chunkDigest)",
						  tf->entry);
			if (c->size > largest)
				largest = c->size;
		}
		if (tf->n > 1) {
			uint64_t first = lo->chunks[tf->first].size;

			if (split && split != first)
				return strata_err(ENOTSUP,
						  "irregular eStargz chunking: files split at "
						  "%llu and %llu bytes",
						  (unsigned long long)split,
						  (unsigned long long)first);
			split = first;
			for (size_t k = tf->first; k + 1 < tf->first + tf->n; k++) {
				if (lo->chunks[k].size != split)
					return strata_err(ENOTSUP,
							  "irregular eStargz chunking: entry "
							  "%zu has a %llu-byte chunk inside it",
							  tf->entry,
							  (unsigned long long)lo->chunks[k].size);
			}
		}
	}
	if (split) {
		if (largest > split)
			return strata_err(ENOTSUP,
					  "irregular eStargz chunking: a %llu-byte chunk "
					  "with files split at %llu",
					  (unsigned long long)largest, (unsigned long long)split);
		if (split < INDEX_MIN_CHUNK_SIZE)
			return strata_err(ENOTSUP,
					  "irregular eStargz chunking: chunk size %llu is "
					  "below %u",
					  (unsigned long long)split, INDEX_MIN_CHUNK_SIZE);
		largest = split;
	}
	if (largest < INDEX_MIN_CHUNK_SIZE)
		largest = INDEX_MIN_CHUNK_SIZE;
	if (largest > INDEX_MAX_CHUNK_SIZE)
		return strata_err(ENOTSUP,
				  "irregular eStargz chunking: a %llu-byte chunk exceeds %u",
				  (unsigned long long)largest, INDEX_MAX_CHUNK_SIZE);
	*chunk_size = (uint32_t)largest;
	return 0;
}

static int cmp_chunk_place(const void *a, const void *b)
{
	const struct tchunk *x = *(const struct tchunk *const *)a,
			    *y = *(const struct tchunk *const *)b;

	if (x->coff != y->coff)
		return (x->coff > y->coff) - (x->coff < y->coff);
	return (x->inner > y->inner) - (x->inner < y->inner);
}

/* No two chunks share bytes of one gzip member (each would read the other's bytes). */
static int check_overlap(const struct layout *lo)
{
	const struct tchunk **ord;
	int rc = 0;

	if (lo->nchunks < 2)
		return 0;
	ord = malloc(lo->nchunks * sizeof(*ord));
	if (!ord)
		return -ENOMEM;
	for (size_t k = 0; k < lo->nchunks; k++)
		ord[k] = &lo->chunks[k];
	qsort(ord, lo->nchunks, sizeof(*ord), cmp_chunk_place);
	for (size_t k = 1; k < lo->nchunks && rc == 0; k++) {
		if (ord[k]->coff == ord[k - 1]->coff &&
		    ord[k]->inner < ord[k - 1]->inner + ord[k - 1]->size)
			rc = strata_err(EBADMSG,
					"malformed eStargz TOC: two chunks overlap in the gzip "
					"member at compressed offset %llu",
					(unsigned long long)ord[k]->coff);
	}
	free(ord);
	return rc;
}

static int cmp_member(const void *a, const void *b)
{
	const struct member *x = a, *y = b;

	return (x->coff > y->coff) - (x->coff < y->coff);
}

/*
 * Lays the gzip members out in the virtual uncompressed coordinate: the blob start, every data
 * member and the TOC member, in compressed order, each member as long as its last chunk's end.
 */
static int plan_members(struct layout *lo, uint64_t toc_off)
{
	size_t n = 0;
	uint64_t u = 0;

	lo->members = malloc((lo->nchunks + 2) * sizeof(*lo->members));
	if (!lo->members)
		return -ENOMEM;
	lo->members[n++] = (struct member){ 0, 0, 0 };
	lo->members[n++] = (struct member){ toc_off, 0, 0 };
	for (size_t k = 0; k < lo->nchunks; k++)
		lo->members[n++] = (struct member){ lo->chunks[k].coff,
						    lo->chunks[k].inner + lo->chunks[k].size, 0 };
	qsort(lo->members, n, sizeof(*lo->members), cmp_member);
	lo->nmembers = 0;
	for (size_t k = 0; k < n; k++) {
		struct member *last = lo->nmembers ? &lo->members[lo->nmembers - 1] : NULL;

		if (last && last->coff == lo->members[k].coff) {
			if (lo->members[k].end > last->end)
				last->end = lo->members[k].end;
		} else {
			lo->members[lo->nmembers++] = lo->members[k];
		}
	}
	for (size_t k = 0; k < lo->nmembers; k++) {
		struct member *m = &lo->members[k];

		m->uoff = u;
		u += m->end ? m->end : 1;
		if (u > INT64_MAX)
			return strata_err(EBADMSG,
					  "malformed eStargz TOC: members add up past 2^63 bytes");
	}
	return 0;
}

static const struct member *find_member(const struct layout *lo, uint64_t coff)
{
	size_t lo_i = 0, hi = lo->nmembers;

	while (lo_i < hi) {
		size_t mid = lo_i + (hi - lo_i) / 2;

		if (lo->members[mid].coff < coff)
			lo_i = mid + 1;
		else
			hi = mid;
	}
	assert(lo_i < lo->nmembers && lo->members[lo_i].coff == coff);
	return &lo->members[lo_i];
}

/* ---------------------------------------------------------------- entries */

static const struct {
	const char *name;
	enum index_tar_type type;
} types[] = {
	{ "dir", INDEX_TAR_DIR },	  { "reg", INDEX_TAR_REG },
	{ "symlink", INDEX_TAR_SYMLINK }, { "hardlink", INDEX_TAR_HARDLINK },
	{ "char", INDEX_TAR_CHAR },	  { "block", INDEX_TAR_BLOCK },
	{ "fifo", INDEX_TAR_FIFO },
};

static void free_tar_entry(struct index_tar_entry *e)
{
	free(e->path);
	free(e->linkname);
	for (size_t i = 0; i < e->nxattrs; i++) {
		free(e->xattrs[i].name);
		free(e->xattrs[i].value);
	}
	free(e->xattrs);
	memset(e, 0, sizeof(*e));
}

/* Converts TOC entry ent (not a "chunk") into e; the caller frees e with free_tar_entry. */
static int to_tar_entry(json_t *ent, size_t i, struct index_tar_entry *e)
{
	const char *type, *name, *link, *mtime;
	json_t *xattrs;
	uint64_t v;
	size_t t;
	int bad = 0;

	memset(e, 0, sizeof(*e));
	type = get_str(ent, "type", &bad);
	name = get_str(ent, "name", &bad);
	link = get_str(ent, "linkName", &bad);
	mtime = get_str(ent, "modtime", &bad);
	if (bad)
		return bad_entry(i, "a string field has another type");
	assert(type && name); /* collect() checked */
	for (t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		if (strcmp(type, types[t].name) == 0)
			break;
	}
	if (t == sizeof(types) / sizeof(types[0]))
		return bad_entry(i, "unknown type");
	e->type = types[t].type;
	e->path = clean_name(name);
	if (!e->path)
		return -ENOMEM;
	if (e->type == INDEX_TAR_SYMLINK || e->type == INDEX_TAR_HARDLINK) {
		if (!link || !*link)
			return bad_entry(i, "link without linkName");
		e->linkname = e->type == INDEX_TAR_HARDLINK ? clean_name(link) : strdup(link);
		if (!e->linkname)
			return -ENOMEM;
	}
	if (get_uint(ent, "mode", INT64_MAX, &v) < 0)
		return bad_entry(i, "bad mode");
	e->mode = (uint32_t)(v & 07777);
	if (get_uint(ent, "uid", UINT32_MAX, &v) < 0)
		return bad_entry(i, "bad uid");
	e->uid = (uint32_t)v;
	if (get_uint(ent, "gid", UINT32_MAX, &v) < 0)
		return bad_entry(i, "bad gid");
	e->gid = (uint32_t)v;
	if (mtime && *mtime && parse_rfc3339(mtime, &e->mtime_sec, &e->mtime_nsec) < 0)
		return bad_entry(i, "bad modtime");
	if (e->type == INDEX_TAR_REG && get_uint(ent, "size", MAX_SIZE, &e->size) < 0)
		return bad_entry(i, "bad size");
	if (e->type == INDEX_TAR_CHAR || e->type == INDEX_TAR_BLOCK) {
		if (get_uint(ent, "devMajor", UINT32_MAX, &v) < 0)
			return bad_entry(i, "bad devMajor");
		e->devmajor = (uint32_t)v;
		if (get_uint(ent, "devMinor", UINT32_MAX, &v) < 0)
			return bad_entry(i, "bad devMinor");
		e->devminor = (uint32_t)v;
	}
	xattrs = json_object_get(ent, "xattrs");
	if (xattrs && !json_is_null(xattrs)) {
		const char *key;
		json_t *val;

		if (!json_is_object(xattrs))
			return bad_entry(i, "xattrs is not an object");
		e->xattrs = calloc(json_object_size(xattrs) ? json_object_size(xattrs) : 1,
				   sizeof(*e->xattrs));
		if (!e->xattrs)
			return -ENOMEM;
		json_object_foreach (xattrs, key, val) {
			struct index_tar_xattr *x = &e->xattrs[e->nxattrs];
			int rc;

			if (!*key || !json_is_string(val))
				return bad_entry(i, "bad xattr");
			x->name = strdup(key);
			if (!x->name)
				return -ENOMEM;
			e->nxattrs++;
			rc = util_base64_decode(json_string_value(val),
						strlen(json_string_value(val)), &x->value, &x->len);
			if (rc == -ENOMEM)
				return rc;
			if (rc < 0)
				return bad_entry(i, "xattr value is not base64");
		}
	}
	return 0;
}

/* Second pass: feeds every entry but chunks to the builder. */
static int add_entries(struct index_builder *ib, const struct layout *lo, json_t *entries)
{
	struct index_chunk *chunks = NULL;
	size_t cap = 0, next_file = 0, i;
	json_t *ent;
	int rc = 0;

	json_array_foreach (entries, i, ent) {
		const struct tfile *f = NULL;
		struct index_tar_entry e;
		size_t n = 0;

		if (strcmp(json_string_value(json_object_get(ent, "type")), "chunk") == 0)
			continue;
		if (next_file < lo->nfiles && lo->files[next_file].entry == i)
			f = &lo->files[next_file++];
		rc = to_tar_entry(ent, i, &e);
		if (rc == 0 && f) {
			rc = util_grow((void **)&chunks, &cap, f->n, sizeof(*chunks));
			for (size_t k = 0; rc == 0 && k < f->n; k++) {
				const struct tchunk *c = &lo->chunks[f->first + k];

				memset(&chunks[k], 0, sizeof(chunks[k]));
				memcpy(chunks[k].digest, c->digest, 32);
				chunks[k].offset = find_member(lo, c->coff)->uoff + c->inner;
				chunks[k].size = (uint32_t)c->size; /* <= chunk size, checked */
				n++;
			}
		}
		if (rc == 0) {
			rc = index_builder_add(ib, &e, chunks, n);
			if (rc == -EINVAL || rc == -ENOTDIR)
				rc = strata_err_prefix(EBADMSG, "malformed eStargz TOC: entry %zu",
						       i);
		}
		free_tar_entry(&e);
		if (rc < 0)
			break;
	}
	free(chunks);
	return rc;
}

/* Places the TOC JSON's content as chunks of the TOC member (cut at chunk_size). */
static int add_toc_pieces(struct layout *lo, const char *json, size_t json_len, uint64_t toc_off,
			  const struct index_estargz_toc_file *tf, uint32_t chunk_size)
{
	for (size_t off = 0; off < json_len; off += chunk_size) {
		size_t n = json_len - off < chunk_size ? json_len - off : chunk_size;
		struct tchunk *c;

		if (util_grow((void **)&lo->chunks, &lo->cap_chunks, lo->nchunks + 1,
			      sizeof(*lo->chunks)) < 0)
			return -ENOMEM;
		c = &lo->chunks[lo->nchunks++];
		memset(c, 0, sizeof(*c));
		c->coff = toc_off;
		c->inner = tf->data_offset + off;
		c->size = n;
		util_sha256(json + off, n, c->digest);
		c->has_digest = true;
	}
	return 0;
}

/* Adds stargz.index.json itself: the last entry of the layer's tar. */
static int add_toc_entry(struct index_builder *ib, const struct layout *lo, size_t first,
			 size_t json_len, const struct index_estargz_toc_file *tf)
{
	struct index_tar_entry e;
	struct index_chunk *chunks = calloc(lo->nchunks - first + 1, sizeof(*chunks));
	size_t n = 0;
	int rc;

	if (!chunks)
		return -ENOMEM;
	memset(&e, 0, sizeof(e));
	e.path = (char *)INDEX_ESTARGZ_TOC_NAME;
	e.type = INDEX_TAR_REG;
	/* this tar header is outside what the TOC digest covers (the JSON): no setuid, setgid or
	 * sticky bit from it */
	e.mode = tf->mode & 0777;
	e.uid = tf->uid;
	e.gid = tf->gid;
	e.mtime_sec = tf->mtime_sec;
	e.mtime_nsec = tf->mtime_nsec;
	e.size = json_len;
	for (size_t k = first; k < lo->nchunks; k++) {
		memcpy(chunks[n].digest, lo->chunks[k].digest, 32);
		chunks[n].offset = find_member(lo, lo->chunks[k].coff)->uoff + lo->chunks[k].inner;
		chunks[n].size = (uint32_t)lo->chunks[k].size;
		n++;
	}
	rc = index_builder_add(ib, &e, chunks, n);
	free(chunks);
	return rc;
}

int index_estargz_build(const uint8_t *toc, size_t len, uint64_t toc_off, uint64_t blob_size,
			struct index_layer **out)
{
	return index_estargz_build_verified(toc, len, toc_off, blob_size, NULL, out);
}

int index_estargz_build_verified(const uint8_t *toc, size_t len, uint64_t toc_off,
				 uint64_t blob_size, const char *toc_digest,
				 struct index_layer **out)
{
	struct layout lo;
	struct index_builder *ib = NULL;
	struct index_checkpoint *cps = NULL;
	json_t *root = NULL, *entries;
	json_error_t jerr;
	char *json = NULL;
	size_t json_len = 0;
	uint32_t chunk_size = 0;
	static const uint8_t no_diff_id[32];
	struct index_estargz_toc_file tf;
	size_t toc_first = 0;
	int rc;

	*out = NULL;
	memset(&lo, 0, sizeof(lo));
	memset(&tf, 0, sizeof(tf));
	if (toc_off > blob_size || len > blob_size - toc_off) {
		rc = strata_err(EINVAL, "eStargz TOC [%llu, +%zu) outside the %llu-byte blob",
				(unsigned long long)toc_off, len, (unsigned long long)blob_size);
		goto out;
	}
	rc = index_estargz_read_toc(toc, len, &json, &json_len, &tf);
	if (rc == 0 && toc_digest)
		rc = index_estargz_check_toc_digest(json, json_len, toc_digest);
	if (rc < 0)
		goto out;
	root = json_loadb(json, json_len, 0, &jerr);
	if (!root) {
		rc = strata_err(EBADMSG, "malformed eStargz TOC: JSON line %d: %s", jerr.line,
				jerr.text);
		goto out;
	}
	entries = json_object_get(root, "entries");
	if (!json_is_object(root) || !json_is_array(entries)) {
		rc = strata_err(EBADMSG, "malformed eStargz TOC: no entries array");
		goto out;
	}
	rc = collect(&lo, entries, toc_off);
	if (rc < 0)
		goto out;
	rc = check_chunks(&lo, &chunk_size);
	if (rc == 0)
		rc = check_overlap(&lo);
	if (rc < 0)
		goto out;
	toc_first = lo.nchunks;
	rc = add_toc_pieces(&lo, json, json_len, toc_off, &tf, chunk_size);
	if (rc < 0)
		goto out;
	rc = plan_members(&lo, toc_off);
	if (rc < 0)
		goto out;
	rc = index_builder_new(chunk_size, &ib);
	if (rc < 0)
		goto out;
	rc = add_entries(ib, &lo, entries);
	if (rc == 0)
		rc = add_toc_entry(ib, &lo, toc_first, json_len, &tf);
	if (rc < 0)
		goto out;
	cps = calloc(lo.nmembers, sizeof(*cps));
	if (!cps) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < lo.nmembers; k++) {
		cps[k].uoff = lo.members[k].uoff;
		cps[k].coff = lo.members[k].coff;
		cps[k].kind = INDEX_CP_GZIP_MEMBER;
		cps[k].woff = UINT64_MAX;
	}
	rc = index_builder_set_blob(ib, INDEX_BLOB_GZIP, blob_size, cps, lo.nmembers);
	if (rc < 0)
		goto out;
	/* the TOC member is the last one: the virtual stream ends with the TOC JSON */
	rc = index_builder_finish(ib, no_diff_id,
				  lo.members[lo.nmembers - 1].uoff +
					  lo.members[lo.nmembers - 1].end,
				  out);
	ib = NULL;
out:
	index_builder_free(ib);
	free(cps);
	json_decref(root);
	free(json);
	free(lo.chunks);
	free(lo.files);
	free(lo.members);
	return rc;
}
