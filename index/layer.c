/* SPDX-License-Identifier: Apache-2.0 */
/* placeholder */
typedef int strata_placeholder_index_layer_c;
