/* SPDX-License-Identifier: Apache-2.0 */
/* A strict parser for the TOML subset hosts.toml files use, into a small tree (see toml_i.h). */
#include "toml_i.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

#define MAX_DEPTH     8	   /* array nesting */
#define MAX_KEY_PARTS 8	   /* parts of a table header: [host."url".header] has 3 */
#define MAX_NODES     4096 /* values + tables in one file; bounds the linear key lookups */

/* ---- the parser's state and the tree ---- */

struct parser {
	const char *p, *end;
	const char *file;
	int line;
	size_t nodes;
	struct tnode *root;
	struct tnode *cur; /* table that key = value lines go to */
};

__attribute__((format(printf, 3, 4))) int fetch_toml_fail(const char *file, int line,
							  const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return strata_err(EINVAL, "%s:%d: %s", file, line, what);
}

/* s quoted for a one-line message: control characters become '?', long input is cut with "...". */
const char *fetch_toml_echo(char *buf, size_t size, const char *s)
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
		fetch_toml_fail(ps->file, line, "too many values (the limit is %d)", MAX_NODES);
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

void fetch_toml_free(struct tnode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++) {
		fetch_toml_free(n->items[i]);
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
			fetch_toml_free(child);
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

struct tnode *fetch_toml_find(const struct tnode *t, const char *key)
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
			return fetch_toml_fail(file, line, "NUL byte in file");
		n = utf8_len(s + i, len - i);
		if (n == 0)
			return fetch_toml_fail(file, line, "invalid UTF-8");
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

/* At '#': skips the comment up to (not over) the end of line. */
static int skip_comment(struct parser *ps)
{
	assert(*ps->p == '#');
	for (ps->p++; !at_end(ps) && *ps->p != '\n'; ps->p++) {
		if (*ps->p == '\r' && ps->p + 1 < ps->end && ps->p[1] == '\n')
			break;
		if (fetch_toml_is_control((unsigned char)*ps->p))
			return fetch_toml_fail(ps->file, ps->line, "control character in comment");
	}
	return 0;
}

/* At '\n' or '\r': consumes one line break. */
static int newline(struct parser *ps)
{
	if (*ps->p == '\r') {
		if (ps->p + 1 >= ps->end || ps->p[1] != '\n')
			return fetch_toml_fail(ps->file, ps->line,
					       "carriage return not followed by a newline");
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
	return fetch_toml_fail(ps->file, ps->line, "unexpected %s after %s",
			       what_at(w, sizeof(w), ps->p, ps->end), after);
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
		return fetch_toml_fail(ps->file, ps->line, "unterminated string");
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
			return fetch_toml_fail(ps->file, ps->line,
					       "invalid escape '\\%c' in string", c);
		return fetch_toml_fail(ps->file, ps->line,
				       "invalid escape in string: backslash before %s",
				       what_at(w, sizeof(w), ps->p - 1, ps->end));
	}
	for (int i = 0; i < digits; i++) {
		int v = at_end(ps) ? -1 : util_hexval(*ps->p);

		if (v < 0)
			return fetch_toml_fail(ps->file, ps->line,
					       "invalid escape '\\%c': expected %d hex digits", c,
					       digits);
		cp = cp << 4 | (uint32_t)v;
		ps->p++;
	}
	if (cp == 0)
		return fetch_toml_fail(ps->file, ps->line,
				       "invalid escape: NUL (\\%c0000) is not allowed", c);
	if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return fetch_toml_fail(ps->file, ps->line,
				       "invalid escape: U+%X is not a Unicode scalar value",
				       (unsigned)cp);
	return buf_add(b, utf, utf8_put(utf, cp));
}

/* At the opening quote of a "basic" or 'literal' string, all on one line. *out is malloc'd. */
static int parse_string(struct parser *ps, char **out)
{
	struct buf b = { 0 };
	char quote = *ps->p;
	int rc = 0;

	ps->p++;
	if (ps->end - ps->p >= 2 && ps->p[0] == quote && ps->p[1] == quote) {
		rc = fetch_toml_fail(ps->file, ps->line,
				     "multi-line strings (%c%c%c) are not supported", quote, quote,
				     quote);
		goto out;
	}
	rc = buf_add(&b, "", 0);
	while (rc == 0) {
		const char *run = ps->p;

		while (!at_end(ps) && *ps->p != quote && !(quote == '"' && *ps->p == '\\') &&
		       !fetch_toml_is_control((unsigned char)*ps->p))
			ps->p++;
		rc = buf_add(&b, run, (size_t)(ps->p - run));
		if (rc)
			break;
		if (at_end(ps) || *ps->p == '\n' || *ps->p == '\r') {
			rc = fetch_toml_fail(ps->file, ps->line,
					     "unterminated string (a string must end on its line)");
		} else if (*ps->p == quote) {
			ps->p++;
			break;
		} else if (*ps->p == '\\') {
			ps->p++;
			rc = parse_escape(ps, &b);
		} else {
			rc = fetch_toml_fail(ps->file, ps->line,
					     "control character 0x%02x in string (use an escape)",
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

/* A bare, "basic" or 'literal' key. *out is malloc'd. what names the place for messages. */
static int parse_key(struct parser *ps, const char *what, char **out)
{
	const char *start = ps->p;
	char w[16];

	if (!at_end(ps) && (*ps->p == '"' || *ps->p == '\''))
		return parse_string(ps, out);
	while (!at_end(ps) && fetch_toml_is_bare(*ps->p))
		ps->p++;
	if (ps->p == start)
		return fetch_toml_fail(ps->file, ps->line, "expected a key %s, got %s", what,
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
	char k[TOML_ECHO_MAX];

	if (*ps->p == '+' || *ps->p == '-')
		neg = *ps->p++ == '-';
	if (!at_end(ps) && *ps->p == '0' && ps->p + 1 < ps->end &&
	    (ps->p[1] >= '0' && ps->p[1] <= '9'))
		return fetch_toml_fail(ps->file, ps->line,
				       "invalid integer for key \"%s\": leading zero",
				       TOML_ECHO(k, key));
	while (!at_end(ps)) {
		char c = *ps->p;

		if (c == '_' && digits && ps->p + 1 < ps->end && ps->p[1] >= '0' &&
		    ps->p[1] <= '9') {
			ps->p++;
			continue;
		}
		if (c < '0' || c > '9')
			break;
		if (v > (LLONG_MAX - (c - '0')) / 10)
			return fetch_toml_fail(ps->file, ps->line,
					       "integer out of range for key \"%s\"",
					       TOML_ECHO(k, key));
		v = v * 10 + (c - '0');
		digits++;
		ps->p++;
	}
	if (!digits)
		return fetch_toml_fail(ps->file, ps->line,
				       "invalid value for key \"%s\" (strings must be quoted)",
				       TOML_ECHO(k, key));
	if (!at_end(ps) && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
		return fetch_toml_fail(ps->file, ps->line, "floats are not supported (key \"%s\")",
				       TOML_ECHO(k, key));
	if (!at_end(ps) && (*ps->p == ':' || (*ps->p == '-' && ps->p - start == 4)))
		return fetch_toml_fail(ps->file, ps->line,
				       "dates and times are not supported (key \"%s\")",
				       TOML_ECHO(k, key));
	if (!at_end(ps) && (fetch_toml_is_bare(*ps->p)))
		return fetch_toml_fail(
			ps->file, ps->line,
			"invalid integer for key \"%s\" (only decimal integers; strings must be quoted)",
			TOML_ECHO(k, key));
	n->num = neg ? -v : v;
	return 0;
}

/* At '[' of an array value. */
static int parse_array(struct parser *ps, const char *key, int depth, struct tnode *arr)
{
	int open_line = ps->line, rc;
	char w[16], k[TOML_ECHO_MAX];

	if (depth >= MAX_DEPTH)
		return fetch_toml_fail(ps->file, ps->line, "arrays nested too deeply (key \"%s\")",
				       TOML_ECHO(k, key));
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
		return fetch_toml_fail(ps->file, ps->line,
				       "expected ',' or ']' in the array of key \"%s\", got %s",
				       TOML_ECHO(k, key), what_at(w, sizeof(w), ps->p, ps->end));
	}
	return fetch_toml_fail(ps->file, ps->line,
			       "unterminated array for key \"%s\" (opened on line %d)",
			       TOML_ECHO(k, key), open_line);
}

static int word_at(const struct parser *ps, const char *word)
{
	size_t n = strlen(word);

	return (size_t)(ps->end - ps->p) >= n && memcmp(ps->p, word, n) == 0 &&
	       ((size_t)(ps->end - ps->p) == n || !fetch_toml_is_bare(ps->p[n]));
}

static int parse_value(struct parser *ps, const char *key, int depth, struct tnode **out)
{
	struct tnode *n = NULL;
	char w[16], k[TOML_ECHO_MAX];
	int rc;

	if (at_end(ps) || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '#')
		return fetch_toml_fail(ps->file, ps->line, "expected a value for key \"%s\"",
				       TOML_ECHO(k, key));
	if (*ps->p == '{')
		return fetch_toml_fail(
			ps->file, ps->line,
			"inline tables are not supported (key \"%s\"); use a [table] header",
			TOML_ECHO(k, key));
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
		rc = fetch_toml_fail(
			ps->file, ps->line,
			"expected a value for key \"%s\", got %s (strings must be quoted)",
			TOML_ECHO(k, key), what_at(w, sizeof(w), ps->p, ps->end));
	}
	if (rc == 0)
		*out = n;
	else
		fetch_toml_free(n);
	return rc;
}

/* key = value */
static int parse_keyval(struct parser *ps)
{
	struct tnode *val = NULL, *old;
	char *key = NULL, k[TOML_ECHO_MAX];
	int rc;

	rc = parse_key(ps, "at the start of a line", &key);
	if (rc)
		goto out;
	skip_ws(ps);
	if (!at_end(ps) && *ps->p == '.') {
		rc = fetch_toml_fail(
			ps->file, ps->line,
			"dotted keys are not supported (key \"%s\"); use a [table] header",
			TOML_ECHO(k, key));
		goto out;
	}
	if (at_end(ps) || *ps->p != '=') {
		rc = fetch_toml_fail(ps->file, ps->line, "expected '=' after key \"%s\"",
				     TOML_ECHO(k, key));
		goto out;
	}
	old = fetch_toml_find(ps->cur, key);
	if (old) {
		rc = fetch_toml_fail(ps->file, ps->line,
				     "duplicate key \"%s\" (first defined on line %d)",
				     TOML_ECHO(k, key), old->def_line);
		goto out;
	}
	ps->p++;
	skip_ws(ps);
	rc = parse_value(ps, key, 0, &val);
	if (rc)
		goto out;
	{
		char after[TOML_ECHO_MAX + 32];

		snprintf(after, sizeof(after), "the value of key \"%s\"", TOML_ECHO(k, key));
		rc = end_of_line(ps, after);
	}
	if (rc)
		goto out;
	rc = node_push(ps->cur, key, val);
	key = NULL;
	val = NULL;
out:
	free(key);
	fetch_toml_free(val);
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
		out[n++] = fetch_toml_is_control((unsigned char)*start) ? '?' : *start;
	if (start < end)
		memcpy(out + n, "...", 4);
	else
		out[n] = '\0';
}

/* [a.b."c"] */
static int parse_header(struct parser *ps)
{
	char *parts[MAX_KEY_PARTS], name[3 * TOML_ECHO_MAX], w[16];
	struct tnode *t = ps->root;
	const char *start;
	size_t n = 0;
	int line = ps->line, rc = 0;

	start = ++ps->p;
	if (!at_end(ps) && *ps->p == '[') {
		rc = fetch_toml_fail(ps->file, line,
				     "arrays of tables ([[...]]) are not supported");
		goto out;
	}
	for (;;) {
		skip_ws(ps);
		if (n == MAX_KEY_PARTS) {
			rc = fetch_toml_fail(ps->file, line, "table header has more than %d parts",
					     MAX_KEY_PARTS);
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
		rc = fetch_toml_fail(ps->file, line, "expected '.' or ']' in table header, got %s",
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
		struct tnode *child = fetch_toml_find(t, parts[i]);
		char k[TOML_ECHO_MAX];

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
			rc = fetch_toml_fail(
				ps->file, line,
				"cannot define table [%s]: key \"%s\" already has a value (line %d)",
				name, TOML_ECHO(k, parts[i]), child->def_line);
			goto out;
		} else if (i + 1 == n) {
			if (child->explicit) {
				rc = fetch_toml_fail(
					ps->file, line,
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
int fetch_toml_parse(const char *text, size_t len, const char *file, struct tnode **root)
{
	struct parser ps = { .p = text, .end = text + len, .file = file, .line = 1 };
	int rc;

	if (len > TOML_MAX_TEXT)
		return fetch_toml_fail(file, 1, "file is larger than %d bytes", TOML_MAX_TEXT);
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
		fetch_toml_free(ps.root);
	return rc;
}
