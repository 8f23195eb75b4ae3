/* backend.c: backend-independent entry points. */
#include "nn/backend.h"

void nn_backend_destroy(nn_backend *be) {
  if (be) be->destroy(be);
}
