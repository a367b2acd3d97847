/* SPDX-License-Identifier: Apache-2.0 */
/* placeholder */
typedef int strata_placeholder_store_store_c;
