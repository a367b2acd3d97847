/* SPDX-License-Identifier: Apache-2.0 */
/* placeholder */
typedef int strata_placeholder_fetch_ref_c;
