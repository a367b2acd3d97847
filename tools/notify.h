/* SPDX-License-Identifier: Apache-2.0 */
/* systemd's readiness notification (the NOTIFY_SOCKET protocol of sd_notify(3), no libsystemd). */
#ifndef STRATA_TOOLS_NOTIFY_H
#define STRATA_TOOLS_NOTIFY_H

/*
 * Sends state ("READY=1\nMAINPID=123", newline-separated assignments) to the service manager as
 * sd_notify(3) does: one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an
 * abstract name written with a leading '@'). Returns 1 when sent, 0 when $NOTIFY_SOCKET is unset
 * (not run by a service manager), negative errno with strata_err set when it could not be sent.
 * Thread-safe.
 */
int tools_notify(const char *state);

#endif
