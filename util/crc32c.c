/* SPDX-License-Identifier: Apache-2.0 */
/* CRC-32C (Castagnoli, reflected 0x82f63b78): the SSE4.2 crc32 instruction on x86-64 CPUs that
 * have it (three interleaved streams, combined by table shifts), a table-driven loop elsewhere. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82f63b78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

/* Slicing-by-8 over the raw (pre- and post-inverted by the caller) register. */
static uint32_t sw(uint32_t c, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		v ^= c;
		c = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
		    table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^
		    table[2][(v >> 40) & 0xff] ^ table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
	return c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>

#define HW_BLOCK 8192 /* bytes per stream in one round of three */

/* The register after feeding `bytes` zero bytes to c: multiplication by x^(8*bytes) mod P, here
 * done by the table loop on zeros (HW_BLOCK is fixed: done once per 24 KiB, a small cost). */
static uint32_t shift_table[4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

static void shift_init(void)
{
	static const uint8_t zeros[HW_BLOCK];

	pthread_once(&table_once, table_init);
	/* shift(c) is linear in c: tabulate it per byte of c */
	for (int b = 0; b < 4; b++)
		for (uint32_t i = 0; i < 256; i++)
			shift_table[b][i] = sw(i << (8 * b), zeros, HW_BLOCK);
}

static uint32_t shift(uint32_t c)
{
	return shift_table[0][c & 0xff] ^ shift_table[1][(c >> 8) & 0xff] ^
	       shift_table[2][(c >> 16) & 0xff] ^ shift_table[3][c >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t hw(uint32_t c, const uint8_t *p, size_t len)
{
	while (len >= 3 * HW_BLOCK) {
		uint64_t c0 = c, c1 = 0, c2 = 0;

		for (size_t i = 0; i < HW_BLOCK; i += 8) {
			uint64_t a, b, d;

			memcpy(&a, p + i, 8);
			memcpy(&b, p + HW_BLOCK + i, 8);
			memcpy(&d, p + 2 * HW_BLOCK + i, 8);
			c0 = _mm_crc32_u64(c0, a);
			c1 = _mm_crc32_u64(c1, b);
			c2 = _mm_crc32_u64(c2, d);
		}
		c = shift(shift((uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
		p += 3 * HW_BLOCK;
		len -= 3 * HW_BLOCK;
	}
	{
		uint64_t c64 = c;

		while (len >= 8) {
			uint64_t v;

			memcpy(&v, p, 8);
			c64 = _mm_crc32_u64(c64, v);
			p += 8;
			len -= 8;
		}
		c = (uint32_t)c64;
	}
	while (len--)
		c = _mm_crc32_u8(c, *p++);
	return c;
}

static int have_hw(void)
{
	static int cached = -1;

	if (cached < 0) {
		__builtin_cpu_init();
		cached = __builtin_cpu_supports("sse4.2") ? 1 : 0;
	}
	return cached;
}

uint32_t util_crc32c(uint32_t crc, const void *data, size_t len)
{
	if (have_hw()) {
		pthread_once(&shift_once, shift_init);
		return ~hw(~crc, data, len);
	}
	pthread_once(&table_once, table_init);
	return ~sw(~crc, data, len);
}
#else
uint32_t util_crc32c(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&table_once, table_init);
	return ~sw(~crc, data, len);
}
#endif
