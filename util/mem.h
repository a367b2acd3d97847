/* SPDX-License-Identifier: Apache-2.0 */
/* Small memory helpers: growing arrays and base64 encoding and decoding. */
#ifndef STRATA_UTIL_MEM_H
#define STRATA_UTIL_MEM_H

#include <stddef.h>
#include <stdint.h>

/*
 * Makes the array *p (of *cap elements of elem bytes) hold at least need elements, doubling from
 * 16. Returns 0 (with *p and *cap updated when it grew), or -ENOMEM leaving *p and *cap untouched.
 */
int util_grow(void **p, size_t *cap, size_t need, size_t elem);

/*
 * Decodes standard base64 (len bytes of s; '=' padding optional, at most two) into a malloc'd
 * buffer in *out (*out_len bytes; the caller frees). Returns 0, -EINVAL for a character outside
 * the alphabet or an impossible length, or -ENOMEM.
 */
int util_base64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len);

/*
 * Encodes len bytes of data as standard base64 with '=' padding. Returns a malloc'd NUL-terminated
 * string (the caller frees it), or NULL when out of memory.
 */
char *util_base64_encode(const void *data, size_t len);

#endif
