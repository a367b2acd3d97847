/* SPDX-License-Identifier: Apache-2.0 */
/* The gRPC server of the snapshotter: gRPC C core (not a public API upstream, gRFC L20, so it stays
 * in this one file) on a unix socket, one completion queue and one thread, calls as small state
 * machines: receive the request, run the handler, send each response message, then the status. */
#include "grpc_server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "util/log.h"
#include "util/thread.h"

/* A handler's messages bigger than this are refused (containerd's default is 16 MiB). */
#define MAX_REQUEST (16u << 20)

enum call_state { CALL_NEW, CALL_RECEIVED, CALL_SENDING, CALL_DONE };

struct call {
	struct snap_grpc *g;
	enum call_state state;
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array request_md;
	grpc_byte_buffer *request;
	int cancelled;
	struct snap_reply reply;
	size_t sent; /* response messages sent so far */
	grpc_byte_buffer *out;
	grpc_slice status_details;
};

struct snap_grpc {
	grpc_server *server;
	grpc_completion_queue *cq;
	snap_handler_fn handler;
	void *ctx;
	char *path;
	pthread_t thread;
	int shutting_down; /* only the loop thread reads it after start */
};

static char shutdown_tag;

int snap_reply_add(struct snap_reply *r, const void *data, size_t len)
{
	uint8_t *copy;

	if (r->nmsgs == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 4;
		struct snap_reply_msg *m = realloc(r->msgs, cap * sizeof(*m));

		if (!m)
			return -ENOMEM;
		r->msgs = m;
		r->cap = cap;
	}
	copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	if (len)
		memcpy(copy, data, len);
	r->msgs[r->nmsgs].data = copy;
	r->msgs[r->nmsgs++].len = len;
	return 0;
}

enum snap_status snap_reply_status(struct snap_reply *r, enum snap_status status, const char *fmt,
				   ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
	r->status = status;
	return status;
}

static void call_free(struct call *c)
{
	if (!c)
		return;
	if (c->call)
		grpc_call_unref(c->call);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->request_md);
	if (c->request)
		grpc_byte_buffer_destroy(c->request);
	if (c->out)
		grpc_byte_buffer_destroy(c->out);
	for (size_t i = 0; i < c->reply.nmsgs; i++)
		free(c->reply.msgs[i].data);
	free(c->reply.msgs);
	grpc_slice_unref(c->status_details);
	free(c);
}

/* Asks for the next incoming call. Returns 0 or -1 (logged). */
static int request_call(struct snap_grpc *g)
{
	struct call *c = calloc(1, sizeof(*c));

	if (!c) {
		strata_log(LOG_ERR, "snapshotter: out of memory accepting a call");
		return -1;
	}
	c->g = g;
	c->state = CALL_NEW;
	c->status_details = grpc_empty_slice();
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->request_md);
	if (grpc_server_request_call(g->server, &c->call, &c->details, &c->request_md, g->cq, g->cq,
				     c) != GRPC_CALL_OK) {
		strata_log(LOG_ERR, "snapshotter: cannot accept calls");
		call_free(c);
		return -1;
	}
	return 0;
}

/* Starts a batch of n ops on c's call with c as tag. Returns 0 or -1. */
static int batch(struct call *c, const grpc_op *ops, size_t n)
{
	grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);

	if (e != GRPC_CALL_OK) {
		strata_log(LOG_ERR, "snapshotter: call batch failed (%d)", (int)e);
		return -1;
	}
	return 0;
}

/* An accepted call: send the initial metadata and receive the request. */
static int on_new(struct call *c)
{
	grpc_op ops[2];

	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_RECV_MESSAGE;
	ops[1].data.recv_message.recv_message = &c->request;
	c->state = CALL_RECEIVED;
	return batch(c, ops, 2);
}

/* Sends response message c->sent, or (all sent) the status and the close. */
static int send_next(struct call *c)
{
	grpc_op ops[3];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	if (c->out) {
		grpc_byte_buffer_destroy(c->out);
		c->out = NULL;
	}
	if (c->reply.status == SNAP_OK && c->sent < c->reply.nmsgs) {
		struct snap_reply_msg *m = &c->reply.msgs[c->sent++];
		grpc_slice s = grpc_slice_from_copied_buffer((const char *)m->data, m->len);

		c->out = grpc_raw_byte_buffer_create(&s, 1);
		grpc_slice_unref(s);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = c->out;
		/* The last message goes with the status; the others one at a time. */
		if (c->sent < c->reply.nmsgs) {
			c->state = CALL_SENDING;
			return batch(c, ops, n);
		}
	}
	grpc_slice_unref(c->status_details);
	c->status_details = grpc_slice_from_copied_string(c->reply.message);
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)c->reply.status;
	ops[n++].data.send_status_from_server.status_details = c->reply.status == SNAP_OK ?
								       NULL :
								       &c->status_details;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
	c->state = CALL_DONE;
	return batch(c, ops, n);
}

/* The request arrived: run the handler, then answer. */
static int on_received(struct call *c)
{
	char *method = grpc_slice_to_c_string(c->details.method);
	grpc_byte_buffer_reader rd;
	grpc_slice all = grpc_empty_slice();
	const uint8_t *req = NULL;
	size_t len = 0;
	int rc;

	if (c->request) {
		if (!grpc_byte_buffer_reader_init(&rd, c->request)) {
			snap_reply_status(&c->reply, SNAP_INTERNAL, "cannot read the request");
			goto answer;
		}
		all = grpc_byte_buffer_reader_readall(&rd);
		grpc_byte_buffer_reader_destroy(&rd);
		req = GRPC_SLICE_START_PTR(all);
		len = GRPC_SLICE_LENGTH(all);
	}
	if (len > MAX_REQUEST)
		snap_reply_status(&c->reply, SNAP_INVALID_ARGUMENT,
				  "request of %zu bytes is too big", len);
	else
		c->g->handler(c->g->ctx, method ? method : "", req, len, &c->reply);
answer:
	rc = send_next(c);
	grpc_slice_unref(all);
	gpr_free(method);
	return rc;
}

static void *loop(void *arg)
{
	struct snap_grpc *g = arg;

	for (;;) {
		grpc_event ev =
			grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		struct call *c;

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (ev.tag == &shutdown_tag) {
			g->shutting_down = 1;
			grpc_completion_queue_shutdown(g->cq);
			continue;
		}
		c = ev.tag;
		if (c->state == CALL_NEW && !g->shutting_down && ev.success)
			request_call(g); /* re-arm: one outstanding request at all times */
		if (!ev.success || c->state == CALL_DONE) {
			call_free(c);
			continue;
		}
		switch (c->state) {
		case CALL_NEW:
			if (on_new(c) < 0)
				call_free(c);
			break;
		case CALL_RECEIVED:
			if (on_received(c) < 0)
				call_free(c);
			break;
		case CALL_SENDING:
			if (send_next(c) < 0)
				call_free(c);
			break;
		case CALL_DONE:
			break;
		}
	}
	return NULL;
}

/* Refuses a path where something else lives or a server still answers; removes a stale socket. */
static int clear_path(const char *path)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd, live;

	if (strlen(path) >= sizeof(sa.sun_path))
		return strata_err(ENAMETOOLONG, "snapshotter socket path %s is too long (max %zu)",
				  path, sizeof(sa.sun_path) - 1);
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 :
					 strata_err(errno, "snapshotter socket %s: %s", path,
						    strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return strata_err(EEXIST, "snapshotter socket %s exists and is not a socket", path);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return strata_err(errno, "socket: %s", strerror(errno));
	live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	if (live)
		return strata_err(EADDRINUSE, "snapshotter socket %s is served by another process",
				  path);
	if (unlink(path) < 0)
		return strata_err(errno, "cannot remove stale socket %s: %s", path,
				  strerror(errno));
	return 0;
}

int snap_grpc_start(const char *path, snap_handler_fn handler, void *ctx, struct snap_grpc **out)
{
	struct snap_grpc *g;
	grpc_server_credentials *creds;
	sigset_t all, old;
	char *addr = NULL;
	int rc;

	*out = NULL;
	rc = clear_path(path);
	if (rc < 0)
		return rc;
	g = calloc(1, sizeof(*g));
	if (!g || !(g->path = strdup(path)) || asprintf(&addr, "unix:%s", path) < 0) {
		if (g)
			free(g->path);
		free(g);
		return -ENOMEM;
	}
	g->handler = handler;
	g->ctx = ctx;
	/* gRPC starts threads of its own (executors, timers): with every signal blocked, as the
	 * daemon's other threads, so SIGTERM and friends reach the FUSE loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	grpc_init();
	g->cq = grpc_completion_queue_create_for_next(NULL);
	g->server = grpc_server_create(NULL, NULL);
	grpc_server_register_completion_queue(g->server, g->cq, NULL);
	creds = grpc_insecure_server_credentials_create();
	rc = grpc_server_add_http2_port(g->server, addr, creds);
	grpc_server_credentials_release(creds);
	free(addr);
	if (rc == 0) {
		rc = strata_err(EADDRNOTAVAIL, "cannot listen on snapshotter socket %s", path);
		goto fail;
	}
	grpc_server_start(g->server);
	if (chmod(path, 0600) < 0)
		strata_log(LOG_WARNING, "snapshotter: chmod %s: %s", path, strerror(errno));
	if (request_call(g) < 0) {
		rc = strata_err(EIO, "snapshotter: cannot accept calls on %s", path);
		goto fail_started;
	}
	rc = util_thread_start(&g->thread, loop, g);
	if (rc != 0) {
		rc = strata_err(rc, "cannot start the snapshotter thread");
		goto fail_started;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	*out = g;
	return 0;
fail_started:
	grpc_server_shutdown_and_notify(g->server, g->cq, &shutdown_tag);
	grpc_server_cancel_all_calls(g->server);
	loop(g); /* drains the queue here, shutting it down */
	goto destroy;
fail:
	grpc_completion_queue_shutdown(g->cq);
	while (grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
destroy:
	grpc_server_destroy(g->server);
	grpc_completion_queue_destroy(g->cq);
	grpc_shutdown();
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	unlink(path);
	free(g->path);
	free(g);
	return rc;
}

void snap_grpc_stop(struct snap_grpc *g)
{
	if (!g)
		return;
	grpc_server_shutdown_and_notify(g->server, g->cq, &shutdown_tag);
	grpc_server_cancel_all_calls(g->server);
	pthread_join(g->thread, NULL);
	grpc_server_destroy(g->server);
	grpc_completion_queue_destroy(g->cq);
	grpc_shutdown();
	unlink(g->path);
	free(g->path);
	free(g);
}
