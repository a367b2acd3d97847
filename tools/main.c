/* SPDX-License-Identifier: Apache-2.0 */
/* placeholder */
typedef int strata_placeholder_tools_main_c;
int main(void){return 0;}
