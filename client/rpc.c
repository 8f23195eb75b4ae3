/* rpc.c: gRPC C core plumbing of taca_client: one unary call, or one server stream, on a channel,
 * each on its own pluck completion queue (so that threads never share one). */
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"

const char *const CLIENT_METHOD_PATHS[CM_COUNT] = {
    "/taca.v1.FeatureCache/Info",   "/taca.v1.FeatureCache/GetBatch", "/taca.v1.FeatureCache/StreamEpoch",
    "/taca.v1.FeatureCache/Lookup", "/taca.v1.FeatureCache/Search",   "/grpc.health.v1.Health/Check",
    "/taca.v1.FeatureCache/Embed",  "/taca.v1.FeatureCache/SetAlias",
};
const char *const CLIENT_METHOD_NAMES[CM_COUNT] = {"Info", "GetBatch", "StreamEpoch", "Lookup", "Search",
                                                   "Health.Check", "Embed", "SetAlias"};

static gpr_timespec deadline_in(int ms) {
  if (ms <= 0) return gpr_inf_future(GPR_CLOCK_REALTIME);
  return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static size_t auth_md(const taca_client *c, grpc_metadata *md) {
  if (!c->auth[0]) return 0;
  memset(md, 0, sizeof *md);
  md->key = grpc_slice_from_static_string("authorization");
  md->value = grpc_slice_from_static_string(c->auth);
  return 1;
}

static void set_status(rpc_status *st, grpc_status_code code, grpc_slice details) {
  st->code = code;
  size_t n = GRPC_SLICE_LENGTH(details);
  if (n >= sizeof st->details) n = sizeof st->details - 1;
  memcpy(st->details, GRPC_SLICE_START_PTR(details), n);
  st->details[n] = '\0';
}

static grpc_slice read_bb(grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) return grpc_empty_slice();
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  return s;
}

static void cq_destroy(grpc_completion_queue *cq) {
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  grpc_completion_queue_destroy(cq);
}

int rpc_unary(const taca_client *c, conn *cn, client_method m, const uint8_t *req, size_t len, grpc_slice *resp,
              rpc_status *st) {
  *resp = grpc_empty_slice();
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call *call = grpc_channel_create_registered_call(cn->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, cn->handles[m],
                                                        deadline_in(c->o.timeout_ms), NULL);
  grpc_slice rs = grpc_slice_from_static_buffer(req, len);
  grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&rs, 1);
  grpc_byte_buffer *recv = NULL;
  grpc_metadata md;
  grpc_metadata_array imd, tmd;
  grpc_metadata_array_init(&imd);
  grpc_metadata_array_init(&tmd);
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = auth_md(c, &md);
  ops[0].data.send_initial_metadata.metadata = &md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &imd;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &tmd;
  ops[5].data.recv_status_on_client.status = &code;
  ops[5].data.recv_status_on_client.status_details = &details;
  int rc = 0;
  grpc_call_error e = grpc_call_start_batch(call, ops, 6, (void *)1, NULL);
  if (e != GRPC_CALL_OK) {
    st->code = GRPC_STATUS_INTERNAL;
    snprintf(st->details, sizeof st->details, "grpc_call_start_batch failed (grpc_call_error %d)", (int)e);
    rc = -1;
  } else {
    grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    set_status(st, code, details);
    if (code == GRPC_STATUS_OK) {
      if (recv) *resp = read_bb(recv);
    }
  }
  if (recv) grpc_byte_buffer_destroy(recv);
  grpc_byte_buffer_destroy(send);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&imd);
  grpc_metadata_array_destroy(&tmd);
  grpc_call_unref(call);
  cq_destroy(cq);
  return rc;
}

struct rpc_stream {
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_byte_buffer *send, *recv;
  grpc_metadata md;
  grpc_metadata_array imd, tmd;
  grpc_status_code code;
  grpc_slice details;
  int head_pending, recv_pending, status_done;
};

#define TAG_HEAD ((void *)1)
#define TAG_RECV ((void *)2)
#define TAG_STATUS ((void *)3)

static int arm_recv(rpc_stream *s) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &s->recv;
  if (grpc_call_start_batch(s->call, &op, 1, TAG_RECV, NULL) != GRPC_CALL_OK) return -1;
  s->recv_pending = 1;
  return 0;
}

static void finish_status(rpc_stream *s, rpc_status *st) {
  if (!s->status_done) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->tmd;
    op.data.recv_status_on_client.status = &s->code;
    op.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &op, 1, TAG_STATUS, NULL) == GRPC_CALL_OK)
      grpc_completion_queue_pluck(s->cq, TAG_STATUS, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    else
      s->code = GRPC_STATUS_INTERNAL;
    s->status_done = 1;
  }
  if (st) set_status(st, s->code, s->details);
}

int rpc_stream_open(const taca_client *c, conn *cn, client_method m, const uint8_t *req, size_t len, int timeout_ms,
                    rpc_stream **out, rpc_status *st) {
  *out = NULL;
  rpc_stream *s = calloc(1, sizeof *s);
  if (!s) {
    st->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    snprintf(st->details, sizeof st->details, "out of memory");
    return -1;
  }
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  s->call = grpc_channel_create_registered_call(cn->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, cn->handles[m],
                                                deadline_in(timeout_ms), NULL);
  s->details = grpc_empty_slice();
  grpc_metadata_array_init(&s->imd);
  grpc_metadata_array_init(&s->tmd);
  grpc_slice rs = grpc_slice_from_copied_buffer((const char *)req, len);
  s->send = grpc_raw_byte_buffer_create(&rs, 1);
  grpc_slice_unref(rs);
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = auth_md(c, &s->md);
  ops[0].data.send_initial_metadata.metadata = &s->md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = s->send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
  int ok = grpc_call_start_batch(s->call, ops, 4, TAG_HEAD, NULL) == GRPC_CALL_OK;
  if (ok) s->head_pending = 1;
  if (!ok || arm_recv(s)) {
    st->code = GRPC_STATUS_INTERNAL;
    snprintf(st->details, sizeof st->details, "grpc_call_start_batch failed");
    rpc_stream_close(s);
    return -1;
  }
  *out = s;
  return 0;
}

int rpc_stream_recv(rpc_stream *s, grpc_slice *msg, rpc_status *st) {
  *msg = grpc_empty_slice();
  if (!s->recv_pending) {
    finish_status(s, st);
    return 0;
  }
  grpc_event ev = grpc_completion_queue_pluck(s->cq, TAG_RECV, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  s->recv_pending = 0;
  if (ev.success && s->recv) {
    *msg = read_bb(s->recv);
    grpc_byte_buffer_destroy(s->recv);
    s->recv = NULL;
    arm_recv(s); /* keep one receive in flight: the next batch travels while this one is used */
    return 1;
  }
  if (s->recv) grpc_byte_buffer_destroy(s->recv);
  s->recv = NULL;
  finish_status(s, st);
  return 0;
}

void rpc_stream_close(rpc_stream *s) {
  if (!s) return;
  if (!s->status_done) grpc_call_cancel(s->call, NULL);
  if (s->recv_pending) grpc_completion_queue_pluck(s->cq, TAG_RECV, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (s->recv) grpc_byte_buffer_destroy(s->recv);
  if (s->head_pending) grpc_completion_queue_pluck(s->cq, TAG_HEAD, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  finish_status(s, NULL);
  if (s->send) grpc_byte_buffer_destroy(s->send);
  grpc_slice_unref(s->details);
  grpc_metadata_array_destroy(&s->imd);
  grpc_metadata_array_destroy(&s->tmd);
  grpc_call_unref(s->call);
  cq_destroy(s->cq);
  free(s);
}
