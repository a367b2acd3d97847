/* SPDX-License-Identifier: Apache-2.0 */
/* placeholder */
typedef int strata_placeholder_fs_fs_c;
