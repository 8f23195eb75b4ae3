/* report_text.c: an eval_result as the readable table `taca eval` prints on the terminal. */
#include <stdio.h>
#include <string.h>

#include "services/eval/report.h"

static void recall_cols(FILE *f, const eval_retrieval *x) {
  fprintf(f, "%6.1f %6.1f %6.1f    %6.1f %6.1f %6.1f\n", 100 * x->t2i.r1, 100 * x->t2i.r5, 100 * x->t2i.r10,
          100 * x->i2t.r1, 100 * x->i2t.r5, 100 * x->i2t.r10);
}

static void pct_or_na(FILE *f, const eval_na *a, const eval_na *b, double v, const char *tail) {
  if (!a->applicable) fprintf(f, "n/a (%s)\n", a->reason);
  else if (b && !b->applicable) fprintf(f, "n/a (%s)\n", b->reason);
  else fprintf(f, "%6.1f %%%s\n", 100 * v, tail);
}

static void bc_row(FILE *f, const char *name, const eval_na *a, const eval_na *b, const eval_bc_retrieval *x) {
  fprintf(f, "  %-44s ", name);
  if (!a->applicable) fprintf(f, "n/a (%s)\n", a->reason);
  else if (b && !b->applicable) fprintf(f, "n/a (%s)\n", b->reason);
  else fprintf(f, "%6.1f %6.1f   (%d queries)\n", 100 * x->r1, 100 * x->map, x->n);
}

/* The backward-compatibility block (BCT protocol, negative flips). */
static void eval_print_compat(FILE *f, const eval_result *r) {
  fprintf(f, "\nBackward compatibility: label retrieval in the test split (query -> gallery, %%)   %6s %6s\n", "R@1",
          "mAP");
  bc_row(f, "old -> old (before the upgrade)", &r->bc_ok, NULL, &r->bc_old_old);
  bc_row(f, "new -> old (adapted query, old gallery)", &r->bc_ok, &r->adapted_ok, &r->bc_new_old);
  bc_row(f, "new -> new (unadapted, full backfill)", &r->bc_new_new_ok, NULL, &r->bc_new_new);
  if (r->bc_ok.applicable && r->adapted_ok.applicable) {
    fprintf(f, "  gain (new->old minus old->old R@1)            %+6.1f points; compatible: %s\n", 100 * r->bc_gain,
            r->bc_gain > 0 ? "yes" : "no");
    fprintf(f, "  update gain (gain / (new->new minus old->old)) ");
    if (r->bc_update_gain_ok.applicable) fprintf(f, "%6.3f\n", r->bc_update_gain);
    else fprintf(f, "n/a (%s)\n", r->bc_update_gain_ok.reason);
  }
  fprintf(f, "  negative flips of the old head                ");
  if (!r->head_ok.applicable) fprintf(f, "n/a (%s)\n", r->head_ok.reason);
  else if (!r->adapted_ok.applicable) fprintf(f, "n/a (%s)\n", r->adapted_ok.reason);
  else
    fprintf(f, "%6.2f %%  (%d of %d labelled test samples right on old features, wrong on adapted)\n",
            100 * r->neg_flip_rate, r->neg_flips, r->neg_flip_counted);
}

void eval_print_table(FILE *f, const eval_result *r, const eval_options *o) {
  (void)o;
  fprintf(f, "taca eval: store %s, old '%s' (%s; image %d, text %d), new %s (embed %d)\n", r->db, r->old_name,
          r->old_arch[0] ? r->old_arch : "?", r->old_image_dim, r->old_text_dim, r->new_model, r->new_dim);
  if (r->checkpoint[0]) {
    fprintf(f, "checkpoint %s: ", r->checkpoint);
    if (r->ckpt_step >= 0) fprintf(f, "after %ld updates, ", r->ckpt_step);
    fprintf(f, "%s in blocks %s, projector hidden %d, %ld trainable parameters\n", r->ckpt_peft, r->ckpt_layers,
            r->ckpt_proj_hidden, r->ckpt_trainable);
  } else {
    fprintf(f, "no checkpoint: only the old and the unadapted new encoder are evaluated\n");
  }
  fprintf(f, "split %.2f (seed %llu): %d train / %d test of %llu samples (%llu skipped); %d labelled test samples\n",
          r->split, (unsigned long long)r->seed, r->n_train, r->n_test, (unsigned long long)r->n_records,
          (unsigned long long)r->n_skipped, r->n_test_labelled);

  fprintf(f, "\nCross-model retrieval against the old text embeddings (%d test pairs, %%)\n", r->n_test);
  fprintf(f, "%37s%-20s    %s\n", "", "    text -> image", "    image -> text");
  fprintf(f, "%-36s %6s %6s %6s    %6s %6s %6s\n", "", "R@1", "R@5", "R@10", "R@1", "R@5", "R@10");
  fprintf(f, "  %-34s ", "old image (before the upgrade)");
  if (r->ret_ok.applicable) recall_cols(f, &r->ret_old);
  else fprintf(f, "n/a (%s)\n", r->ret_ok.reason);
  fprintf(f, "  %-34s ", "adapted new (TaCA)");
  if (!r->ret_ok.applicable) fprintf(f, "n/a (%s)\n", r->ret_ok.reason);
  else if (!r->adapted_ok.applicable) fprintf(f, "n/a (%s)\n", r->adapted_ok.reason);
  else recall_cols(f, &r->ret_adapted);
  fprintf(f, "  %-34s ", "unadapted new");
  if (r->new_text_ok.applicable) recall_cols(f, &r->ret_new);
  else fprintf(f, "n/a (%s)\n", r->new_text_ok.reason);
  fprintf(f, "  %-34s %6.1f %6.1f %6.1f    %6.1f %6.1f %6.1f\n", "chance (k / N)", 100 * r->chance_r1,
          100 * r->chance_r5, 100 * r->chance_r10, 100 * r->chance_r1, 100 * r->chance_r5, 100 * r->chance_r10);

  fprintf(f, "\nOld downstream head: softmax regression on the old train embeddings");
  if (r->head_ok.applicable) fprintf(f, " (%d classes, train accuracy %.1f %%)", r->head_classes, 100 * r->head_train_acc);
  fprintf(f, "; test accuracy\n");
  fprintf(f, "  %-36s %-20s ", "old head on old features", "zeta_old(phi_old)");
  pct_or_na(f, &r->head_ok, NULL, r->acc_old_old, "");
  fprintf(f, "  %-36s %-20s ", "old head on adapted new features", "zeta_old(phi^_new)");
  pct_or_na(f, &r->head_ok, &r->adapted_ok, r->acc_old_adapted, "");
  fprintf(f, "  %-36s %-20s ", "old head on unadapted new features", "zeta_old(phi_new)");
  pct_or_na(f, &r->head_ok, &r->new_image_ok, r->acc_old_new, "");
  fprintf(f, "  %-36s %-20s ", "new head on new features", "zeta_new(phi_new)");
  pct_or_na(f, &r->new_head_ok, NULL, r->acc_new_new, "   (cold-plug upper reference)");
  if (r->head_ok.applicable && r->adapted_ok.applicable) {
    int lower = r->acc_old_adapted > r->acc_old_old;
    fprintf(f, "  Eq. (2) zeta_old(phi_old) < zeta_old(phi^_new)");
    if (r->new_head_ok.applicable) {
      int upper = r->acc_old_adapted <= r->acc_new_new;
      fprintf(f, " <= zeta_new(phi_new): %s", lower && upper ? "holds" : "does not hold");
      if (!upper) fprintf(f, " (adapted above the upper reference)");
    } else {
      fprintf(f, ": %s", lower ? "holds" : "does not hold");
    }
    fprintf(f, "; gain %+.1f points\n", 100 * (r->acc_old_adapted - r->acc_old_old));
  }

  eval_print_compat(f, r);

  fprintf(f, "\nDistance to the old image embeddings (test split)   %10s %12s\n", "mean L2", "mean cosine");
  fprintf(f, "  %-49s ", "adapted new (TaCA)");
  if (r->adapted_ok.applicable) fprintf(f, "%10.4f %12.4f\n", r->sim_adapted.mean_l2, r->sim_adapted.mean_cosine);
  else fprintf(f, "n/a (%s)\n", r->adapted_ok.reason);
  fprintf(f, "  %-49s ", "unadapted new");
  if (r->new_image_ok.applicable) fprintf(f, "%10.4f %12.4f\n", r->sim_new.mean_l2, r->sim_new.mean_cosine);
  else fprintf(f, "n/a (%s)\n", r->new_image_ok.reason);
  if (r->gate_checked) fprintf(f, "\nGate: %s%s\n", r->gate_failed ? "FAILED: " : "passed", r->gate_failed ? r->gate_why : "");
  if (r->log.n > 0) {
    const double *first = r->log.value, *last = r->log.value + (size_t)(r->log.n - 1) * r->log.n_series;
    fprintf(f, "\nTraining log: %d steps (%ld..%ld);", r->log.n, r->log.step[0], r->log.step[r->log.n - 1]);
    for (int k = 0; k < r->log.n_series; k++)
      fprintf(f, " %s %.4g -> %.4g%s", r->log.names[k], first[k], last[k], k + 1 < r->log.n_series ? "," : "");
    fprintf(f, "\n");
  }
}
