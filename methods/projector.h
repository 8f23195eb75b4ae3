/* projector.h: TaCA's dimension projector, Linear(Din -> H) -> GELU (exact) -> Linear(H -> Dout),
 * forward with saved activations and backward, on an nn_backend (llm.c-style pair of functions).
 *
 * Weights use nn.Linear's layout: fc1_w [H, Din], fc1_b [H], fc2_w [Dout, H], fc2_b [Dout]. The same
 * struct points at parameters or at their gradients (pointers into the trainer's flat buffers). */
#ifndef TACA_METHODS_PROJECTOR_H
#define TACA_METHODS_PROJECTOR_H

#include "nn/backend.h"

typedef struct projector_weights {
  float *fc1_w, *fc1_b; /* [H, Din], [H] */
  float *fc2_w, *fc2_b; /* [Dout, H], [Dout] */
} projector_weights;

/* out [B, Dout] = fc2(GELU(fc1(inp [B, Din]))). Saves pre [B, H] (fc1 output incl. bias) and
 * hid [B, H] (= GELU(pre)) for projector_backward. All pointers are backend memory. */
void projector_forward(nn_backend *be, const projector_weights *w, float *out, float *pre, float *hid,
                       const float *inp, int B, int Din, int H, int Dout);

/* From dout [B, Dout] and the forward's inp/pre/hid: accumulates the weight gradients into g (every
 * field required) and writes dinp [B, Din] when non-NULL. dhid [B, H] is scratch. */
void projector_backward(nn_backend *be, const projector_weights *w, const projector_weights *g,
                        float *dinp, float *dhid, const float *dout, const float *inp,
                        const float *pre, const float *hid, int B, int Din, int H, int Dout);

#endif
