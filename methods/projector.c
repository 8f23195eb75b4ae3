/* projector.c: forward and backward of TaCA's two-layer GELU projector (see projector.h). */
#include "methods/projector.h"

void projector_forward(nn_backend *be, const projector_weights *w, float *out, float *pre, float *hid,
                       const float *inp, int B, int Din, int H, int Dout) {
  be->linear_forward(be, pre, H, inp, Din, w->fc1_w, NULL, B, Din, H, 0);
  be->bias_act_forward_pre(be, hid, pre, w->fc1_b, (size_t)B, H, NN_ACT_GELU);
  be->linear_forward(be, out, Dout, hid, H, w->fc2_w, w->fc2_b, B, H, Dout, 0);
}

void projector_backward(nn_backend *be, const projector_weights *w, const projector_weights *g,
                        float *dinp, float *dhid, const float *dout, const float *inp,
                        const float *pre, const float *hid, int B, int Din, int H, int Dout) {
  be->linear_backward(be, dhid, H, g->fc2_w, g->fc2_b, dout, Dout, hid, H, w->fc2_w, B, H, Dout, 0);
  be->act_backward(be, dhid, dhid, pre, (size_t)B * H, NN_ACT_GELU);
  be->linear_backward(be, dinp, Din, g->fc1_w, g->fc1_b, dhid, H, inp, Din, w->fc1_w, B, Din, H, 0);
}
