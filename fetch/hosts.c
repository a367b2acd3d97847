/* SPDX-License-Identifier: Apache-2.0 */
/* Reads containerd hosts.toml files: a strict parser for the TOML subset they use, and the host list. */
#include "hosts.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/ref.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

#define HOSTS_FILE	"hosts.toml"
#define DEFAULT_DIR	"_default"
#define DOCKER_DOMAIN	"docker.io"
#define DOCKER_API_HOST "registry-1.docker.io"
#define API_PATH	"/v2"

#define MAX_TEXT       (1 << 20) /* largest hosts.toml accepted */
#define MAX_DEPTH      8	 /* array nesting */
#define MAX_KEY_PARTS  8	 /* parts of a table header: [host."url".header] has 3 */
#define MAX_NODES      4096	 /* values + tables in one file; bounds the linear key lookups */
#define ECHO_MAX       120	 /* longest piece of input quoted in a message */
#define MAX_TIMEOUT_MS (24LL * 3600 * 1000)

/* ---- the parsed document: a small TOML tree ---- */

enum tkind { T_STRING, T_BOOL, T_INT, T_ARRAY, T_TABLE };

struct tnode {
	enum tkind kind;
	int line;	      /* where the key (or array element, or first header naming the table) is */
	int def_line;	      /* where it was defined (a table: its explicit header) */
	char *str;	      /* T_STRING, NUL-free */
	long long num;	      /* T_BOOL (0/1), T_INT */
	struct tnode **items; /* T_ARRAY elements; T_TABLE values, in insertion order */
	char **keys;	      /* T_TABLE: keys parallel to items */
	size_t n, cap;
	int explicit; /* T_TABLE: defined by a [header] (the root always is) */
};

struct parser {
	const char *p, *end;
	const char *file;
	int line;
	size_t nodes;
	struct tnode *root;
	struct tnode *cur; /* table that key = value lines go to */
};

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

/* The context of turning a tree into hosts. */
struct interp {
	const char *file;
	const char *base; /* directory relative ca/client paths resolve against */
	const char *registry;
	struct fetch_hosts *h;
};

__attribute__((format(printf, 3, 4))) static int fail_at(const char *file, int line, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return strata_err(EINVAL, "%s:%d: %s", file, line, what);
}

/* s quoted for a one-line message: control characters become '?', long input is cut with "...". */
static const char *echo(char *buf, size_t size, const char *s)
{
	size_t i, max = size - 4;

	assert(size > 8);
	for (i = 0; s[i] && i < max; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	if (s[i]) {
		while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
			i--; /* do not cut a UTF-8 sequence */
		memcpy(buf + i, "...", 4);
	} else {
		buf[i] = '\0';
	}
	return buf;
}

#define ECHO(buf, s) echo(buf, sizeof(buf), s)

/* What is at p, for "got ..." in messages. */
static const char *what_at(char *buf, size_t size, const char *p, const char *end)
{
	unsigned char c;

	if (p >= end)
		return "end of file";
	c = (unsigned char)*p;
	if (c == '\n' || c == '\r')
		return "end of line";
	if (c < 0x20 || c >= 0x7f)
		snprintf(buf, size, "byte 0x%02x", c);
	else
		snprintf(buf, size, "'%c'", c);
	return buf;
}

static struct tnode *node_new(struct parser *ps, enum tkind kind, int line)
{
	struct tnode *n;

	if (ps && ++ps->nodes > MAX_NODES) {
		fail_at(ps->file, line, "too many values (the limit is %d)", MAX_NODES);
		errno = EINVAL;
		return NULL;
	}
	n = calloc(1, sizeof(*n));
	if (!n) {
		errno = ENOMEM;
		return NULL;
	}
	n->kind = kind;
	n->line = line;
	n->def_line = line;
	return n;
}

static void node_free(struct tnode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++) {
		node_free(n->items[i]);
		if (n->keys)
			free(n->keys[i]);
	}
	free(n->items);
	free(n->keys);
	free(n->str);
	free(n);
}

/* Appends child (and key, for a table) to parent. Takes ownership of both, also on failure. */
static int node_push(struct tnode *parent, char *key, struct tnode *child)
{
	if (parent->n == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 4;
		struct tnode **items = realloc(parent->items, cap * sizeof(*items));

		if (items)
			parent->items = items;
		if (items && parent->kind == T_TABLE) {
			char **keys = realloc(parent->keys, cap * sizeof(*keys));

			if (!keys)
				items = NULL;
			else
				parent->keys = keys;
		}
		if (!items) {
			free(key);
			node_free(child);
			return -ENOMEM;
		}
		parent->cap = cap;
	}
	if (parent->kind == T_TABLE)
		parent->keys[parent->n] = key;
	else
		free(key);
	parent->items[parent->n++] = child;
	return 0;
}

static struct tnode *table_find(const struct tnode *t, const char *key)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->keys[i], key) == 0)
			return t->items[i];
	return NULL;
}

/* ---- growable string ---- */

struct buf {
	char *s;
	size_t n, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
	if (util_grow((void **)&b->s, &b->cap, b->n + n + 1, 1) < 0)
		return -ENOMEM;
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = '\0';
	return 0;
}

/* ---- lexing ---- */

/* Length of the valid UTF-8 sequence at s (at most avail bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
	uint32_t cp, min;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2, cp = s[0] & 0x1f, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, cp = s[0] & 0x0f, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, cp = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[k] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* The whole text must be UTF-8 without NUL bytes (TOML requires UTF-8; C strings need no NUL). */
static int check_text(const char *file, const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	int line = 1;
	size_t i = 0;

	while (i < len) {
		size_t n;

		if (s[i] == '\n')
			line++;
		if (s[i] == 0)
			return fail_at(file, line, "NUL byte in file");
		n = utf8_len(s + i, len - i);
		if (n == 0)
			return fail_at(file, line, "invalid UTF-8");
		i += n;
	}
	return 0;
}

static int at_end(const struct parser *ps)
{
	return ps->p >= ps->end;
}

static void skip_ws(struct parser *ps)
{
	while (!at_end(ps) && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

static int is_control(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* At '#': skips the comment up to (not over) the end of line. */
static int skip_comment(struct parser *ps)
{
	assert(*ps->p == '#');
	for (ps->p++; !at_end(ps) && *ps->p != '\n'; ps->p++) {
		if (*ps->p == '\r' && ps->p + 1 < ps->end && ps->p[1] == '\n')
			break;
		if (is_control((unsigned char)*ps->p))
			return fail_at(ps->file, ps->line, "control character in comment");
	}
	return 0;
}

/* At '\n' or '\r': consumes one line break. */
static int newline(struct parser *ps)
{
	if (*ps->p == '\r') {
		if (ps->p + 1 >= ps->end || ps->p[1] != '\n')
			return fail_at(ps->file, ps->line, "carriage return not followed by a newline");
		ps->p++;
	}
	assert(*ps->p == '\n');
	ps->p++;
	ps->line++;
	return 0;
}

/* Whitespace, an optional comment, then the end of the line (or file). after says what came before,
 * for the message about anything else. */
static int end_of_line(struct parser *ps, const char *after)
{
	char w[16];
	int rc;

	skip_ws(ps);
	if (!at_end(ps) && *ps->p == '#') {
		rc = skip_comment(ps);
		if (rc)
			return rc;
	}
	if (at_end(ps))
		return 0;
	if (*ps->p == '\n' || *ps->p == '\r')
		return newline(ps);
	return fail_at(ps->file, ps->line, "unexpected %s after %s", what_at(w, sizeof(w), ps->p, ps->end),
		       after);
}

/* Whitespace, comments and line breaks (inside arrays). */
static int skip_blank(struct parser *ps)
{
	int rc;

	for (;;) {
		skip_ws(ps);
		if (at_end(ps))
			return 0;
		if (*ps->p == '#')
			rc = skip_comment(ps);
		else if (*ps->p == '\n' || *ps->p == '\r')
			rc = newline(ps);
		else
			return 0;
		if (rc)
			return rc;
	}
}

static size_t utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* After the backslash of an escape in a basic string: appends the character it stands for. */
static int parse_escape(struct parser *ps, struct buf *b)
{
	char w[16], c, utf[4];
	uint32_t cp = 0;
	int digits;

	if (at_end(ps) || *ps->p == '\n' || *ps->p == '\r')
		return fail_at(ps->file, ps->line, "unterminated string");
	c = *ps->p++;
	switch (c) {
	case 'b':
		return buf_add(b, "\b", 1);
	case 't':
		return buf_add(b, "\t", 1);
	case 'n':
		return buf_add(b, "\n", 1);
	case 'f':
		return buf_add(b, "\f", 1);
	case 'r':
		return buf_add(b, "\r", 1);
	case '"':
		return buf_add(b, "\"", 1);
	case '\\':
		return buf_add(b, "\\", 1);
	case 'u':
		digits = 4;
		break;
	case 'U':
		digits = 8;
		break;
	default:
		if ((unsigned char)c > 0x20 && (unsigned char)c < 0x7f)
			return fail_at(ps->file, ps->line, "invalid escape '\\%c' in string", c);
		return fail_at(ps->file, ps->line, "invalid escape in string: backslash before %s",
			       what_at(w, sizeof(w), ps->p - 1, ps->end));
	}
	for (int i = 0; i < digits; i++) {
		int v = at_end(ps) ? -1 : util_hexval(*ps->p);

		if (v < 0)
			return fail_at(ps->file, ps->line, "invalid escape '\\%c': expected %d hex digits", c,
				       digits);
		cp = cp << 4 | (uint32_t)v;
		ps->p++;
	}
	if (cp == 0)
		return fail_at(ps->file, ps->line, "invalid escape: NUL (\\%c0000) is not allowed", c);
	if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return fail_at(ps->file, ps->line, "invalid escape: U+%X is not a Unicode scalar value",
			       (unsigned)cp);
	return buf_add(b, utf, utf8_put(utf, cp));
}

/* At the opening quote of a "basic" or 'literal' string, all on one line. *out is malloc'd. */
static int parse_string(struct parser *ps, char **out)
{
	struct buf b = {0};
	char quote = *ps->p;
	int rc = 0;

	ps->p++;
	if (ps->end - ps->p >= 2 && ps->p[0] == quote && ps->p[1] == quote) {
		rc = fail_at(ps->file, ps->line, "multi-line strings (%c%c%c) are not supported", quote,
			     quote, quote);
		goto out;
	}
	rc = buf_add(&b, "", 0);
	while (rc == 0) {
		const char *run = ps->p;

		while (!at_end(ps) && *ps->p != quote && !(quote == '"' && *ps->p == '\\') &&
		       !is_control((unsigned char)*ps->p))
			ps->p++;
		rc = buf_add(&b, run, (size_t)(ps->p - run));
		if (rc)
			break;
		if (at_end(ps) || *ps->p == '\n' || *ps->p == '\r') {
			rc = fail_at(ps->file, ps->line,
				     "unterminated string (a string must end on its line)");
		} else if (*ps->p == quote) {
			ps->p++;
			break;
		} else if (*ps->p == '\\') {
			ps->p++;
			rc = parse_escape(ps, &b);
		} else {
			rc = fail_at(ps->file, ps->line, "control character 0x%02x in string (use an escape)",
				     (unsigned char)*ps->p);
		}
	}
out:
	if (rc == 0)
		*out = b.s;
	else
		free(b.s);
	return rc;
}

static int is_bare(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '-';
}

/* A bare, "basic" or 'literal' key. *out is malloc'd. what names the place for messages. */
static int parse_key(struct parser *ps, const char *what, char **out)
{
	const char *start = ps->p;
	char w[16];

	if (!at_end(ps) && (*ps->p == '"' || *ps->p == '\''))
		return parse_string(ps, out);
	while (!at_end(ps) && is_bare(*ps->p))
		ps->p++;
	if (ps->p == start)
		return fail_at(ps->file, ps->line, "expected a key %s, got %s", what,
			       what_at(w, sizeof(w), ps->p, ps->end));
	*out = strndup(start, (size_t)(ps->p - start));
	return *out ? 0 : -ENOMEM;
}

static int parse_value(struct parser *ps, const char *key, int depth, struct tnode **out);

static int parse_integer(struct parser *ps, const char *key, struct tnode *n)
{
	const char *start = ps->p;
	int neg = 0, digits = 0;
	long long v = 0;
	char k[ECHO_MAX];

	if (*ps->p == '+' || *ps->p == '-')
		neg = *ps->p++ == '-';
	if (!at_end(ps) && *ps->p == '0' && ps->p + 1 < ps->end && (ps->p[1] >= '0' && ps->p[1] <= '9'))
		return fail_at(ps->file, ps->line, "invalid integer for key \"%s\": leading zero",
			       ECHO(k, key));
	while (!at_end(ps)) {
		char c = *ps->p;

		if (c == '_' && digits && ps->p + 1 < ps->end && ps->p[1] >= '0' && ps->p[1] <= '9') {
			ps->p++;
			continue;
		}
		if (c < '0' || c > '9')
			break;
		if (v > (LLONG_MAX - (c - '0')) / 10)
			return fail_at(ps->file, ps->line, "integer out of range for key \"%s\"",
				       ECHO(k, key));
		v = v * 10 + (c - '0');
		digits++;
		ps->p++;
	}
	if (!digits)
		return fail_at(ps->file, ps->line, "invalid value for key \"%s\" (strings must be quoted)",
			       ECHO(k, key));
	if (!at_end(ps) && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
		return fail_at(ps->file, ps->line, "floats are not supported (key \"%s\")", ECHO(k, key));
	if (!at_end(ps) && (*ps->p == ':' || (*ps->p == '-' && ps->p - start == 4)))
		return fail_at(ps->file, ps->line, "dates and times are not supported (key \"%s\")",
			       ECHO(k, key));
	if (!at_end(ps) && (is_bare(*ps->p)))
		return fail_at(
			ps->file, ps->line,
			"invalid integer for key \"%s\" (only decimal integers; strings must be quoted)",
			ECHO(k, key));
	n->num = neg ? -v : v;
	return 0;
}

/* At '[' of an array value. */
static int parse_array(struct parser *ps, const char *key, int depth, struct tnode *arr)
{
	int open_line = ps->line, rc;
	char w[16], k[ECHO_MAX];

	if (depth >= MAX_DEPTH)
		return fail_at(ps->file, ps->line, "arrays nested too deeply (key \"%s\")", ECHO(k, key));
	ps->p++;
	for (;;) {
		struct tnode *item = NULL;

		rc = skip_blank(ps);
		if (rc)
			return rc;
		if (at_end(ps))
			break;
		if (*ps->p == ']') {
			ps->p++;
			return 0;
		}
		rc = parse_value(ps, key, depth + 1, &item);
		if (rc)
			return rc;
		rc = node_push(arr, NULL, item);
		if (rc)
			return rc;
		rc = skip_blank(ps);
		if (rc)
			return rc;
		if (at_end(ps))
			break;
		if (*ps->p == ',') {
			ps->p++;
			continue;
		}
		if (*ps->p == ']') {
			ps->p++;
			return 0;
		}
		return fail_at(ps->file, ps->line, "expected ',' or ']' in the array of key \"%s\", got %s",
			       ECHO(k, key), what_at(w, sizeof(w), ps->p, ps->end));
	}
	return fail_at(ps->file, ps->line, "unterminated array for key \"%s\" (opened on line %d)",
		       ECHO(k, key), open_line);
}

static int word_at(const struct parser *ps, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0 &&
	       ((size_t)(ps->end - ps->p) == n || !is_bare(ps->p[n]));
}

static int parse_value(struct parser *ps, const char *key, int depth, struct tnode **out)
{
	struct tnode *n = NULL;
	char w[16], k[ECHO_MAX];
	int rc;

	if (at_end(ps) || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '#')
		return fail_at(ps->file, ps->line, "expected a value for key \"%s\"", ECHO(k, key));
	if (*ps->p == '{')
		return fail_at(ps->file, ps->line,
			       "inline tables are not supported (key \"%s\"); use a [table] header",
			       ECHO(k, key));
	if (*ps->p == '"' || *ps->p == '\'') {
		n = node_new(ps, T_STRING, ps->line);
		rc = n ? parse_string(ps, &n->str) : -errno;
	} else if (*ps->p == '[') {
		n = node_new(ps, T_ARRAY, ps->line);
		rc = n ? parse_array(ps, key, depth, n) : -errno;
	} else if (word_at(ps, "true") || word_at(ps, "false")) {
		n = node_new(ps, T_BOOL, ps->line);
		rc = n ? 0 : -errno;
		if (n) {
			n->num = *ps->p == 't';
			ps->p += n->num ? 4 : 5;
		}
	} else if (*ps->p == '+' || *ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
		n = node_new(ps, T_INT, ps->line);
		rc = n ? parse_integer(ps, key, n) : -errno;
	} else {
		rc = fail_at(ps->file, ps->line,
			     "expected a value for key \"%s\", got %s (strings must be quoted)", ECHO(k, key),
			     what_at(w, sizeof(w), ps->p, ps->end));
	}
	if (rc == 0)
		*out = n;
	else
		node_free(n);
	return rc;
}

/* key = value */
static int parse_keyval(struct parser *ps)
{
	struct tnode *val = NULL, *old;
	char *key = NULL, k[ECHO_MAX];
	int rc;

	rc = parse_key(ps, "at the start of a line", &key);
	if (rc)
		goto out;
	skip_ws(ps);
	if (!at_end(ps) && *ps->p == '.') {
		rc = fail_at(ps->file, ps->line,
			     "dotted keys are not supported (key \"%s\"); use a [table] header",
			     ECHO(k, key));
		goto out;
	}
	if (at_end(ps) || *ps->p != '=') {
		rc = fail_at(ps->file, ps->line, "expected '=' after key \"%s\"", ECHO(k, key));
		goto out;
	}
	old = table_find(ps->cur, key);
	if (old) {
		rc = fail_at(ps->file, ps->line, "duplicate key \"%s\" (first defined on line %d)",
			     ECHO(k, key), old->def_line);
		goto out;
	}
	ps->p++;
	skip_ws(ps);
	rc = parse_value(ps, key, 0, &val);
	if (rc)
		goto out;
	{
		char after[ECHO_MAX + 32];

		snprintf(after, sizeof(after), "the value of key \"%s\"", ECHO(k, key));
		rc = end_of_line(ps, after);
	}
	if (rc)
		goto out;
	rc = node_push(ps->cur, key, val);
	key = NULL;
	val = NULL;
out:
	free(key);
	node_free(val);
	return rc;
}

/* The header between its brackets as written (whitespace trimmed), for messages. */
static void header_name(char *out, size_t size, const char *start, const char *end)
{
	size_t n = 0;

	while (start < end && (*start == ' ' || *start == '\t'))
		start++;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	for (; start < end && n + 4 < size; start++)
		out[n++] = is_control((unsigned char)*start) ? '?' : *start;
	if (start < end)
		memcpy(out + n, "...", 4);
	else
		out[n] = '\0';
}

/* [a.b."c"] */
static int parse_header(struct parser *ps)
{
	char *parts[MAX_KEY_PARTS], name[3 * ECHO_MAX], w[16];
	struct tnode *t = ps->root;
	const char *start;
	size_t n = 0;
	int line = ps->line, rc = 0;

	start = ++ps->p;
	if (!at_end(ps) && *ps->p == '[') {
		rc = fail_at(ps->file, line, "arrays of tables ([[...]]) are not supported");
		goto out;
	}
	for (;;) {
		skip_ws(ps);
		if (n == MAX_KEY_PARTS) {
			rc = fail_at(ps->file, line, "table header has more than %d parts", MAX_KEY_PARTS);
			goto out;
		}
		rc = parse_key(ps, "in table header", &parts[n]);
		if (rc)
			goto out;
		n++;
		skip_ws(ps);
		if (!at_end(ps) && *ps->p == '.') {
			ps->p++;
			continue;
		}
		if (!at_end(ps) && *ps->p == ']') {
			ps->p++;
			break;
		}
		rc = fail_at(ps->file, line, "expected '.' or ']' in table header, got %s",
			     what_at(w, sizeof(w), ps->p, ps->end));
		goto out;
	}
	header_name(name, sizeof(name), start, ps->p - 1);
	{
		char after[sizeof(name) + 32];

		snprintf(after, sizeof(after), "table header [%s]", name);
		rc = end_of_line(ps, after);
		if (rc)
			goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct tnode *child = table_find(t, parts[i]);
		char k[ECHO_MAX];

		if (!child) {
			child = node_new(ps, T_TABLE, line);
			if (!child) {
				rc = -errno;
				goto out;
			}
			rc = node_push(t, parts[i], child);
			parts[i] = NULL;
			if (rc)
				goto out;
			child->explicit = i + 1 == n;
		} else if (child->kind != T_TABLE) {
			rc = fail_at(ps->file, line,
				     "cannot define table [%s]: key \"%s\" already has a value (line %d)",
				     name, ECHO(k, parts[i]), child->def_line);
			goto out;
		} else if (i + 1 == n) {
			if (child->explicit) {
				rc = fail_at(ps->file, line,
					     "duplicate table [%s] (first defined on line %d)", name,
					     child->def_line);
				goto out;
			}
			child->explicit = 1;
			child->def_line = line;
		}
		t = child;
	}
	ps->cur = t;
out:
	for (size_t i = 0; i < n; i++)
		free(parts[i]);
	return rc;
}

/* Parses text into *root (caller frees with node_free). */
static int parse_toml(const char *text, size_t len, const char *file, struct tnode **root)
{
	struct parser ps = {.p = text, .end = text + len, .file = file, .line = 1};
	int rc;

	if (len > MAX_TEXT)
		return fail_at(file, 1, "file is larger than %d bytes", MAX_TEXT);
	rc = check_text(file, text, len);
	if (rc)
		return rc;
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		ps.p += 3; /* a UTF-8 byte order mark */
	ps.root = node_new(NULL, T_TABLE, 1);
	if (!ps.root)
		return -ENOMEM;
	ps.root->explicit = 1;
	ps.cur = ps.root;
	while (rc == 0) {
		skip_ws(&ps);
		if (at_end(&ps))
			break;
		if (*ps.p == '#' || *ps.p == '\n' || *ps.p == '\r')
			rc = end_of_line(&ps, "a comment");
		else if (*ps.p == '[')
			rc = parse_header(&ps);
		else
			rc = parse_keyval(&ps);
	}
	if (rc == 0)
		*root = ps.root;
	else
		node_free(ps.root);
	return rc;
}

/* ---- paths ---- */

/* Go's path.Clean, in place; s must not be empty. */
static void clean_path(char *s)
{
	size_t n = strlen(s), r = 0, w = 0, dotdot = 0;
	int rooted = s[0] == '/';

	assert(n > 0);
	if (rooted) {
		w = r = dotdot = 1;
	}
	while (r < n) {
		if (s[r] == '/') {
			r++;
		} else if (s[r] == '.' && (r + 1 == n || s[r + 1] == '/')) {
			r++;
		} else if (s[r] == '.' && s[r + 1] == '.' && (r + 2 == n || s[r + 2] == '/')) {
			r += 2;
			if (w > dotdot) {
				w--;
				while (w > dotdot && s[w] != '/')
					w--;
			} else if (!rooted) {
				if (w > 0)
					s[w++] = '/';
				s[w++] = '.';
				s[w++] = '.';
				dotdot = w;
			}
		} else {
			if ((rooted && w != 1) || (!rooted && w != 0))
				s[w++] = '/';
			while (r < n && s[r] != '/')
				s[w++] = s[r++];
		}
	}
	if (w == 0)
		s[w++] = '.';
	s[w] = '\0';
}

/* base/p cleaned (Go's filepath.Join). Returns a malloc'd string or NULL. */
static char *join_path(const char *base, const char *p)
{
	char *s;

	if (asprintf(&s, "%s/%s", base, p) < 0)
		return NULL;
	clean_path(s);
	return s;
}

/* The directory of file: "." when it has no '/'. Malloc'd or NULL. */
static char *dir_of(const char *file)
{
	const char *slash = strrchr(file, '/');

	if (!slash)
		return strdup(".");
	if (slash == file)
		return strdup("/");
	return strndup(file, (size_t)(slash - file));
}

/* containerd's makeAbsPath: absolute paths unchanged, others joined to the hosts.toml directory. */
static char *resolve_path(const struct interp *in, const char *p)
{
	return p[0] == '/' ? strdup(p) : join_path(in->base, p);
}

/* ---- building hosts ---- */

static void host_clear(struct fetch_host *h)
{
	free(h->scheme);
	free(h->host);
	free(h->path);
	for (size_t i = 0; i < h->nca; i++)
		free(h->ca[i]);
	free(h->ca);
	for (size_t i = 0; i < h->nclient; i++) {
		free(h->client[i].cert);
		free(h->client[i].key);
	}
	free(h->client);
	for (size_t i = 0; i < h->nheaders; i++) {
		free(h->headers[i].name);
		free(h->headers[i].value);
	}
	free(h->headers);
	free(h->proxy);
}

void fetch_hosts_free(struct fetch_hosts *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++)
		host_clear(&h->hosts[i]);
	free(h->hosts);
	for (size_t i = 0; i < h->nwarnings; i++)
		free(h->warnings[i].msg);
	free(h->warnings);
	free(h->source);
	free(h);
}

/* A new zeroed host at the end of h. Returns NULL on allocation failure. */
static struct fetch_host *add_host(struct fetch_hosts *h)
{
	struct fetch_host *hosts = realloc(h->hosts, (h->n + 1) * sizeof(*hosts)), *host;

	if (!hosts)
		return NULL;
	h->hosts = hosts;
	host = &hosts[h->n++];
	memset(host, 0, sizeof(*host));
	host->skip_verify = -1;
	host->dial_timeout_ms = -1;
	host->caps = FETCH_CAP_ALL;
	return host;
}

/* Appends a CA path; consumes path, also on failure. */
static int push_ca(struct fetch_host *h, char *path)
{
	char **ca;

	if (!path)
		return -ENOMEM;
	ca = realloc(h->ca, (h->nca + 1) * sizeof(*ca));
	if (!ca) {
		free(path);
		return -ENOMEM;
	}
	h->ca = ca;
	h->ca[h->nca++] = path;
	return 0;
}

/* Appends a client pair; consumes cert and key (key may be NULL), also on failure. */
static int push_client(struct fetch_host *h, char *cert, char *key, int want_key)
{
	struct fetch_host_client *c = NULL;

	if (cert && (key || !want_key))
		c = realloc(h->client, (h->nclient + 1) * sizeof(*c));
	if (!c) {
		free(cert);
		free(key);
		return -ENOMEM;
	}
	h->client = c;
	h->client[h->nclient].cert = cert;
	h->client[h->nclient].key = key;
	h->nclient++;
	return 0;
}

/* Appends a header; copies name and value. */
static int push_header(struct fetch_host *h, const char *name, const char *value)
{
	struct fetch_host_header *hd = realloc(h->headers, (h->nheaders + 1) * sizeof(*hd));

	if (!hd)
		return -ENOMEM;
	h->headers = hd;
	hd = &h->headers[h->nheaders];
	hd->name = strdup(name);
	hd->value = strdup(value);
	if (!hd->name || !hd->value) {
		free(hd->name);
		free(hd->value);
		return -ENOMEM;
	}
	h->nheaders++;
	return 0;
}

__attribute__((format(printf, 3, 4))) static int warn(struct interp *in, int line, const char *fmt, ...)
{
	struct fetch_hosts *h = in->h;
	struct warning *w;
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	w = realloc(h->warnings, (h->nwarnings + 1) * sizeof(*w));
	if (!w)
		return -ENOMEM;
	h->warnings = w;
	w = &h->warnings[h->nwarnings];
	w->line = line;
	w->seq = h->nwarnings;
	if (asprintf(&w->msg, "%s:%d: %s", in->file, line, what) < 0)
		return -ENOMEM;
	h->nwarnings++;
	return 0;
}

static int warning_cmp(const void *a, const void *b)
{
	const struct warning *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int is_tchar(char c)
{
	return is_bare(c) || (c && strchr("!#$%&'*+.^`|~", c));
}

static int set_caps(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	unsigned caps = 0;
	char e[ECHO_MAX];

	if (v->kind != T_ARRAY)
		return fail_at(in->file, v->line,
			       "\"capabilities\" must be an array of strings, e.g. [\"pull\", \"resolve\"]");
	for (size_t i = 0; i < v->n; i++) {
		const struct tnode *c = v->items[i];

		if (c->kind != T_STRING)
			return fail_at(in->file, c->line, "\"capabilities\" must be an array of strings");
		if (strcasecmp(c->str, "pull") == 0)
			caps |= FETCH_CAP_PULL;
		else if (strcasecmp(c->str, "resolve") == 0)
			caps |= FETCH_CAP_RESOLVE;
		else if (strcasecmp(c->str, "push") == 0)
			caps |= FETCH_CAP_PUSH;
		else
			return fail_at(
				in->file, c->line,
				"unknown capability \"%s\" (expected \"pull\", \"resolve\" or \"push\")",
				ECHO(e, c->str));
	}
	host->caps = caps ? caps : FETCH_CAP_ALL; /* containerd: an empty list means all */
	return 0;
}

static int set_ca(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	const char *msg = "\"ca\" must be a path or an array of paths";
	int rc = 0;

	if (v->kind == T_STRING) {
		if (!v->str[0])
			return fail_at(in->file, v->line, "empty path in \"ca\"");
		return push_ca(host, resolve_path(in, v->str));
	}
	if (v->kind != T_ARRAY)
		return fail_at(in->file, v->line, "%s", msg);
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		const struct tnode *c = v->items[i];

		if (c->kind != T_STRING)
			return fail_at(in->file, c->line, "%s", msg);
		if (!c->str[0])
			return fail_at(in->file, c->line, "empty path in \"ca\"");
		rc = push_ca(host, resolve_path(in, c->str));
	}
	return rc;
}

static int set_client(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	const char *msg = "\"client\" must be a path, an array of paths or an array of [cert, key] pairs";
	int rc = 0;

	if (v->kind == T_STRING) {
		if (!v->str[0])
			return fail_at(in->file, v->line, "empty path in \"client\"");
		return push_client(host, resolve_path(in, v->str), NULL, 0);
	}
	if (v->kind != T_ARRAY)
		return fail_at(in->file, v->line, "%s", msg);
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		const struct tnode *c = v->items[i];
		const struct tnode *cert, *key;

		if (c->kind == T_STRING) {
			if (!c->str[0])
				return fail_at(in->file, c->line, "empty path in \"client\"");
			rc = push_client(host, resolve_path(in, c->str), NULL, 0);
			continue;
		}
		if (c->kind != T_ARRAY)
			return fail_at(in->file, c->line, "%s", msg);
		if (c->n != 2)
			return fail_at(in->file, c->line,
				       "a \"client\" pair must have two elements: [cert, key]");
		cert = c->items[0];
		key = c->items[1];
		if (cert->kind != T_STRING || key->kind != T_STRING)
			return fail_at(in->file, c->line,
				       "a \"client\" pair must be two strings: [cert, key]");
		if (!cert->str[0])
			return fail_at(in->file, c->line, "empty certificate path in \"client\" pair");
		/* "" as the key means the key is in the cert file (containerd's docs show [cert, ""]) */
		rc = push_client(host, resolve_path(in, cert->str),
				 key->str[0] ? resolve_path(in, key->str) : NULL, key->str[0] != '\0');
	}
	return rc;
}

static int header_value_ok(const char *s)
{
	for (; *s; s++)
		if (is_control((unsigned char)*s))
			return 0;
	return 1;
}

static int set_headers(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	char e[ECHO_MAX];
	int rc = 0;

	if (v->kind != T_TABLE)
		return fail_at(in->file, v->line,
			       "\"header\" must be a table: [header] or [host.\"...\".header]");
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		const char *name = v->keys[i];
		const struct tnode *val = v->items[i];
		int ok = name[0] != '\0';

		for (const char *c = name; *c; c++)
			ok = ok && is_tchar(*c);
		if (!ok)
			return fail_at(in->file, val->line, "invalid header name \"%s\"", ECHO(e, name));
		if (val->kind == T_STRING) {
			if (!header_value_ok(val->str))
				return fail_at(in->file, val->line,
					       "control character in the value of header \"%s\"", name);
			rc = push_header(host, name, val->str);
			continue;
		}
		if (val->kind != T_ARRAY)
			return fail_at(in->file, val->line,
				       "header \"%s\" must be a string or an array of strings", name);
		for (size_t j = 0; j < val->n && rc == 0; j++) {
			const struct tnode *s = val->items[j];

			if (s->kind != T_STRING)
				return fail_at(in->file, s->line,
					       "header \"%s\" must be a string or an array of strings", name);
			if (!header_value_ok(s->str))
				return fail_at(in->file, s->line,
					       "control character in the value of header \"%s\"", name);
			rc = push_header(host, name, s->str);
		}
	}
	return rc;
}

/* Go's time.ParseDuration for non-negative values, in milliseconds rounded up. */
static int parse_duration_ms(const char *s, long long *ms)
{
	static const struct {
		const char *unit;
		double ns;
	} units[] = {
		{"ns", 1},   {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3},
		{"ms", 1e6}, {"s", 1e9},  {"m", 60e9},	      {"h", 3600e9},
	};
	double total = 0;

	if (*s == '+')
		s++;
	if (strcmp(s, "0") == 0) {
		*ms = 0;
		return 0;
	}
	if (!*s)
		return -EINVAL;
	while (*s) {
		double v = 0, scale = 1;
		int digits = 0;
		size_t best = 0, best_len = 0;

		for (; *s >= '0' && *s <= '9'; s++, digits++)
			v = v * 10 + (*s - '0');
		if (*s == '.')
			for (s++; *s >= '0' && *s <= '9'; s++, digits++)
				v += (*s - '0') * (scale /= 10);
		if (!digits)
			return -EINVAL;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t n = strlen(units[i].unit);

			if (strncmp(s, units[i].unit, n) == 0 && n > best_len) {
				best = i;
				best_len = n;
			}
		}
		if (!best_len)
			return -EINVAL;
		s += best_len;
		total += v * units[best].ns;
		if (total > (double)MAX_TIMEOUT_MS * 1e6)
			return -ERANGE;
	}
	*ms = (long long)(total / 1e6);
	if ((double)*ms * 1e6 < total)
		++*ms;
	return 0;
}

static int set_proxy(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	static const char *const schemes[] = {"http://", "https://", "socks5://", "socks5h://"};
	const char *rest = NULL;
	char e[ECHO_MAX];
	size_t hostlen;

	if (v->kind != T_STRING)
		return fail_at(in->file, v->line, "\"proxy\" must be a string");
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && !rest; i++)
		if (strncasecmp(v->str, schemes[i], strlen(schemes[i])) == 0)
			rest = v->str + strlen(schemes[i]);
	if (!rest)
		return fail_at(
			in->file, v->line,
			"invalid \"proxy\" \"%s\": expected http://, https://, socks5:// or socks5h://",
			ECHO(e, v->str));
	hostlen = strcspn(rest, "/?#");
	if (hostlen == 0 || strcspn(rest, " \t") < strlen(rest) ||
	    (rest[hostlen] && strcmp(rest + hostlen, "/") != 0))
		return fail_at(in->file, v->line, "invalid \"proxy\" \"%s\": expected scheme://host[:port]",
			       ECHO(e, v->str));
	if (!header_value_ok(v->str))
		return fail_at(in->file, v->line, "control character in \"proxy\"");
	free(host->proxy);
	host->proxy = strdup(v->str);
	return host->proxy ? 0 : -ENOMEM;
}

/* The hostFileConfig fields (plus `server` at the top level). go-toml matches struct fields
 * case-insensitively, so containerd accepts "Capabilities" too; so does this. */
enum field { F_CAPS, F_CA, F_CLIENT, F_SKIP, F_OVERRIDE, F_HEADER, F_DIAL, F_PROXY, F_SERVER, F_COUNT };

static const char *const field_names[F_COUNT] = {
	"capabilities", "ca",		"client", "skip_verify", "override_path",
	"header",	"dial_timeout", "proxy",  "server",
};

/* Applies the hostFileConfig keys of table t to host. top: t is the root, where `host` is handled by
 * the caller and `server` is returned in *server. */
static int apply_config(struct interp *in, const struct tnode *t, int top, struct fetch_host *host,
			int *override_path, const struct tnode **server)
{
	int seen[F_COUNT] = {0}, rc = 0;
	char e[ECHO_MAX];

	*override_path = 0;
	for (size_t i = 0; i < t->n && rc == 0; i++) {
		const char *key = t->keys[i];
		const struct tnode *v = t->items[i];
		int f = 0;

		if (top && strcmp(key, "host") == 0)
			continue;
		while (f < F_COUNT && strcasecmp(key, field_names[f]) != 0)
			f++;
		if (f == F_SERVER && !top)
			f = F_COUNT; /* containerd ignores `server` in a [host."..."] table */
		if (f < F_COUNT && seen[f])
			return fail_at(
				in->file, v->line,
				"duplicate key \"%s\" (same as line %d: keys match case-insensitively)",
				ECHO(e, key), seen[f]);
		if (f < F_COUNT)
			seen[f] = v->line;
		switch (f) {
		case F_CAPS:
			rc = set_caps(in, v, host);
			break;
		case F_CA:
			rc = set_ca(in, v, host);
			break;
		case F_CLIENT:
			rc = set_client(in, v, host);
			break;
		case F_SKIP:
			if (v->kind != T_BOOL)
				return fail_at(in->file, v->line, "\"skip_verify\" must be true or false");
			host->skip_verify = (int)v->num;
			break;
		case F_OVERRIDE:
			if (v->kind != T_BOOL)
				return fail_at(in->file, v->line, "\"override_path\" must be true or false");
			*override_path = (int)v->num;
			break;
		case F_HEADER:
			rc = set_headers(in, v, host);
			break;
		case F_DIAL:
			if (v->kind != T_STRING || parse_duration_ms(v->str, &host->dial_timeout_ms) != 0)
				return fail_at(in->file, v->line,
					       "\"dial_timeout\" must be a duration string like \"500ms\" or "
					       "\"2s\" (at most 24h)");
			break;
		case F_PROXY:
			rc = set_proxy(in, v, host);
			break;
		case F_SERVER:
			if (v->kind != T_STRING)
				return fail_at(in->file, v->line, "\"server\" must be a string (a URL)");
			*server = v;
			break;
		default:
			if (!top && strcmp(key, "host") == 0)
				rc = warn(in, v->line,
					  "nested [host] tables are not supported; \"host\" ignored");
			else
				rc = warn(in, v->line, "unknown key \"%s\" ignored", ECHO(e, key));
			break;
		}
	}
	return rc;
}

/* host[:port] or [v6]:port */
static int valid_authority(const char *a, size_t n)
{
	size_t i = 0;

	if (n && a[0] == '[') {
		for (i = 1; i < n && a[i] != ']'; i++)
			if (util_hexval(a[i]) < 0 && a[i] != ':' && a[i] != '.')
				return 0;
		if (i == n || i == 1)
			return 0;
		i++;
	} else {
		for (; i < n && a[i] != ':'; i++)
			if (!is_bare(a[i]) && a[i] != '.' && a[i] != '~')
				return 0;
		if (i == 0)
			return 0;
	}
	if (i == n)
		return 1;
	return a[i] == ':' && fetch_port_valid(a + i + 1, n - i - 1);
}

/* Sets scheme, host and path from a host URL the way containerd's parseHostConfig does. */
static int set_url(struct interp *in, int line, const char *url, int override_path, struct fetch_host *host)
{
	const char *scheme = "https", *rest = url, *path;
	char e[ECHO_MAX], *p = NULL;
	size_t alen, plen;
	int rc = 0;

	if (strncasecmp(url, "https://", 8) == 0) {
		rest = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		scheme = "http";
		rest = url + 7;
	} else if (strstr(url, "://")) {
		return fail_at(in->file, line, "unsupported scheme in \"%s\" (expected http:// or https://)",
			       ECHO(e, url));
	}
	alen = strcspn(rest, "/?#");
	path = rest + alen;
	if (alen == 0)
		return fail_at(in->file, line, "missing host name in \"%s\"", ECHO(e, url));
	if (memchr(rest, '@', alen))
		return fail_at(in->file, line, "credentials in host URL \"%s\" are not supported",
			       ECHO(e, url));
	if (!valid_authority(rest, alen))
		return fail_at(in->file, line, "invalid host in \"%s\" (expected host[:port] or [ipv6]:port)",
			       ECHO(e, url));
	plen = strcspn(path, "?#");
	if (path[plen])
		return fail_at(in->file, line, "query or fragment not allowed in host URL \"%s\"",
			       ECHO(e, url));
	for (size_t i = 0; i < plen; i++)
		if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f)
			return fail_at(in->file, line, "space or control character in host URL \"%s\"",
				       ECHO(e, url));
	if (plen) {
		/* room for "/v2" after the cleaned path */
		p = malloc(plen + sizeof(API_PATH));
		if (!p)
			return -ENOMEM;
		memcpy(p, path, plen + 1);
		clean_path(p);
		if (strcmp(p, "/") == 0)
			p[0] = '\0'; /* "https://h/" is the host root (containerd would build "//v2") */
		if (!override_path && (strlen(p) < 3 || strcmp(p + strlen(p) - 3, API_PATH) != 0))
			strcat(p, API_PATH);
	} else {
		p = strdup(override_path ? "" : API_PATH);
		if (!p)
			return -ENOMEM;
	}
	host->path = p;
	host->scheme = strdup(scheme);
	host->host = strndup(rest, alen);
	if (!host->scheme || !host->host)
		rc = -ENOMEM;
	return rc;
}

static int is_loopback(const char *registry)
{
	struct fetch_ref r = {.domain = (char *)registry};

	return strcmp(registry, "::1") == 0 || fetch_ref_is_loopback(&r);
}

/* The server containerd uses when hosts.toml names none (ConfigureHosts). */
static int set_default_server(const char *registry, struct fetch_host *host)
{
	const char *name = registry, *scheme = "https";

	if (strcmp(registry, DOCKER_DOMAIN) == 0) {
		name = DOCKER_API_HOST;
	} else if (is_loopback(registry)) {
		scheme = "http";
		if (host->skip_verify < 0)
			host->skip_verify = 1;
	}
	host->scheme = strdup(scheme);
	host->host = strdup(name);
	host->path = strdup(API_PATH);
	host->caps = FETCH_CAP_ALL;
	host->is_server = 1;
	return host->scheme && host->host && host->path ? 0 : -ENOMEM;
}

static int build(struct interp *in, const struct tnode *root)
{
	const struct tnode *server = NULL, *hosts = table_find(root, "host");
	struct fetch_host *host;
	int override_path, rc = 0;

	/* exactly "host": containerd orders mirrors by tables whose first key part is "host" */
	if (hosts && hosts->kind != T_TABLE)
		return fail_at(in->file, hosts->line, "\"host\" must be [host.\"URL\"] tables");
	for (size_t i = 0; hosts && i < hosts->n; i++) {
		const struct tnode *t = hosts->items[i];
		const char *url = hosts->keys[i];

		if (t->kind != T_TABLE)
			return fail_at(in->file, t->line,
				       "\"host\" must be [host.\"URL\"] tables, not a value");
		if (!url[0])
			return fail_at(in->file, t->line, "empty host URL in [host.\"\"]");
		host = add_host(in->h);
		if (!host)
			return -ENOMEM;
		rc = apply_config(in, t, 0, host, &override_path, NULL);
		if (rc == 0)
			rc = set_url(in, t->line, url, override_path, host);
		if (rc)
			return rc;
	}
	host = add_host(in->h);
	if (!host)
		return -ENOMEM;
	rc = apply_config(in, root, 1, host, &override_path, &server);
	if (rc)
		return rc;
	host->is_server = 1;
	if (server && server->str[0])
		return set_url(in, server->line, server->str, override_path, host);
	/* no server: the registry itself, with the top-level TLS settings but all capabilities */
	return set_default_server(in->registry, host);
}

static int check_registry(const char *registry)
{
	char e[ECHO_MAX];
	int ok;

	if (!registry || !registry[0])
		return strata_err(EINVAL, "invalid registry host \"\": empty");
	ok = strcmp(registry, ".") != 0 && strcmp(registry, "..") != 0 && strlen(registry) < 256;
	for (const char *c = registry; *c && ok; c++)
		ok = *c != '/' && (unsigned char)*c > 0x20 && *c != 0x7f;
	if (!ok)
		return strata_err(EINVAL, "invalid registry host \"%s\"", ECHO(e, registry));
	return 0;
}

int fetch_hosts_parse(const char *text, size_t len, const char *path, const char *registry,
		      struct fetch_hosts **out)
{
	struct interp in = {.file = path, .registry = registry};
	struct tnode *root = NULL;
	char *base = NULL;
	int rc;

	assert(path);
	in.h = calloc(1, sizeof(*in.h));
	base = dir_of(path);
	if (!in.h || !base) {
		rc = -ENOMEM;
		goto out;
	}
	in.base = base;
	rc = check_registry(registry);
	if (rc)
		goto out;
	rc = parse_toml(text, len, path, &root);
	if (rc)
		goto out;
	rc = build(&in, root);
	if (rc)
		goto out;
	if (in.h->nwarnings > 1)
		qsort(in.h->warnings, in.h->nwarnings, sizeof(*in.h->warnings), warning_cmp);
	in.h->source = strdup(path);
	if (!in.h->source)
		rc = -ENOMEM;
out:
	if (rc == -ENOMEM)
		strata_err(ENOMEM, "%s: out of memory", path);
	if (rc == 0) {
		*out = in.h;
		in.h = NULL;
	}
	fetch_hosts_free(in.h);
	node_free(root);
	free(base);
	return rc;
}

/* ---- loading from a certs.d directory ---- */

/* containerd's hostDirectory: "host:port" -> "host_port_" (unchanged without ':'). Malloc'd. */
static char *host_directory(const char *registry)
{
	const char *colon = strrchr(registry, ':');
	char *s;

	if (!colon || colon == registry)
		return strdup(registry);
	if (asprintf(&s, "%.*s_%s_", (int)(colon - registry), registry, colon + 1) < 0)
		return NULL;
	return s;
}

/* Reads file (at most MAX_TEXT bytes) into a malloc'd *text. -ENOENT quietly when missing. */
static int read_file(const char *file, char **text, size_t *len)
{
	char *buf = NULL;
	size_t n = 0, cap = 0;
	struct stat st;
	int fd, rc = 0;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : strata_err(errno, "%s: %s", file, strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = strata_err(errno, "%s: %s", file, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = strata_err(EISDIR, "%s: is a directory", file);
		goto out;
	}
	for (;;) {
		ssize_t got;

		if (n == cap) {
			char *nb;

			if (cap > MAX_TEXT) {
				rc = strata_err(EINVAL, "%s: file is larger than %d bytes", file, MAX_TEXT);
				goto out;
			}
			cap = cap ? cap * 2 : 4096;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				rc = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = strata_err(errno, "%s: %s", file, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > MAX_TEXT) {
		rc = strata_err(EINVAL, "%s: file is larger than %d bytes", file, MAX_TEXT);
		goto out;
	}
out:
	close(fd);
	if (rc == 0) {
		*text = buf;
		*len = n;
	} else {
		free(buf);
	}
	return rc;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* containerd's loadCertFiles: "*.crt" are CAs, "*.cert" client certs with "<name>.key" when present;
 * in name order; directories are skipped. Adds them to host. */
static int load_cert_files(const char *dir, struct fetch_host *host)
{
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : strata_err(errno, "%s: %s", dir, strerror(errno));
	while (rc == 0) {
		struct stat st;
		char **nn;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				rc = strata_err(errno, "%s: %s", dir, strerror(errno));
			break;
		}
		if (!has_suffix(de->d_name, ".crt") && !has_suffix(de->d_name, ".cert"))
			continue;
		if (de->d_type == DT_DIR)
			continue;
		if (de->d_type == DT_UNKNOWN &&
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
			continue;
		nn = realloc(names, (n + 1) * sizeof(*nn));
		if (!nn) {
			rc = -ENOMEM;
			break;
		}
		names = nn;
		names[n] = strdup(de->d_name);
		if (!names[n])
			rc = -ENOMEM;
		else
			n++;
	}
	closedir(d);
	if (rc)
		goto out;
	if (n > 1)
		qsort(names, n, sizeof(*names), str_cmp);
	for (size_t i = 0; i < n && rc == 0; i++) {
		char *file = join_path(dir, names[i]), *key = NULL;
		struct stat st;

		if (has_suffix(names[i], ".crt")) {
			rc = push_ca(host, file);
			continue;
		}
		if (file && asprintf(&key, "%.*s.key", (int)(strlen(file) - 5), file) < 0)
			key = NULL;
		if (!file || !key) {
			free(file);
			free(key);
			rc = -ENOMEM;
		} else if (stat(key, &st) == 0) {
			rc = push_client(host, file, key, 1);
		} else if (errno == ENOENT) {
			free(key);
			rc = push_client(host, file, NULL, 0);
		} else {
			rc = strata_err(errno, "%s: %s", key, strerror(errno));
			free(file);
			free(key);
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* The default server alone, with the Docker-style certificates of dir when dir is not NULL. */
static int load_default(const char *registry, const char *dir, struct fetch_hosts **out)
{
	struct fetch_hosts *h = calloc(1, sizeof(*h));
	struct fetch_host *host;
	int rc;

	if (!h)
		return -ENOMEM;
	host = add_host(h);
	rc = host ? 0 : -ENOMEM;
	if (rc == 0 && dir) {
		h->source = strdup(dir);
		rc = h->source ? load_cert_files(dir, host) : -ENOMEM;
	}
	if (rc == 0)
		rc = set_default_server(registry, host);
	if (rc == 0)
		*out = h;
	else
		fetch_hosts_free(h);
	return rc;
}

/* hosts_dir made absolute (relative to the current directory) and cleaned. Malloc'd or NULL. */
static char *absolute_dir(const char *hosts_dir)
{
	char *cwd, *s;

	if (hosts_dir[0] == '/') {
		s = strdup(hosts_dir);
		if (s)
			clean_path(s);
		return s;
	}
	cwd = getcwd(NULL, 0);
	if (!cwd)
		return NULL;
	s = join_path(cwd, hosts_dir);
	free(cwd);
	return s;
}

int fetch_hosts_load(const char *hosts_dir, const char *registry, struct fetch_hosts **out)
{
	char *root = NULL, *cand[3] = {NULL, NULL, NULL}, *dir = NULL, *file = NULL, *text = NULL;
	size_t len = 0;
	int rc;

	rc = check_registry(registry);
	if (rc)
		return rc;
	if (!hosts_dir || !hosts_dir[0])
		return load_default(registry, NULL, out);
	root = absolute_dir(hosts_dir);
	if (!root) {
		rc = errno == ENOMEM || errno == 0 ? -ENOMEM
						   : strata_err(errno, "%s: %s", hosts_dir, strerror(errno));
		goto out;
	}
	/* containerd's hostPaths (unix): host_port_ (when different), host, _default */
	{
		char *hd = host_directory(registry);
		size_t k = 0;

		if (!hd) {
			rc = -ENOMEM;
			goto out;
		}
		if (strcmp(hd, registry) != 0)
			cand[k++] = join_path(root, hd);
		cand[k++] = join_path(root, registry);
		cand[k++] = join_path(root, DEFAULT_DIR);
		free(hd);
		for (size_t i = 0; i < k; i++)
			if (!cand[i])
				rc = -ENOMEM;
		for (size_t i = 0; i < k && rc == 0 && !dir; i++) {
			struct stat st;

			if (stat(cand[i], &st) == 0)
				dir = cand[i];
			else if (errno != ENOENT)
				rc = strata_err(errno, "%s: %s", cand[i], strerror(errno));
		}
		if (rc)
			goto out;
	}
	if (!dir) {
		rc = load_default(registry, NULL, out);
		goto out;
	}
	file = join_path(dir, HOSTS_FILE);
	if (!file) {
		rc = -ENOMEM;
		goto out;
	}
	rc = read_file(file, &text, &len);
	if (rc == -ENOENT || (rc == 0 && len == 0)) {
		/* no hosts.toml: Docker's certificate file layout in the same directory */
		rc = load_default(registry, dir, out);
		goto out;
	}
	if (rc)
		goto out;
	rc = fetch_hosts_parse(text, len, file, registry, out);
out:
	if (rc == -ENOMEM)
		strata_err(ENOMEM, "loading hosts for %s: out of memory", registry);
	free(text);
	free(file);
	for (size_t i = 0; i < 3; i++)
		free(cand[i]);
	free(root);
	return rc;
}

/* ---- accessors ---- */

size_t fetch_hosts_count(const struct fetch_hosts *h)
{
	return h->n;
}

const struct fetch_host *fetch_hosts_get(const struct fetch_hosts *h, size_t i)
{
	return i < h->n ? &h->hosts[i] : NULL;
}

const char *fetch_hosts_source(const struct fetch_hosts *h)
{
	return h->source;
}

size_t fetch_hosts_warning_count(const struct fetch_hosts *h)
{
	return h->nwarnings;
}

const char *fetch_hosts_warning(const struct fetch_hosts *h, size_t i)
{
	return i < h->nwarnings ? h->warnings[i].msg : NULL;
}

int fetch_host_has_cap(const struct fetch_host *host, unsigned caps)
{
	return (host->caps & caps) == caps;
}

int fetch_host_is_mirror(const struct fetch_host *host, const char *registry)
{
	if (strcmp(host->host, registry) == 0)
		return 0;
	return !(strcmp(registry, DOCKER_DOMAIN) == 0 && strcmp(host->host, DOCKER_API_HOST) == 0);
}

char *fetch_host_base_url(const struct fetch_host *host)
{
	char *s;

	if (asprintf(&s, "%s://%s%s", host->scheme, host->host, host->path) < 0)
		return NULL;
	return s;
}
