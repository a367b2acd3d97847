/* SPDX-License-Identifier: Apache-2.0 */
/* CRC-32C (Castagnoli), with the SSE4.2 instruction where the CPU has it: the store's check of a
 * chunk at rest. */
#ifndef STRATA_UTIL_CRC32C_H
#define STRATA_UTIL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of len bytes at data, continuing crc (0 to start; pass the previous result to
 * continue). Thread-safe. */
uint32_t util_crc32c(uint32_t crc, const void *data, size_t len);

#endif
