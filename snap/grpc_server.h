/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal gRPC server on a unix socket (gRPC C core behind one file): unary and server-streaming
 * calls, answered by one handler with raw protobuf bytes. */
#ifndef STRATA_SNAP_GRPC_SERVER_H
#define STRATA_SNAP_GRPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes the handlers answer with (values as in grpc/status.h). */
enum snap_status {
	SNAP_OK = 0,
	SNAP_UNKNOWN = 2,
	SNAP_INVALID_ARGUMENT = 3,
	SNAP_NOT_FOUND = 5,
	SNAP_ALREADY_EXISTS = 6,
	SNAP_FAILED_PRECONDITION = 9,
	SNAP_UNIMPLEMENTED = 12,
	SNAP_INTERNAL = 13,
	SNAP_UNAVAILABLE = 14,
};

/* What a handler answers: zero or more response messages (one for a unary call, any number for a
 * server-streaming one; each is sent as its own message), then status and its message. */
struct snap_reply {
	enum snap_status status;
	char message[512];
	struct snap_reply_msg {
		uint8_t *data;
		size_t len;
	} * msgs;
	size_t nmsgs, cap;
};

/* Appends one response message (len bytes, copied) to r. Returns 0 or -ENOMEM. */
int snap_reply_add(struct snap_reply *r, const void *data, size_t len);

/* Sets r's status and its message (printf format). Returns status. */
enum snap_status snap_reply_status(struct snap_reply *r, enum snap_status status, const char *fmt,
				   ...) __attribute__((format(printf, 3, 4)));

/* Handles one call: method is the full path ("/pkg.Service/Method"), req its request message (len
 * bytes; NULL/0 for an empty message), both borrowed for the call. Fills r, which starts zeroed
 * (status SNAP_OK). Called on the server's one thread, one call at a time. */
typedef void (*snap_handler_fn)(void *ctx, const char *method, const uint8_t *req, size_t len,
				struct snap_reply *r);

struct snap_grpc;

/*
 * Serves gRPC (HTTP/2, no TLS) on the unix socket path: a stale socket file there is replaced, the
 * new one gets mode 0600. Calls handler(ctx, ...) for every call on a thread of its own. ctx is
 * borrowed and must outlive snap_grpc_stop. Returns 0 and *out, or negative errno with strata_err
 * set (a path that is not a socket is refused with -EEXIST).
 */
int snap_grpc_start(const char *path, snap_handler_fn handler, void *ctx, struct snap_grpc **out);

/* Stops serving (calls under way are cancelled), removes the socket file and frees g (NULL ok). */
void snap_grpc_stop(struct snap_grpc *g);

#endif
