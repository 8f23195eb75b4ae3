/* train.c: the taca-train loop of one rank: batches from the feed, forward of the local rows,
 * all-gather of the global batch for the contrastive loss, backward, SUM all-reduce of gradients,
 * AdamW, logs and checkpoints. Ranks stay in lockstep: every collective is made by every rank, and
 * a failure on any rank is agreed on (comm_any) before the step's collectives, so all stop cleanly;
 * a rank that fails where no agreement is (or between one and the next collective) ends the run
 * with comm_fail_fast (MPI_Abort), so no peer waits for ever. */
#include "trainer/train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/atomicfile.h"
#include "nn/backend_cuda.h"
#include "nn/clip.h"
#include "trainer/batch_feed.h"
#include "trainer/checkpoint.h"
#include "trainer/collectives_nccl.h"
#include "methods/taca_checkpoint.h"
#include "methods/taca_step.h"
#include "trainer/train_util.h"

/* --log-json lines a resumed run keeps: the steps before its checkpoint. */
static int keep_before(json_t *line, void *arg) {
  json_t *s = json_object_get(line, "step");
  return s && json_is_integer(s) && json_integer_value(s) < *(const long *)arg;
}

/* One rank's run: what the sections below share. */
typedef struct taca_run {
  const train_options *o;
  const taca_comm *comm;
  int rank, world, b, n, E; /* local and global batch, target width */
  nn_backend *be;
  taca_nccl *nccl;
  clip_model *m;
  taca_param_config pc;
  taca_params P;
  taca_model *tm;
  feed *fd;
  taca_model_desc target;
  long start, latest, spe;
  FILE *log;
  taca_loss_config lc;
  taca_adamw_config ac;
  float *f_local, *f_all, *img_all, *txt_all, *df;
  double *work;
  double t_run;
  /* What a checkpoint records, and what it must agree on to be resumed (methods/taca_checkpoint.h). */
  taca_checkpoint_meta cm;
  const char *const *meta, *const *must;
} taca_run;

/* ---- Setup: the output folder and NCCL, agreed on by every rank before anything else. */
static int setup_ranks(taca_run *r, taca_error *err) {
  const train_options *o = r->o;
  int setup_failed = train_fault(r->rank, "setup", err) != 0;
  if (!setup_failed && r->rank == 0 && mkdir(o->out, 0755) && errno != EEXIST)
    setup_failed = taca_fail(err, "--out %s: %s", o->out, strerror(errno)) != 0;
  if (comm_any(r->comm, setup_failed)) {
    if (!setup_failed) comm_fail_elsewhere(err, "another rank failed to set up");
    return -1;
  }
  /* A rank's own NCCL failure ends the run at once: its peers may be waiting inside NCCL's
   * initialisation (until TACA_NCCL_INIT_TIMEOUT_S), not in the agreement. */
  const int nccl_failed = comm_nccl_init(&r->nccl, r->comm, r->be, err) != 0;
  if (nccl_failed) comm_fail_fast(r->comm, NULL, err);
  if (comm_any(r->comm, nccl_failed)) {
    if (!err->msg[0]) comm_fail_elsewhere(err, "another rank failed to set up NCCL");
    return -1;
  }
  return 0;
}

/* ---- The model, the data and the parameters (resumed, initialised or fresh). */
static int setup_model(taca_run *r, taca_error *err) {
  const train_options *o = r->o;
  if (!(r->m = clip_model_load(o->new_model, o->arch, r->be, err))) return -1;
  /* --precision bf16: the frozen tower's GEMMs (its forward and the input gradients through it) in
   * BF16; the trainable tensors are never registered, so they stay F32 (backend.h). */
  if (clip_model_set_precision(r->m, o->precision, err)) return -1;
  if (o->precision != NN_PRECISION_F32 && r->rank == 0 && !o->quiet)
    fprintf(stderr, "taca-train: frozen tower in %s (GEMMs: %s)\n", nn_precision_name(o->precision),
            r->be->host_memory ? nn_backend_cpu_bf16_impl() : r->be->name);
  { /* a bad --adapter-layers is told before the servers are asked anything (and retried) */
    int first_layer, last_layer;
    if (taca_parse_layer_range(o->adapter_layers, r->m->cfg.vision.layers, &first_layer, &last_layer, err)) return -1;
  }
  /* The data first: the target model fixes the projector's output size. The feed starts at the
   * resumed step (the latest complete checkpoint, loaded below once the sizes are known). */
  r->latest = o->resume ? checkpoint_latest(o->out) : -1;
  r->start = r->latest > 0 ? r->latest : 0;
  feed_options fo = {.servers = o->servers, .targets = o->targets, .seed = o->seed, .rank = r->rank,
                     .world = r->world, .local_batch = r->b, .image_size = r->m->cfg.image_size, .depth = 2};
  fo.client.timeout_ms = o->timeout_ms;
  fo.client.retry_budget_ms = o->retry_budget_ms;
  fo.client.token = o->token;
  fo.client.on_retry = train_log_retry, fo.client.retry_arg = (void *)(intptr_t)r->rank;
  fo.be = r->be;
  fo.start_step = r->start;
  if (feed_open(&r->fd, &fo, err)) return -1;
  r->target = *feed_target(r->fd);
  r->spe = feed_steps_per_epoch(r->fd);
  r->E = r->target.image_dim;

  taca_param_config *pc = &r->pc;
  taca_param_config_default(pc, &r->m->cfg, r->E);
  pc->proj_hidden = o->projector_hidden;
  if (o->bottleneck) pc->peft.bottleneck = o->bottleneck;
  if (!strcmp(o->peft, "lora")) {
    pc->peft.kind = VIT_PEFT_LORA;
    pc->peft.lora_rank = o->lora_rank;
    pc->peft.lora_alpha = (float)o->lora_alpha;
  }
  if (taca_parse_layer_range(o->adapter_layers, r->m->cfg.vision.layers, &pc->peft.first, &pc->peft.last, err))
    return -1;
  if (taca_params_create(&r->P, pc, r->be, o->seed, err)) return -1;

  taca_checkpoint_train_meta(&r->cm, pc, o->batch_size, r->world, o->seed, r->target.name, o->new_model);
  r->meta = r->cm.kv;
  r->must = r->cm.must;
  if (o->resume) {
    if (r->latest >= 0) {
      if (checkpoint_load(&r->P, o->out, r->latest, r->must, err)) return -1;
      if (r->rank == 0)
        fprintf(stderr, "taca-train: resuming from %s/step-%06ld (update %ld of %ld)\n", o->out, r->latest,
                r->latest, o->steps);
    }
  } else if (o->init && taca_params_load(&r->P, o->init, err)) {
    return -1;
  }
  if (!(r->tm = taca_model_create(r->m, &r->P, r->b, o->recompute, err))) return -1;

  r->lc = (taca_loss_config){.scale = taca_loss_scale(r->target.logit_scale), .w_contra = 1.f,
                             .w_distill = (float)o->lambda};
  if (o->loss == LOSS_CONTRASTIVE) r->lc.w_distill = 0;
  if (o->loss == LOSS_DISTILL) r->lc.w_contra = 0;
  r->ac = (taca_adamw_config){.lr = o->lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                              .weight_decay = o->weight_decay};
  const size_t b = r->b, n = r->n, E = r->E;
  r->f_local = malloc(sizeof(float) * b * E);
  r->f_all = malloc(sizeof(float) * n * E);
  r->img_all = malloc(sizeof(float) * n * E);
  r->txt_all = malloc(sizeof(float) * n * E);
  r->df = malloc(sizeof(float) * b * E);
  r->work = malloc(sizeof(double) * taca_loss_work_size(r->n, r->E));
  if (!r->f_local || !r->f_all || !r->img_all || !r->txt_all || !r->df || !r->work)
    return taca_fail(err, "out of memory");
  return 0;
}

/* ---- Rank 0: the --log-json file (a resumed run keeps the steps before its checkpoint), the
 * summary line, the checkpoint of step 0. */
static int open_log(taca_run *r, taca_error *err) {
  const train_options *o = r->o;
  if (r->rank != 0) return 0;
  long keep = r->start;
  if (o->log_json && (train_trim_log(o->log_json, keep_before, &keep, err) || !(r->log = fopen(o->log_json, "ab")))) {
    if (!r->log && !err->msg[0]) taca_fail(err, "--log-json %s: %s", o->log_json, strerror(errno));
    return -1;
  }
  fprintf(stderr,
          "taca-train: %d rank(s) x batch %d, %ld steps/epoch over %llu samples; targets '%s' (dim %d, "
          "scale %.2f); %zu trainable parameters; activations %.0f MiB per rank\n",
          r->world, r->b, r->spe, (unsigned long long)feed_info(r->fd)->samples, r->target.name, r->E, r->lc.scale,
          taca_param_count(&r->pc), taca_model_memory_bytes(r->tm) / 1048576.0);
  if (r->start == 0 && o->save_every > 0 && checkpoint_save(&r->P, o->out, r->meta, err)) return -1;
  return 0;
}

/* ---- One step: batch, forward, agreement, all-gathers, loss, backward, agreement, gradient
 * all-reduce, AdamW. -1 ends the run (every rank knows, or this one fails fast). */
static int train_step(taca_run *r, long step, taca_loss_terms *terms, double *wait, taca_error *err) {
  const int b = r->b, E = r->E;
  feed_batch *fb = NULL;
  int failed = feed_next(r->fd, &fb, wait, err) != 0;
  if (!failed && fb->step != step) failed = taca_fail(err, "batch for step %ld arrived at step %ld", fb->step, step) != 0;
  if (!failed) {
    taca_params_zero_grad(&r->P);
    failed = train_fault(r->rank, "step", err) != 0 || taca_model_forward(r->tm, &r->P, fb->pixels, b, r->f_local, err) != 0;
  }
  if (comm_any(r->comm, failed)) {
    if (!failed) comm_fail_elsewhere(err, "another rank failed at step %ld", step);
    if (fb) feed_release(r->fd, fb);
    return -1;
  }
  failed = comm_allgather(r->comm, r->f_local, (size_t)b * E, r->f_all, err) ||
           comm_allgather(r->comm, fb->img, (size_t)b * E, r->img_all, err) ||
           comm_allgather(r->comm, fb->txt, (size_t)b * E, r->txt_all, err);
  feed_release(r->fd, fb);
  if (failed) return -1;
  failed = taca_loss(&r->lc, r->f_all, r->txt_all, r->img_all, r->n, E, r->rank * b, r->rank * b + b, terms, r->df,
                     r->work, err) != 0;
  if (!failed) failed = taca_model_backward(r->tm, &r->P, r->df, err) != 0;
  if (comm_any(r->comm, failed)) {
    if (!failed) comm_fail_elsewhere(err, "another rank failed at step %ld", step);
    return -1;
  }
  if (train_fault(r->rank, "allreduce", err) || comm_grads_allreduce_sum(r->comm, r->nccl, r->be, r->P.flat_g, r->P.n, err) ||
      nn_backend_cuda_check(r->be, err))
    return -1;
  r->ac.lr = train_lr_at(r->o, r->o->lr, step);
  taca_params_adamw(&r->P, &r->ac);
  return 0;
}

/* ---- After a step: the log line and progress (rank 0, with the mean data wait over ranks), the
 * checkpoint when due, agreed on by every rank. */
static int report_step(taca_run *r, long step, double dt, double wait, const taca_loss_terms *terms, taca_error *err) {
  const train_options *o = r->o;
  int failed = 0;
  double wait_sum = comm_sum(r->comm, wait); /* logged as the mean over ranks */
  if (r->rank == 0) {
    double sps = r->n / dt;
    if (r->log) {
      fprintf(r->log,
              "{\"step\": %ld, \"loss\": %.9g, \"loss_contra\": %.9g, \"loss_distill\": %.9g, "
              "\"samples_per_s\": %.4g, \"data_wait_s\": %.4g, \"step_s\": %.4g}\n",
              step, terms->loss, terms->contra, terms->distill, sps, wait_sum / r->world, dt);
      fflush(r->log);
    }
    if (!o->quiet) {
      char eta[32];
      train_fmt_eta(eta, sizeof eta, (train_now_s() - r->t_run) / (step - r->start + 1) * (o->steps - step - 1));
      fprintf(stderr, "step %ld/%ld  loss %.4f (contra %.4f, distill %.4f)  %.2f samples/s  data wait %.3f s  ETA %s\n",
              step + 1, o->steps, terms->loss, terms->contra, terms->distill, sps, wait_sum / r->world, eta);
    }
    int last = step + 1 == o->steps;
    if ((o->save_every > 0 && (step + 1) % o->save_every == 0) || last)
      failed = train_fault(r->rank, "checkpoint", err) != 0 || checkpoint_save(&r->P, o->out, r->meta, err) != 0;
  }
  if (comm_any(r->comm, failed)) {
    if (!failed) comm_fail_elsewhere(err, "rank 0 failed to write a checkpoint at step %ld", step + 1);
    return -1;
  }
  return 0;
}

int train_run(const train_options *o, const taca_comm *comm, taca_error *err) {
  const int world = comm->size;
  if (o->batch_size % world != 0)
    return taca_fail(err, "--batch-size %d does not split evenly over %d ranks", o->batch_size, world);
  char device[64];
  if (comm_rank_device(comm, o->device, device, sizeof device, err)) return -1;
  taca_run *r = calloc(1, sizeof *r);
  if (!r) return taca_fail(err, "out of memory");
  r->o = o, r->comm = comm, r->rank = comm->rank, r->world = world;
  r->b = o->batch_size / world, r->n = r->b * world;
  if (!(r->be = nn_backend_create(device, o->threads, err))) {
    comm_fail_fast(comm, NULL, err);
    free(r);
    return -1;
  }
  int rc = -1;
  if (setup_ranks(r, err) || setup_model(r, err) || open_log(r, err)) goto done;

  r->t_run = train_now_s();
  for (long step = r->start; step < o->steps; step++) {
    double t0 = train_now_s(), wait = 0;
    taca_loss_terms terms = {0};
    if (train_step(r, step, &terms, &wait, err) || report_step(r, step, train_now_s() - t0, wait, &terms, err))
      goto done;
  }
  rc = 0;
  if (r->rank == 0 && !o->quiet)
    fprintf(stderr, "taca-train: done: %ld updates; parameters in %s/step-%06ld.safetensors\n", r->P.step, o->out,
            r->P.step);
done:
  if (rc) comm_fail_fast(comm, r->nccl, err); /* returns only where the others know already */
  if (r->log) fclose(r->log);
  feed_close(r->fd);
  taca_model_free(r->tm);
  taca_params_free(&r->P);
  clip_model_free(r->m);
  r->be->synchronize(r->be);
  comm_nccl_free(r->nccl);
  nn_backend_destroy(r->be);
  free(r->f_local), free(r->f_all), free(r->img_all), free(r->txt_all), free(r->df), free(r->work);
  free(r);
  return rc;
}
