/* synth.c: rendering of the synthetic captioned-shapes data set (see synth.h). */
#include "services/synth/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *SHAPES[SYNTH_SHAPES] = {"circle", "square", "triangle", "cross"};
static const char *COLORS[SYNTH_COLORS] = {"red", "green", "blue", "yellow", "purple", "white"};
static const uint8_t RGB[SYNTH_COLORS][3] = {{220, 40, 40},  {40, 190, 60},  {50, 80, 230},
                                             {235, 215, 40}, {160, 60, 200}, {240, 240, 240}};
#define POSITIONS 5
static const char *POSITION_NAMES[POSITIONS] = {"top left", "top right", "bottom left", "bottom right", "center"};
static const float POS_XY[POSITIONS][2] = {{0.28f, 0.28f}, {0.72f, 0.28f}, {0.28f, 0.72f}, {0.72f, 0.72f}, {0.5f, 0.5f}};

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static float uniform(uint64_t *s) { return (splitmix64(s) >> 40) * (1.0f / 16777216.0f); }

/* Inside test of the shape centred at (cx, cy) with half-size r, in unit coordinates. */
static int inside(int shape, float x, float y, float cx, float cy, float r) {
  float dx = x - cx, dy = y - cy;
  switch (shape) {
    case 0: return dx * dx + dy * dy <= r * r;
    case 1: return fabsf(dx) <= r * 0.85f && fabsf(dy) <= r * 0.85f;
    case 2: { /* upward triangle */
      float t = (dy + r) / (2 * r); /* 0 at top, 1 at bottom */
      return t >= 0 && t <= 1 && fabsf(dx) <= t * r;
    }
    default: return (fabsf(dx) <= r * 0.3f && fabsf(dy) <= r) || (fabsf(dy) <= r * 0.3f && fabsf(dx) <= r);
  }
}

/* Draws one shape (centre cx, cy, half-size r) with the 2x2-supersampled edges, the dim tinted
 * background with per-pixel noise from `s` and the grey distractor blob at (dx, dy). */
static int draw(uint64_t *s, int size, int shape, int color, float cx, float cy, float r, const uint8_t bg[3],
                float dx, float dy, rgb_image *img) {
  img->width = img->height = size;
  img->rgb = malloc((size_t)size * size * 3);
  if (!img->rgb) return -1;
  const uint8_t *fg = RGB[color];
  for (int y = 0; y < size; y++) {
    for (int x = 0; x < size; x++) {
      int hits = 0, grey = 0;
      for (int sy = 0; sy < 2; sy++)
        for (int sx = 0; sx < 2; sx++) {
          float u = (x + 0.25f + 0.5f * sx) / size, v = (y + 0.25f + 0.5f * sy) / size;
          hits += inside(shape, u, v, cx, cy, r);
          grey += inside(0, u, v, dx, dy, 0.05f);
        }
      uint8_t *p = img->rgb + ((size_t)y * size + x) * 3;
      for (int c = 0; c < 3; c++) {
        float noise = (uniform(s) - 0.5f) * 24;
        float b = bg[c] + noise + grey * 20.0f;
        float v = (b * (4 - hits) + fg[c] * hits) / 4;
        p[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  }
  return 0;
}

static void caption(uint64_t *s, const synth_sample *o, char *out, size_t n) {
  static const char *TEMPLATES[] = {
      "a %s %s %s in the %s", "a photo of a %s %s %s, %s", "%s %s %s at the %s of the picture",
      "there is a %s %s %s in the %s", "an image with a %s %s %s (%s)",
  };
  const char *sz = o->large ? "large" : "small";
  int t = (int)(splitmix64(s) % (sizeof TEMPLATES / sizeof TEMPLATES[0]));
  snprintf(out, n, TEMPLATES[t], sz, COLORS[o->color], SHAPES[o->shape], POSITION_NAMES[o->position]);
}

int synth_render(uint64_t seed, uint64_t index, int size, synth_sample *out) {
  memset(out, 0, sizeof *out);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull ^ (index + 1) * 0xD1B54A32D192ED03ull;
  splitmix64(&s);
  out->shape = (int)(splitmix64(&s) % SYNTH_SHAPES);
  out->color = (int)(splitmix64(&s) % SYNTH_COLORS);
  out->position = (int)(splitmix64(&s) % POSITIONS);
  out->large = (int)(splitmix64(&s) % 2);
  out->label = out->shape * SYNTH_COLORS + out->color;
  float r = out->large ? 0.2f : 0.12f;
  float cx = POS_XY[out->position][0] + (uniform(&s) - 0.5f) * 0.08f;
  float cy = POS_XY[out->position][1] + (uniform(&s) - 0.5f) * 0.08f;
  /* Background: a dim random tint with per-pixel noise; a small grey distractor blob. */
  uint8_t bg[3];
  for (int c = 0; c < 3; c++) bg[c] = (uint8_t)(20 + uniform(&s) * 60);
  float dx = uniform(&s), dy = uniform(&s);
  if (draw(&s, size, out->shape, out->color, cx, cy, r, bg, dx, dy, &out->img)) return -1;
  caption(&s, out, out->caption, sizeof out->caption);
  return 0;
}

static const char *DIRECTIONS[SYNTH_DIRECTIONS] = {"left to right", "right to left", "top to bottom", "bottom to top"};

int synth_render_motion(uint64_t seed, uint64_t index, int frames, int size, synth_sample *out) {
  memset(out, 0, sizeof *out);
  if (frames < 2) return -1;
  const uint64_t seq = index / (uint64_t)frames;
  const int t = (int)(index % (uint64_t)frames);
  /* Everything but the frame's position and pixel noise is a property of the sequence. */
  uint64_t s = (seed ^ 0x6D6F74696F6Eull) * 0x9E3779B97F4A7C15ull ^ (seq + 1) * 0xD1B54A32D192ED03ull;
  splitmix64(&s);
  out->shape = (int)(splitmix64(&s) % SYNTH_SHAPES);
  out->color = (int)(splitmix64(&s) % SYNTH_COLORS);
  out->large = (int)(splitmix64(&s) % 2);
  const int dir = (int)(splitmix64(&s) % SYNTH_DIRECTIONS);
  out->label = dir;
  /* A short path (a quarter of the picture) anywhere: direction is a small change between frames. */
  const float lane = 0.25f + 0.5f * uniform(&s), mid = 0.35f + 0.3f * uniform(&s);
  const float a = mid - 0.12f, b = mid + 0.12f;
  uint8_t bg[3];
  for (int c = 0; c < 3; c++) bg[c] = (uint8_t)(20 + uniform(&s) * 60);
  float dx = uniform(&s), dy = uniform(&s);
  const float along = (dir == 0 || dir == 2) ? a + (b - a) * t / (frames - 1) : b - (b - a) * t / (frames - 1);
  const float cx = dir < 2 ? along : lane, cy = dir < 2 ? lane : along;
  /* The caption names the frame's nearest of the five still positions. */
  float best = 1e9f;
  for (int p = 0; p < POSITIONS; p++) {
    float ex = cx - POS_XY[p][0], ey = cy - POS_XY[p][1];
    if (ex * ex + ey * ey < best) best = ex * ex + ey * ey, out->position = p;
  }
  uint64_t fs = s ^ (uint64_t)(t + 1) * 0xA24BAED4963EE407ull; /* per-frame noise */
  splitmix64(&fs);
  if (draw(&fs, size, out->shape, out->color, cx, cy, out->large ? 0.2f : 0.12f, bg, dx, dy, &out->img)) return -1;
  caption(&fs, out, out->caption, sizeof out->caption);
  return 0;
}

const char *synth_direction_name(int label) {
  return label >= 0 && label < SYNTH_DIRECTIONS ? DIRECTIONS[label] : "?";
}

void synth_sample_free(synth_sample *s) {
  rgb_image_free(&s->img);
}

const char *synth_class_name(int label, char *buf, int n) {
  if (label < 0 || label >= SYNTH_CLASSES) snprintf(buf, n, "?");
  else snprintf(buf, n, "%s %s", COLORS[label % SYNTH_COLORS], SHAPES[label / SYNTH_COLORS]);
  return buf;
}
