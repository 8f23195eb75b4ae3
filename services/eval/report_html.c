/* report_html.c: an eval_result as one self-contained HTML page: inline CSS and inline SVG charts
 * (the training loss curves, the retrieval recalls, the old-head accuracies), then the tables of
 * every figure. No scripts, fonts, images or links to fetch; the markup is XHTML-clean (every
 * element closed, attributes quoted, only XML's own entities) so that XML parsers read it too. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/atomicfile.h"
#include "services/eval/report.h"

/* One colour per meaning in every chart: PALETTE[0] the old model (before the upgrade), [1] the
 * unadapted new model, [2] the adapted new model (TaCA), [3] the new head on new features, GREY
 * chance. The loss curves are no model, so they take colours of their own (LOSS_PALETTE: the total
 * in near-black, the terms in colours the model series never use). */
static const char *PALETTE[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#7f7f7f"};
static const char *LOSS_PALETTE[] = {"#222222", "#a0522d", "#d4419a", "#17becf", "#bcbd22", "#6b6b6b"};
#define GREY "#b0b0b0"

static void esc(FILE *f, const char *s) {
  for (; *s; s++) {
    switch (*s) {
      case '&': fputs("&amp;", f); break;
      case '<': fputs("&lt;", f); break;
      case '>': fputs("&gt;", f); break;
      case '"': fputs("&quot;", f); break;
      case '\'': fputs("&#39;", f); break;
      default:
        if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t') fputc('?', f); /* not allowed in XML */
        else fputc(*s, f);
    }
  }
}

/* A "nice" tick step (1, 2 or 5 x 10^k) for about n ticks over range. */
static double nice_step(double range, int n) {
  double raw = range / n, p = pow(10, floor(log10(raw))), m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

/* Greek labels in SVG text: zeta_X(phi_Y), with optional hat on phi. */
static void zeta_svg(FILE *f, const char *head, const char *feat, int hat) {
  fprintf(f, "&#950;<tspan baseline-shift=\"sub\" font-size=\"75%%\">%s</tspan>(&#966;%s"
             "<tspan baseline-shift=\"sub\" font-size=\"75%%\">%s</tspan>)",
          head, hat ? "&#770;" : "", feat);
}

static void zeta_html(FILE *f, const char *head, const char *feat, int hat) {
  fprintf(f, "&#950;<sub>%s</sub>(&#966;%s<sub>%s</sub>)", head, hat ? "&#770;" : "", feat);
}

/* ---------- the loss curves ---------- */

/* The loss axis: linear from 0, or logarithmic when every value is positive and they span a factor
 * of 5 or more (the first steps of a run are often 10x the rest, which a linear axis from 0 squeezes
 * into its bottom strip). */
typedef struct loss_axis {
  int log;
  double y0, y1; /* in axis units: the value, or its log10 */
} loss_axis;

static double axis_of(const loss_axis *a, double v) { return a->log ? log10(v) : v; }

static void svg_loss(FILE *f, const eval_loss_log *log) {
  const int W = 760, H = 340, ml = 64, mr = 160, mt = 16, mb = 48;
  const int pw = W - ml - mr, ph = H - mt - mb;
  double x0 = log->step[0], x1 = log->step[0], lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < log->n; i++) {
    if (log->step[i] < x0) x0 = log->step[i];
    if (log->step[i] > x1) x1 = log->step[i];
    for (int k = 0; k < log->n_series; k++) {
      double v = log->value[(size_t)i * log->n_series + k];
      if (!isfinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  loss_axis ax = {0, 0, 1};
  double ticks[64];
  int nt = 0;
  if (isfinite(lo) && lo > 0 && hi / lo >= 5) {
    ax.log = 1;
    ax.y0 = floor(log10(lo) * 10) / 10; /* a little room beyond the data, in tenths of a decade */
    ax.y1 = ceil(log10(hi) * 10) / 10;
    for (int e = (int)floor(ax.y0); e <= (int)ceil(ax.y1) && nt < 60; e++)
      for (int m = 0; m < 3; m++) {
        double t = (m == 0 ? 1 : m == 1 ? 2 : 5) * pow(10, e);
        if (log10(t) >= ax.y0 - 1e-9 && log10(t) <= ax.y1 + 1e-9) ticks[nt++] = t;
      }
  } else {
    double y0 = isfinite(lo) ? lo : 0, y1 = isfinite(hi) ? hi : 1;
    if (y0 > 0) y0 = 0; /* losses are non-negative: start the axis at 0 */
    if (y1 - y0 < 1e-12) y1 = y0 + (fabs(y0) > 0 ? fabs(y0) : 1);
    double ys = nice_step(y1 - y0, 5);
    ax.y0 = floor(y0 / ys) * ys;
    ax.y1 = ceil(y1 / ys) * ys;
    for (double y = ax.y0; y <= ax.y1 + ys * 1e-6 && nt < 60; y += ys) ticks[nt++] = y;
  }
  if (x1 <= x0) x1 = x0 + 1;
  double xs = nice_step(x1 - x0, 8);
  if (xs < 1) xs = 1;
#define PX(x) (ml + ((x) - x0) / (x1 - x0) * pw)
#define PY(v) (mt + ph - (axis_of(&ax, v) - ax.y0) / (ax.y1 - ax.y0) * ph)
  fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"training loss\">\n",
          W, H, W, H);
  for (int t = 0; t < nt; t++) {
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", ml, ml + pw, PY(ticks[t]),
            PY(ticks[t]));
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"12\">%.4g</text>\n", ml - 6, PY(ticks[t]) + 4,
            ticks[t]);
  }
  for (double x = ceil(x0 / xs) * xs; x <= x1 + xs * 1e-6; x += xs)
    fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#999\"/><text x=\"%.1f\" y=\"%d\" "
               "text-anchor=\"middle\" font-size=\"12\">%.0f</text>\n",
            PX(x), PX(x), mt + ph, mt + ph + 4, PX(x), mt + ph + 18, x);
  fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", ml, mt, pw, ph);
  fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">training step</text>\n", ml + pw / 2, H - 8);
  fprintf(f, "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 16 %d)\">%s</text>\n",
          mt + ph / 2, mt + ph / 2, ax.log ? "loss (log scale)" : "loss");
  /* at most ~2000 points per curve */
  int stride = log->n > 2000 ? (log->n + 1999) / 2000 : 1;
  for (int k = 0; k < log->n_series; k++) {
    const char *col = LOSS_PALETTE[k % 6];
    int open = 0;
    for (int i = 0; i < log->n; i += stride) {
      int ii = (i + stride >= log->n) ? log->n - 1 : i; /* always end at the last step */
      double v = log->value[(size_t)ii * log->n_series + k];
      if (!isfinite(v) || (ax.log && v <= 0)) {
        if (open) fputs("\"/>\n", f);
        open = 0;
        continue;
      }
      if (!open)
        fprintf(f, "<polyline class=\"series-%d\" fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" points=\"", k, col,
                k == 0 ? "2.2" : "1.6");
      fprintf(f, "%s%.1f,%.1f", open ? " " : "", PX((double)log->step[ii]), PY(v));
      open = 1;
      if (ii == log->n - 1) break;
    }
    if (open) fputs("\"/>\n", f);
    int ly = mt + 12 + 22 * k;
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>", ml + pw + 12,
            ml + pw + 32, ly, ly, col);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"13\">", ml + pw + 38, ly + 5);
    esc(f, log->names[k]);
    fputs("</text>\n", f);
  }
  fputs("</svg>\n", f);
#undef PX
#undef PY
}

/* ---------- bar charts ---------- */

typedef struct bar_series {
  const char *name; /* legend text (HTML-escaped here) */
  const char *color;
  double v[8];      /* fractions in [0, 1], shown as % */
} bar_series;

/* Grouped vertical bars, 0..100 %. group_label(f, g) writes the SVG text content of group g. */
static void svg_bars(FILE *f, const char *aria, int ng, void (*group_label)(FILE *, int, const void *),
                     const void *ctx, const bar_series *s, int ns) {
  const int W = 760, H = 300, ml = 50, mr = 10, mt = 34, mb = 46;
  const int pw = W - ml - mr, ph = H - mt - mb;
  fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n", W,
          H, W, H, aria);
  for (int p = 0; p <= 100; p += 25) {
    double y = mt + ph - p / 100.0 * ph;
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", ml, ml + pw, y, y);
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"12\">%d%%</text>\n", ml - 6, y + 4, p);
  }
  const double gw = (double)pw / ng, bw = gw * 0.8 / (ns > 0 ? ns : 1);
  for (int g = 0; g < ng; g++) {
    for (int k = 0; k < ns; k++) {
      double v = s[k].v[g], h = (isfinite(v) ? v : 0) * ph;
      double x = ml + g * gw + gw * 0.1 + k * bw;
      fprintf(f, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>", x,
              mt + ph - h, bw - 2, h, s[k].color);
      esc(f, s[k].name);
      fprintf(f, ": %.1f%%</title></rect>", 100 * v);
      fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"%d\">%.*f</text>\n", x + (bw - 2) / 2,
              mt + ph - h - 4, bw < 30 ? 10 : 12, bw < 34 ? 0 : 1, 100 * v); /* narrow bars: whole percents, smaller
                                                                               type so that "100" fits its bar */
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\">", ml + g * gw + gw / 2, mt + ph + 20);
    group_label(f, g, ctx);
    fputs("</text>\n", f);
  }
  fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#666\"/>\n", ml, ml + pw, mt + ph, mt + ph);
  /* legend across the top */
  double lx = ml;
  for (int k = 0; k < ns; k++) {
    fprintf(f, "<rect x=\"%.1f\" y=\"8\" width=\"13\" height=\"13\" fill=\"%s\"/><text x=\"%.1f\" y=\"19\" font-size=\"13\">",
            lx, s[k].color, lx + 17);
    esc(f, s[k].name);
    fputs("</text>\n", f);
    lx += 30 + 7.4 * strlen(s[k].name);
  }
  fputs("</svg>\n", f);
}

static void retrieval_group(FILE *f, int g, const void *ctx) {
  (void)ctx;
  static const char *dir[2] = {"text&#8594;image", "image&#8594;text"};
  static const int k[3] = {1, 5, 10};
  fprintf(f, "%s R@%d", dir[g / 3], k[g % 3]);
}

static void accuracy_group(FILE *f, int g, const void *ctx) {
  (void)ctx;
  static const char *h[4] = {"old", "old", "old", "new"}, *p[4] = {"old", "new", "new", "new"};
  zeta_svg(f, h[g], p[g], g == 1);
}

static void fill_recall(double *v, const eval_retrieval *x) {
  v[0] = x->t2i.r1, v[1] = x->t2i.r5, v[2] = x->t2i.r10;
  v[3] = x->i2t.r1, v[4] = x->i2t.r5, v[5] = x->i2t.r10;
}

/* ---------- tables ---------- */

static void na_cell(FILE *f, const eval_na *na, int colspan) {
  fprintf(f, "<td colspan=\"%d\" class=\"na\">n/a: ", colspan);
  esc(f, na->reason);
  fputs("</td>", f);
}

static void recall_row(FILE *f, const char *name, const eval_na *a, const eval_na *b, const eval_retrieval *x) {
  fputs("<tr><th>", f);
  fputs(name, f);
  fputs("</th>", f);
  if (!a->applicable) na_cell(f, a, 8);
  else if (b && !b->applicable) na_cell(f, b, 8);
  else
    fprintf(f, "<td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td>",
            100 * x->t2i.r1, 100 * x->t2i.r5, 100 * x->t2i.r10, x->t2i.median_rank, 100 * x->i2t.r1,
            100 * x->i2t.r5, 100 * x->i2t.r10, x->i2t.median_rank);
  fputs("</tr>\n", f);
}

static void acc_row(FILE *f, const char *what, const char *h, const char *p, int hat, const eval_na *a,
                    const eval_na *b, double v, const char *note) {
  fprintf(f, "<tr><th>%s</th><td class=\"sym\">", what);
  zeta_html(f, h, p, hat);
  fputs("</td>", f);
  if (!a->applicable) na_cell(f, a, 2);
  else if (b && !b->applicable) na_cell(f, b, 2);
  else fprintf(f, "<td>%.1f %%</td><td>%s</td>", 100 * v, note);
  fputs("</tr>\n", f);
}


/* ---------- the upgrade in service, and AFT (from the JSON files the demo's later steps wrote) ---------- */

static json_t *load_json(const char *path) { return path ? json_load_file(path, 0, NULL) : NULL; }

/* Horizontal bars, one per (label, value in [0, 1]), in the given colours. */
static void svg_hbars(FILE *f, const char *aria, int n, const char *const *label, const double *v,
                      const char *const *colour) {
  const int W = 640, row = 30, ml = 260, mr = 70, H = 20 + n * row;
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"", W, H);
  esc(f, aria);
  fputs("\">\n", f);
  for (int i = 0; i < n; i++) {
    double w = (W - ml - mr) * (v[i] < 0 ? 0 : v[i] > 1 ? 1 : v[i]);
    int y = 10 + i * row;
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"13\" text-anchor=\"end\">", ml - 8, y + 17);
    esc(f, label[i]);
    fprintf(f, "</text><rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"22\" fill=\"%s\"/>"
               "<text x=\"%.1f\" y=\"%d\" font-size=\"13\">%.1f %%</text>\n",
            ml, y + 2, w, colour[i], ml + w + 6, y + 18, 100 * v[i]);
  }
  fputs("</svg>\n", f);
}

static void service_html(FILE *f, const char *path) {
  json_t *j = load_json(path);
  if (!j) return;
  const char *name = json_string_value(json_object_get(j, "served_name"));
  const char *head = json_string_value(json_object_get(j, "head_trained_on"));
  fputs("<h2>The upgrade in service: the hot swap</h2>\n<p>A downstream module (a linear head trained once on the "
        "old model's features, never changed) classifies the held-out samples through the served name <code>", f);
  esc(f, name ? name : "?");
  fputs("</code>, pass after pass, while <code>taca alias</code> repoints it from the old model to the adapted one on "
        "the running server (no restart).</p>\n<table>\n<tr><th>model answering</th><th>passes</th>"
        "<th>old head accuracy</th></tr>\n", f);
  json_t *bm = json_object_get(j, "by_model");
  const char *lab[8], *col[8];
  double val[8];
  char labs[8][96];
  int n = 0;
  const char *k;
  json_t *v;
  json_object_foreach(bm, k, v) {
    json_t *acc = json_object_get(v, "accuracy");
    fputs("<tr><th>", f);
    esc(f, k);
    fprintf(f, "</th><td>%lld</td>", (long long)json_integer_value(json_object_get(v, "passes")));
    if (json_is_number(acc)) fprintf(f, "<td>%.1f %%</td></tr>\n", 100 * json_number_value(acc));
    else fputs("<td>n/a (no pass answered by it alone)</td></tr>\n", f);
    if (json_is_number(acc) && n < 8) { /* the model before the flip first */
      int is_old = head && !strcmp(k, head), at = n;
      if (is_old) {
        for (int j = n; j > 0; j--) {
          memcpy(labs[j], labs[j - 1], sizeof labs[j]);
          val[j] = val[j - 1];
          col[j] = col[j - 1];
        }
        at = 0;
      }
      snprintf(labs[at], sizeof labs[at], "%s (%s)", k, is_old ? "before the flip" : "after the flip");
      val[at] = json_number_value(acc);
      col[at] = is_old ? PALETTE[0] : PALETTE[2];
      n++;
      for (int j = 0; j < n; j++) lab[j] = labs[j];
    }
  }
  fprintf(f, "</table>\n<p>Failed calls during the run: <strong>%lld</strong>; test samples per pass: %lld.</p>\n",
          (long long)json_integer_value(json_object_get(j, "failed_calls")),
          (long long)json_integer_value(json_object_get(j, "test_samples")));
  if (n) svg_hbars(f, "old head accuracy before and after the flip", n, lab, val, col);
  json_decref(j);
}

static void aft_html(FILE *f, const char *path) {
  json_t *j = load_json(path);
  if (!j) return;
  fputs("<h2>AFT: transfer from several models' cached features into a small model</h2>\n<p>Downstream <code>", f);
  esc(f, json_string_value(json_object_get(j, "downstream")) ? json_string_value(json_object_get(j, "downstream")) : "?");
  fprintf(f, "</code>, %lld steps of batch %lld, %lld classes, %lld test samples.</p>\n",
          (long long)json_integer_value(json_object_get(j, "steps")),
          (long long)json_integer_value(json_object_get(j, "batch_size")),
          (long long)json_integer_value(json_object_get(j, "classes")),
          (long long)json_integer_value(json_object_get(j, "test_samples")));
  fputs("<table>\n<tr><th>method</th><th>test accuracy</th><th>train accuracy</th><th>seconds</th></tr>\n", f);
  json_t *ms = json_object_get(j, "methods");
  const char *lab[8], *col[8];
  double val[8];
  int n = 0;
  size_t i;
  json_t *m;
  json_array_foreach(ms, i, m) {
    const char *name = json_string_value(json_object_get(m, "method"));
    json_t *ta = json_object_get(m, "test_acc");
    fputs("<tr><th>", f);
    esc(f, name ? name : "?");
    fputs("</th>", f);
    if (json_is_number(ta)) fprintf(f, "<td>%.1f %%</td>", 100 * json_number_value(ta));
    else fputs("<td>n/a</td>", f);
    fprintf(f, "<td>%.1f %%</td><td>%.0f</td></tr>\n", 100 * json_number_value(json_object_get(m, "train_acc")),
            json_number_value(json_object_get(m, "seconds")));
    if (json_is_number(ta) && n < 8) {
      lab[n] = name ? name : "?";
      val[n] = json_number_value(ta);
      col[n] = LOSS_PALETTE[1 + n % 4];
      n++;
    }
  }
  fputs("</table>\n", f);
  if (n) svg_hbars(f, "AFT test accuracy per method", n, lab, val, col);
  fputs("<table>\n<tr><th>source features</th><th>dim</th><th>&#961; mean</th><th>&#961; min</th><th>&#961; max</th></tr>\n",
        f);
  json_array_foreach(json_object_get(j, "features"), i, m) {
    fputs("<tr><th>", f);
    esc(f, json_string_value(json_object_get(m, "model")) ? json_string_value(json_object_get(m, "model")) : "?");
    fprintf(f, "</th><td>%lld</td>", (long long)json_integer_value(json_object_get(m, "dim")));
    if (json_is_number(json_object_get(m, "rho_mean")))
      fprintf(f, "<td>%.3f</td><td>%.3f</td><td>%.3f</td></tr>\n", json_number_value(json_object_get(m, "rho_mean")),
              json_number_value(json_object_get(m, "rho_min")), json_number_value(json_object_get(m, "rho_max")));
    else
      fputs("<td colspan=\"3\">n/a</td></tr>\n", f);
  }
  fputs("</table>\n", f);
  json_decref(j);
}

static const char *CSS =
    "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;max-width:820px;margin:24px auto;padding:0 16px;"
    "color:#222;line-height:1.4}"
    "h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;"
    "padding-bottom:3px}"
    "table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f4f4f4;text-align:left}td.na{color:#888;text-align:left;font-style:italic}"
    "td.sym{text-align:left}.meta{color:#555;font-size:13px}.verdict{padding:8px 12px;border-radius:4px;"
    "margin:10px 0}.ok{background:#e6f4e6;border:1px solid #9c9}.bad{background:#fbeaea;border:1px solid #d99}"
    ".chart{display:block;margin:6px 0}text{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;fill:#333}"
    /* no chart label under 12 px (CSS beats SVG presentation attributes), subscripts readable too */
    ".chart text[font-size=\"9\"],.chart text[font-size=\"10\"],.chart text[font-size=\"11\"]{font-size:12px}"
    ".chart tspan[baseline-shift]{font-size:85%}"
    "code{font-size:12px}";

static void write_page(FILE *f, const eval_result *r, const eval_options *o) {
  fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>taca eval: ", f);
  esc(f, r->old_name);
  fputs(" &#8594; new model</title>\n<style>", f);
  fputs(CSS, f);
  fputs("</style>\n</head>\n<body>\n<h1>TaCA hot-plug evaluation</h1>\n<p class=\"meta\">store <code>", f);
  esc(f, r->db);
  fputs("</code>, old model <code>", f);
  esc(f, r->old_name);
  fprintf(f, "</code> (image %d, text %d), new model <code>", r->old_image_dim, r->old_text_dim);
  esc(f, r->new_model);
  fprintf(f, "</code> (embed %d)", r->new_dim);
  if (r->checkpoint[0]) {
    fputs(", checkpoint <code>", f);
    esc(f, r->checkpoint);
    fputs("</code>", f);
    if (r->ckpt_step >= 0) fprintf(f, " after %ld updates", r->ckpt_step);
    fputs(" (", f);
    esc(f, r->ckpt_peft);
    fputs(" in blocks ", f);
    esc(f, r->ckpt_layers);
    fprintf(f, ", %ld trainable parameters)", r->ckpt_trainable);
  }
  fprintf(f, ".<br/>Test split: %d of %llu samples (train fraction %.2f, seed %llu); %d labelled.</p>\n", r->n_test,
          (unsigned long long)r->n_records, r->split, (unsigned long long)r->seed, r->n_test_labelled);

  /* the verdict of Eq. (2) */
  if (r->head_ok.applicable && r->adapted_ok.applicable) {
    int lower = r->acc_old_adapted > r->acc_old_old;
    int upper = !r->new_head_ok.applicable || r->acc_old_adapted <= r->acc_new_new;
    fprintf(f, "<p class=\"verdict %s\">Eq. (2): ", lower && upper ? "ok" : "bad");
    zeta_html(f, "old", "old", 0);
    /* the relations as measured: &lt; / &#8805; and &#8804; / &gt; */
    fprintf(f, " = %.1f %% %s ", 100 * r->acc_old_old, lower ? "&lt;" : "&#8805;");
    zeta_html(f, "old", "new", 1);
    fprintf(f, " = %.1f %%", 100 * r->acc_old_adapted);
    if (r->new_head_ok.applicable) {
      fprintf(f, " %s ", r->acc_old_adapted <= r->acc_new_new ? "&#8804;" : "&gt;");
      zeta_html(f, "new", "new", 0);
      fprintf(f, " = %.1f %%", 100 * r->acc_new_new);
    }
    fprintf(f, ": <b>%s</b> (gain %+.1f points with the old head untouched).</p>\n",
            lower && upper ? "holds" : "does not hold", 100 * (r->acc_old_adapted - r->acc_old_old));
  }

  fputs("<h2>Training loss</h2>\n", f);
  if (r->log.n > 0) {
    svg_loss(f, &r->log);
    fprintf(f, "<p class=\"meta\">%d logged steps from <code>", r->log.n);
    esc(f, o->log_json);
    fputs("</code>; each point is the loss on the parameters before that step's update.</p>\n", f);
  } else {
    fputs("<p class=\"meta\">No training log given (<code>--log-json</code>).</p>\n", f);
  }

  fputs("<h2>Cross-model retrieval against the old text encoder</h2>\n", f);
  if (r->ret_ok.applicable) {
    bar_series s[4];
    int ns = 0;
    s[ns] = (bar_series){"old image vs old text (before)", PALETTE[0], {0}};
    fill_recall(s[ns++].v, &r->ret_old);
    if (r->adapted_ok.applicable) {
      s[ns] = (bar_series){"adapted new (TaCA)", PALETTE[2], {0}};
      fill_recall(s[ns++].v, &r->ret_adapted);
    }
    if (r->new_text_ok.applicable) {
      s[ns] = (bar_series){"unadapted new", PALETTE[1], {0}};
      fill_recall(s[ns++].v, &r->ret_new);
    }
    s[ns] = (bar_series){"chance", GREY, {r->chance_r1, r->chance_r5, r->chance_r10, r->chance_r1, r->chance_r5,
                                          r->chance_r10}};
    ns++;
    svg_bars(f, "retrieval recall", 6, retrieval_group, NULL, s, ns);
  }
  fprintf(f, "<table>\n<tr><th rowspan=\"2\">image features (%d test pairs)</th><th colspan=\"4\">text &#8594; image</th>"
             "<th colspan=\"4\">image &#8594; text</th></tr>\n<tr><th>R@1</th><th>R@5</th><th>R@10</th><th>median rank</th>"
             "<th>R@1</th><th>R@5</th><th>R@10</th><th>median rank</th></tr>\n",
          r->n_test);
  recall_row(f, "old image (before the upgrade)", &r->ret_ok, NULL, &r->ret_old);
  recall_row(f, "adapted new (TaCA)", &r->ret_ok, &r->adapted_ok, &r->ret_adapted);
  recall_row(f, "unadapted new", &r->new_text_ok, NULL, &r->ret_new);
  fprintf(f, "<tr><th>chance (k / N)</th><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td>"
             "<td>%.1f</td><td>%.1f</td></tr>\n</table>\n",
          100 * r->chance_r1, 100 * r->chance_r5, 100 * r->chance_r10, (r->n_test + 1) / 2.0, 100 * r->chance_r1,
          100 * r->chance_r5, 100 * r->chance_r10, (r->n_test + 1) / 2.0);
  fputs("<p class=\"meta\">Recall in %; the true item of a query is the sample's own caption or image, ties broken by "
        "sample order.</p>\n", f);

  fputs("<h2>Old downstream head</h2>\n<p class=\"meta\">A softmax-regression head trained on the old image "
        "embeddings of the train split", f);
  if (r->head_ok.applicable)
    fprintf(f, " (%d classes, L2 %.3g, train accuracy %.1f %%)", r->head_classes, o->head.l2, 100 * r->head_train_acc);
  fputs(", then applied unchanged to each encoder's test features; the new head is retrained on the new "
        "model's own features (cold-plug upper reference).</p>\n", f);
  if (r->head_ok.applicable) {
    /* one bar per head/features pair, coloured like the retrieval series; a pair that does not
     * apply is drawn as "n/a" */
    const double vals[4] = {r->acc_old_old, r->adapted_ok.applicable ? r->acc_old_adapted : NAN,
                            r->new_image_ok.applicable ? r->acc_old_new : NAN,
                            r->new_head_ok.applicable ? r->acc_new_new : NAN};
    const char *names[4] = {"old head, old features", "old head, adapted new", "old head, unadapted new",
                            "new head, new features"};
    const char *cols[4] = {PALETTE[0], PALETTE[2], PALETTE[1], PALETTE[3]};
    const int W = 760, H = 300, ml = 50, mt = 34, mb = 46, pw = 700, ph = H - mt - mb;
    fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"old head "
               "accuracy\">\n", W, H, W, H);
    for (int p = 0; p <= 100; p += 25) {
      double y = mt + ph - p / 100.0 * ph;
      fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/><text x=\"%d\" y=\"%.1f\" "
                 "text-anchor=\"end\" font-size=\"11\">%d%%</text>\n", ml, ml + pw, y, y, ml - 6, y + 4, p);
    }
    const double gw = pw / 4.0, bw = gw * 0.5;
    for (int g = 0; g < 4; g++) {
      double x = ml + g * gw + (gw - bw) / 2, v = vals[g];
      if (isfinite(v)) {
        double h = v * ph;
        fprintf(f, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s: "
                   "%.1f%%</title></rect><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%.1f%%</text>\n",
                x, mt + ph - h, bw, h, cols[g], names[g], 100 * v, x + bw / 2, mt + ph - h - 4, 100 * v);
      } else {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\" fill=\"#888\">n/a</text>\n",
                x + bw / 2, mt + ph - 6.0);
      }
      fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">", ml + g * gw + gw / 2, mt + ph + 20);
      accuracy_group(f, g, NULL);
      fprintf(f, "</text><text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"10\" fill=\"#666\">%s</text>\n",
              ml + g * gw + gw / 2, mt + ph + 36, names[g]);
    }
    fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#666\"/>\n</svg>\n", ml, ml + pw, mt + ph, mt + ph);
  }
  fputs("<table>\n<tr><th>features</th><th>head(features)</th><th>test accuracy</th><th></th></tr>\n", f);
  acc_row(f, "old head on old features", "old", "old", 0, &r->head_ok, NULL, r->acc_old_old, "before the upgrade");
  acc_row(f, "old head on adapted new features", "old", "new", 1, &r->head_ok, &r->adapted_ok, r->acc_old_adapted,
          "hot-plug (TaCA)");
  acc_row(f, "old head on unadapted new features", "old", "new", 0, &r->head_ok, &r->new_image_ok, r->acc_old_new,
          "hot-plug without TaCA");
  acc_row(f, "new head on new features", "new", "new", 0, &r->new_head_ok, NULL, r->acc_new_new,
          "cold-plug upper reference");
  fputs("</table>\n", f);

  fputs("<h2>Backward compatibility</h2>\n<p class=\"meta\">BCT's protocol: label retrieval within the test "
        "split, each labelled sample querying the others (cosine); the upgrade without backfill is the adapted "
        "query against the old gallery.</p>\n<table>\n<tr><th>query &#8594; gallery</th><th>R@1 %</th><th>mAP %</th>"
        "<th>queries</th></tr>\n", f);
  const eval_na *bo[3][2] = {{&r->bc_ok, NULL}, {&r->bc_ok, &r->adapted_ok}, {&r->bc_new_new_ok, NULL}};
  const eval_bc_retrieval *bx[3] = {&r->bc_old_old, &r->bc_new_old, &r->bc_new_new};
  const char *bn[3] = {"old &#8594; old (before)", "new &#8594; old (adapted query, old gallery)",
                       "new &#8594; new (unadapted, full backfill)"};
  for (int k = 0; k < 3; k++) {
    fprintf(f, "<tr><th>%s</th>", bn[k]);
    const eval_na *bad = !bo[k][0]->applicable ? bo[k][0] : bo[k][1] && !bo[k][1]->applicable ? bo[k][1] : NULL;
    if (bad) na_cell(f, bad, 3);
    else fprintf(f, "<td>%.1f</td><td>%.1f</td><td>%d</td>", 100 * bx[k]->r1, 100 * bx[k]->map, bx[k]->n);
    fputs("</tr>\n", f);
  }
  fputs("</table>\n<table>\n", f);
  fputs("<tr><th>gain (new&#8594;old minus old&#8594;old R@1)</th>", f);
  if (!r->bc_ok.applicable) na_cell(f, &r->bc_ok, 1);
  else if (!r->adapted_ok.applicable) na_cell(f, &r->adapted_ok, 1);
  else fprintf(f, "<td>%+.1f points</td>", 100 * r->bc_gain);
  fputs("</tr>\n<tr><th>update gain</th>", f);
  if (!r->bc_update_gain_ok.applicable) na_cell(f, &r->bc_update_gain_ok, 1);
  else fprintf(f, "<td>%.3f</td>", r->bc_update_gain);
  fputs("</tr>\n<tr><th>negative flips of the old head</th>", f);
  if (!r->head_ok.applicable) na_cell(f, &r->head_ok, 1);
  else if (!r->adapted_ok.applicable) na_cell(f, &r->adapted_ok, 1);
  else fprintf(f, "<td>%.2f %% (%d of %d)</td>", 100 * r->neg_flip_rate, r->neg_flips, r->neg_flip_counted);
  fputs("</tr>\n</table>\n", f);

  fputs("<h2>Distance to the old image embeddings</h2>\n<table>\n<tr><th>features (test split)</th><th>mean L2</th>"
        "<th>mean cosine</th><th>mean norm</th><th>old mean norm</th></tr>\n", f);
  const eval_na *oks[2] = {&r->adapted_ok, &r->new_image_ok};
  const eval_pair_stats *ps[2] = {&r->sim_adapted, &r->sim_new};
  const char *pn[2] = {"adapted new (TaCA)", "unadapted new"};
  for (int k = 0; k < 2; k++) {
    fprintf(f, "<tr><th>%s</th>", pn[k]);
    if (!oks[k]->applicable) na_cell(f, oks[k], 4);
    else
      fprintf(f, "<td>%.4f</td><td>%.4f</td><td>%.4f</td><td>%.4f</td>", ps[k]->mean_l2, ps[k]->mean_cosine,
              ps[k]->mean_norm_a, ps[k]->mean_norm_b);
    fputs("</tr>\n", f);
  }
  fputs("</table>\n", f);
  service_html(f, o->service_json);
  aft_html(f, o->aft_json);
  fprintf(f, "<p class=\"meta\">Encoded %d images in %.1f s. Produced by <code>taca eval</code>.</p>\n</body>\n</html>\n",
          r->encoded_images, r->encode_seconds);
}

int eval_write_html(const char *path, const eval_result *r, const eval_options *o, taca_error *err) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return taca_fail(err, "--html %s: out of memory", path);
  write_page(f, r, o);
  if (fclose(f)) {
    free(buf);
    return taca_fail(err, "--html %s: out of memory", path);
  }
  taca_chunk ch = {buf, len};
  int rc = taca_write_file_atomic(path, &ch, 1, err);
  free(buf);
  return rc;
}
