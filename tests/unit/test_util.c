/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for util/: CRC-32C (known values, the hardware path against a bitwise reference at
 * every length around its block size, continuation). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "util/crc32c.h"

static uint32_t ref_crc32c(const uint8_t *p, size_t len)
{
	uint32_t c = ~0u;

	while (len--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
	}
	return ~c;
}

static void test_crc32c(void **state)
{
	static uint8_t buf[3 * 8192 * 2 + 77];
	static const size_t lens[] = {
		0,    1,     7,	    8,	   9,	      63,	 8191,
		8192, 24575, 24576, 24577, 24576 + 8, 2 * 24576, 2 * 24576 + 77
	};

	(void)state;
	assert_int_equal(util_crc32c(0, "123456789", 9), 0xe3069283u);
	assert_int_equal(util_crc32c(0, "", 0), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(rand() & 0xff);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (size_t off = 0; off < 3; off++) {
			if (lens[i] + off > sizeof(buf))
				continue;
			assert_int_equal(util_crc32c(0, buf + off, lens[i]),
					 ref_crc32c(buf + off, lens[i]));
		}
	}
	/* continuing a CRC equals the CRC of the whole */
	assert_int_equal(util_crc32c(util_crc32c(0, buf, 30000), buf + 30000, sizeof(buf) - 30000),
			 ref_crc32c(buf, sizeof(buf)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
