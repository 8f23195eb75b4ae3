/* synth.h: a procedurally drawn captioned image data set (the embedded default of the demo and the
 * tests): one coloured shape per image at a position and size, on a noisy background, with a
 * caption saying what and where it is, and a label (shape x colour); and its motion variant, short
 * sequences of one shape moving, labelled by direction. Deterministic in (seed, index). */
#ifndef TACA_SYNTH_SYNTH_H
#define TACA_SYNTH_SYNTH_H

#include <stdint.h>

#include "image/image.h"

#define SYNTH_SHAPES 4
#define SYNTH_COLORS 6
#define SYNTH_CLASSES (SYNTH_SHAPES * SYNTH_COLORS)
#define SYNTH_DIRECTIONS 4 /* the motion set's labels: left to right, right to left, down, up */

typedef struct synth_sample {
  rgb_image img;      /* size x size RGB, owned */
  char caption[160];
  int32_t label;      /* shape * SYNTH_COLORS + colour */
  int shape, color, position, large;
} synth_sample;

/* Renders sample `index` of the data set `seed` at size x size pixels. */
int synth_render(uint64_t seed, uint64_t index, int size, synth_sample *out);
/* The motion set (the video case in miniature): sequences of `frames` frames, the same shape moving
 * in a straight line across the picture. Sample `index` is frame index % frames of sequence
 * index / frames; label is the direction (0 left to right, 1 right to left, 2 top to bottom, 3 bottom
 * to top); the caption names the frame's nearest still position, as synth_render's do. */
int synth_render_motion(uint64_t seed, uint64_t index, int frames, int size, synth_sample *out);
const char *synth_direction_name(int label); /* "left to right" */
void synth_sample_free(synth_sample *s);

const char *synth_class_name(int label, char *buf, int n); /* "red circle" */

#endif
