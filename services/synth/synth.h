/* synth.h: a procedurally drawn captioned image data set (the embedded default of the demo and the
 * tests): one coloured shape per image at a position and size, on a noisy background, with a
 * caption saying what and where it is, and a label (shape x colour). Deterministic in (seed, index). */
#ifndef TACA_SYNTH_SYNTH_H
#define TACA_SYNTH_SYNTH_H

#include <stdint.h>

#include "image/image.h"

#define SYNTH_SHAPES 4
#define SYNTH_COLORS 6
#define SYNTH_CLASSES (SYNTH_SHAPES * SYNTH_COLORS)

typedef struct synth_sample {
  rgb_image img;      /* size x size RGB, owned */
  char caption[160];
  int32_t label;      /* shape * SYNTH_COLORS + colour */
  int shape, color, position, large;
} synth_sample;

/* Renders sample `index` of the data set `seed` at size x size pixels. */
int synth_render(uint64_t seed, uint64_t index, int size, synth_sample *out);
void synth_sample_free(synth_sample *s);

const char *synth_class_name(int label, char *buf, int n); /* "red circle" */

#endif
