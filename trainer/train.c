/* train.c: the taca-train loop of one rank: batches from the feed, forward of the local rows,
 * all-gather of the global batch for the contrastive loss, backward, SUM all-reduce of gradients,
 * AdamW, logs and checkpoints. Ranks stay in lockstep: every collective is made by every rank, and
 * a failure on any rank is agreed on (comm_any) before the step's collectives, so all stop cleanly. */
#include "trainer/train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
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

int train_run(const train_options *o, const taca_comm *comm, taca_error *err) {
  const int rank = comm->rank, world = comm->size;
  if (o->batch_size % world != 0)
    return taca_fail(err, "--batch-size %d does not split evenly over %d ranks", o->batch_size, world);
  const int b = o->batch_size / world;
  int rc = -1;
  char device[64];
  if (comm_rank_device(comm, o->device, device, sizeof device, err)) return -1;
  nn_backend *be = nn_backend_create(device, o->threads, err);
  taca_nccl *nccl = NULL;
  clip_model *m = NULL;
  taca_params P = {0};
  taca_model *tm = NULL;
  feed *fd = NULL;
  FILE *log = NULL;
  float *f_local = NULL, *f_all = NULL, *img_all = NULL, *txt_all = NULL, *df = NULL;
  double *work = NULL;
  if (!be) return -1;
  if (rank == 0 && mkdir(o->out, 0755) && errno != EEXIST) {
    taca_fail(err, "--out %s: %s", o->out, strerror(errno));
    goto done;
  }
  if (comm_any(comm, comm_nccl_init(&nccl, comm, be, err) != 0)) {
    if (!err->msg[0]) taca_fail(err, "another rank failed to set up NCCL");
    goto done;
  }
  if (!(m = clip_model_load(o->new_model, o->arch, be, err))) goto done;

  /* The data first: the target model fixes the projector's output size. */
  long start = 0;
  feed_options fo = {.servers = o->servers, .targets = o->targets, .seed = o->seed, .rank = rank,
                     .world = world, .local_batch = b, .image_size = m->cfg.image_size, .depth = 2};
  fo.client.timeout_ms = o->timeout_ms;
  fo.client.retry_budget_ms = o->retry_budget_ms;
  fo.client.token = o->token;
  fo.be = be;
  /* Probe the target dimension with a feed at step 0; reopened below at the resume step. */
  if (feed_open(&fd, &fo, err)) goto done;
  const taca_model_desc target = *feed_target(fd);
  const long spe = feed_steps_per_epoch(fd);
  const int E = target.image_dim;

  taca_param_config pc;
  taca_param_config_default(&pc, &m->cfg, E);
  pc.proj_hidden = o->projector_hidden;
  if (o->bottleneck) pc.peft.bottleneck = o->bottleneck;
  if (!strcmp(o->peft, "lora")) {
    pc.peft.kind = VIT_PEFT_LORA;
    pc.peft.lora_rank = o->lora_rank;
    pc.peft.lora_alpha = (float)o->lora_alpha;
  }
  if (taca_parse_layer_range(o->adapter_layers, m->cfg.vision.layers, &pc.peft.first, &pc.peft.last, err))
    goto done;
  if (taca_params_create(&P, &pc, be, o->seed, err)) goto done;

  /* What a checkpoint records, and must agree on to be resumed. */
  taca_checkpoint_meta cm;
  taca_checkpoint_train_meta(&cm, &pc, o->batch_size, world, o->seed, target.name, o->new_model);
  const char *const *meta = cm.kv, *const *must = cm.must;
  if (o->resume) {
    long latest = checkpoint_latest(o->out);
    if (latest >= 0) {
      if (checkpoint_load(&P, o->out, latest, must, err)) goto done;
      start = latest;
      if (rank == 0) fprintf(stderr, "taca-train: resuming from %s/step-%06ld (update %ld of %ld)\n", o->out, latest, latest, o->steps);
    }
  } else if (o->init && taca_params_load(&P, o->init, err)) {
    goto done;
  }
  if (start > 0) { /* position the data at the resumed step */
    feed_close(fd);
    fd = NULL;
    fo.start_step = start;
    if (feed_open(&fd, &fo, err)) goto done;
  }
  if (!(tm = taca_model_create(m, &P, b, o->recompute, err))) goto done;

  taca_loss_config lc = {.scale = taca_loss_scale(target.logit_scale), .w_contra = 1.f, .w_distill = (float)o->lambda};
  if (o->loss == LOSS_CONTRASTIVE) lc.w_distill = 0;
  if (o->loss == LOSS_DISTILL) lc.w_contra = 0;
  taca_adamw_config ac = {.lr = o->lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = o->weight_decay};
  const int n = b * world;
  f_local = malloc(sizeof(float) * b * E);
  f_all = malloc(sizeof(float) * n * E);
  img_all = malloc(sizeof(float) * n * E);
  txt_all = malloc(sizeof(float) * n * E);
  df = malloc(sizeof(float) * b * E);
  work = malloc(sizeof(double) * taca_loss_work_size(n, E));
  if (!f_local || !f_all || !img_all || !txt_all || !df || !work) {
    taca_fail(err, "out of memory");
    goto done;
  }
  if (rank == 0) {
    if (o->log_json && (train_trim_log(o->log_json, keep_before, &start, err) || !(log = fopen(o->log_json, "ab")))) {
      if (!log && !err->msg[0]) taca_fail(err, "--log-json %s: %s", o->log_json, strerror(errno));
      goto done;
    }
    fprintf(stderr,
            "taca-train: %d rank(s) x batch %d, %ld steps/epoch over %llu samples; targets '%s' (dim %d, "
            "scale %.2f); %zu trainable parameters; activations %.0f MiB per rank\n",
            world, b, spe, (unsigned long long)feed_info(fd)->samples, target.name, E, lc.scale,
            taca_param_count(&pc), taca_model_memory_bytes(tm) / 1048576.0);
    if (start == 0 && o->save_every > 0 && checkpoint_save(&P, o->out, meta, err)) goto done;
  }

  double t_run = train_now_s();
  int failed = 0;
  for (long step = start; step < o->steps; step++) {
    double t0 = train_now_s(), wait = 0;
    feed_batch *fb = NULL;
    taca_loss_terms terms = {0};
    failed = feed_next(fd, &fb, &wait, err) != 0;
    if (!failed && fb->step != step) failed = taca_fail(err, "batch for step %ld arrived at step %ld", fb->step, step) != 0;
    if (!failed) {
      taca_params_zero_grad(&P);
      failed = taca_model_forward(tm, &P, fb->pixels, b, f_local, err) != 0;
    }
    if (comm_any(comm, failed)) {
      if (!failed) taca_fail(err, "another rank failed at step %ld", step);
      if (fb) feed_release(fd, fb);
      failed = 1;
      break;
    }
    if (comm_allgather(comm, f_local, (size_t)b * E, f_all, err) ||
        comm_allgather(comm, fb->img, (size_t)b * E, img_all, err) ||
        comm_allgather(comm, fb->txt, (size_t)b * E, txt_all, err)) {
      failed = 1;
      feed_release(fd, fb);
      break;
    }
    feed_release(fd, fb);
    failed = taca_loss(&lc, f_all, txt_all, img_all, n, E, rank * b, rank * b + b, &terms, df, work, err) != 0;
    if (!failed) failed = taca_model_backward(tm, &P, df, err) != 0;
    if (comm_any(comm, failed)) {
      if (!failed) taca_fail(err, "another rank failed at step %ld", step);
      failed = 1;
      break;
    }
    if (comm_grads_allreduce_sum(comm, nccl, be, P.flat_g, P.n, err) || nn_backend_cuda_check(be, err)) {
      failed = 1;
      break;
    }
    ac.lr = train_lr_at(o, o->lr, step);
    taca_params_adamw(&P, &ac);
    double dt = train_now_s() - t0;
    double wait_sum = comm_sum(comm, wait); /* logged as the mean over ranks */
    if (rank == 0) {
      double sps = n / dt;
      if (log) {
        fprintf(log,
                "{\"step\": %ld, \"loss\": %.9g, \"loss_contra\": %.9g, \"loss_distill\": %.9g, "
                "\"samples_per_s\": %.4g, \"data_wait_s\": %.4g, \"step_s\": %.4g}\n",
                step, terms.loss, terms.contra, terms.distill, sps, wait_sum / world, dt);
        fflush(log);
      }
      if (!o->quiet) {
        char eta[32];
        train_fmt_eta(eta, sizeof eta, (train_now_s() - t_run) / (step - start + 1) * (o->steps - step - 1));
        fprintf(stderr, "step %ld/%ld  loss %.4f (contra %.4f, distill %.4f)  %.2f samples/s  data wait %.3f s  ETA %s\n",
                step + 1, o->steps, terms.loss, terms.contra, terms.distill, sps, wait_sum / world, eta);
      }
      int last = step + 1 == o->steps;
      if ((o->save_every > 0 && (step + 1) % o->save_every == 0) || last) {
        if (checkpoint_save(&P, o->out, meta, err)) {
          failed = 1;
        }
      }
    }
    if (comm_any(comm, failed)) {
      if (!failed) taca_fail(err, "rank 0 failed to write a checkpoint at step %ld", step + 1);
      failed = 1;
      break;
    }
  }
  rc = failed ? -1 : 0;
  if (rc == 0 && rank == 0 && !o->quiet)
    fprintf(stderr, "taca-train: done: %ld updates; parameters in %s/step-%06ld.safetensors\n", P.step, o->out, P.step);
done:
  if (log) fclose(log);
  feed_close(fd);
  taca_model_free(tm);
  taca_params_free(&P);
  clip_model_free(m);
  be->synchronize(be);
  comm_nccl_free(nccl);
  nn_backend_destroy(be);
  free(f_local), free(f_all), free(img_all), free(txt_all), free(df), free(work);
  return rc;
}
