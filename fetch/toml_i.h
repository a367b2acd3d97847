/* SPDX-License-Identifier: Apache-2.0 */
/* Private to fetch/: the TOML subset parser hosts.toml files are read with (toml.c), its tree, and
 * the message helpers its users share. */
#ifndef STRATA_FETCH_TOML_I_H
#define STRATA_FETCH_TOML_I_H

#include <stddef.h>

#define TOML_MAX_TEXT (1 << 20) /* largest hosts.toml accepted */
#define TOML_ECHO_MAX 120	/* longest piece of input quoted in a message */

/* The parsed document: a small TOML tree. */
enum tkind { T_STRING, T_BOOL, T_INT, T_ARRAY, T_TABLE };

struct tnode {
	enum tkind kind;
	int line;      /* where the key (or array element, or first header naming the table) is */
	int def_line;  /* where it was defined (a table: its explicit header) */
	char *str;     /* T_STRING, NUL-free */
	long long num; /* T_BOOL (0/1), T_INT */
	struct tnode **items; /* T_ARRAY elements; T_TABLE values, in insertion order */
	char **keys;	      /* T_TABLE: keys parallel to items */
	size_t n, cap;
	int explicit; /* T_TABLE: defined by a [header] (the root always is) */
};

/*
 * Parses text (len bytes, at most TOML_MAX_TEXT, need not be NUL-terminated) of the hosts.toml
 * subset fetch_hosts_parse() describes into *root, a T_TABLE (caller frees with fetch_toml_free).
 * file names the text in messages. Returns 0, -EINVAL with strata_err "<file>:<line>: <what>", or
 * -ENOMEM. Thread-safe (no shared state).
 */
int fetch_toml_parse(const char *text, size_t len, const char *file, struct tnode **root);

/* Frees n and everything under it. Accepts NULL. */
void fetch_toml_free(struct tnode *n);

/* The value of key in table t, or NULL. Borrowed from t. */
struct tnode *fetch_toml_find(const struct tnode *t, const char *key);

/* Sets strata_err to "<file>:<line>: <what>" and returns -EINVAL. */
__attribute__((format(printf, 3, 4))) int fetch_toml_fail(const char *file, int line,
							  const char *fmt, ...);

/* s quoted for a one-line message into buf (size > 8): control characters become '?', long input
 * is cut with "...". Returns buf. */
const char *fetch_toml_echo(char *buf, size_t size, const char *s);

#define TOML_ECHO(buf, s) fetch_toml_echo(buf, sizeof(buf), s)

/* A character of a TOML bare key. */
static inline int fetch_toml_is_bare(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* A control character TOML does not allow in strings and comments (tab is allowed). */
static inline int fetch_toml_is_control(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

#endif
