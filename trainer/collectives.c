/* collectives.c: MPI implementations of the trainer's collectives (chunked to int counts). */
#include "trainer/collectives.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <mpi.h>
#include <stdint.h>
#include <string.h>

static int mpi_fail(taca_error *err, const char *what, int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return taca_fail(err, "%s failed: %.*s", what, len, msg);
}

int comm_init(taca_comm *c, int *argc, char ***argv, taca_error *err) {
  int provided, rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Init_thread", rc);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c->size);
  return 0;
}

void comm_finalize(void) {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Finalize();
}

void comm_abort(int status) { MPI_Abort(MPI_COMM_WORLD, status); }

#define CHUNK ((size_t)1 << 28) /* floats per MPI call, well under INT_MAX */

int comm_allreduce_sum(const taca_comm *c, float *buf, size_t n, taca_error *err) {
  if (c->size == 1) return 0;
  for (size_t off = 0; off < n; off += CHUNK) {
    int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Allreduce", rc);
  }
  return 0;
}

int comm_allgather(const taca_comm *c, const float *local, size_t n, float *global, taca_error *err) {
  if (c->size == 1) {
    if (global != local) memcpy(global, local, sizeof(float) * n);
    return 0;
  }
  if (n > INT_MAX) return taca_fail(err, "all-gather of %zu floats per rank is too large", n);
  int rc = MPI_Allgather(local, (int)n, MPI_FLOAT, global, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
  return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Allgather", rc);
}

int comm_bcast(const taca_comm *c, void *buf, size_t bytes, int root, taca_error *err) {
  if (c->size == 1) return 0;
  for (size_t off = 0; off < bytes; off += CHUNK) {
    int cnt = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
    int rc = MPI_Bcast((uint8_t *)buf + off, cnt, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Bcast", rc);
  }
  return 0;
}

int comm_any(const taca_comm *c, int flag) {
  if (c->size == 1) return flag != 0;
  int in = flag != 0, out = in;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
  return out;
}

double comm_sum(const taca_comm *c, double v) {
  if (c->size == 1) return v;
  double out = v;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

static int failed_elsewhere;

int comm_fail_elsewhere(taca_error *err, const char *fmt, ...) {
  failed_elsewhere = 1;
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return -1;
}

int comm_failed_elsewhere(void) { return failed_elsewhere; }
