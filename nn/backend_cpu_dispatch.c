/* backend_cpu_dispatch.c: nn_backend_cpu_create picks the CPU backend's build for this CPU: the
 * x86-64-v3 copy of backend_cpu*.c (AVX2, FMA, F16C; compiled where TACA_CPU_V3 is defined, see
 * nn/CMakeLists.txt) when the CPU has those, else the portable baseline. The choice only changes
 * speed and the order of the vectorised reductions (LayerNorm, softmax), never what is computed.
 * TACA_CPU_ISA=baseline in the environment forces the baseline (tests compare the two). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/backend_cpu_impl.h"

static int use_v3(void) {
#if defined(TACA_CPU_V3) && (defined(__x86_64__) || defined(__i386__))
  const char *force = getenv("TACA_CPU_ISA");
  if (force && !strcmp(force, "baseline")) return 0;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
#else
  return 0;
#endif
}

const char *nn_backend_cpu_isa(void) { return use_v3() ? "x86-64-v3" : "baseline"; }

const char *nn_backend_cpu_bf16_impl(void) {
  static char name[96];
  if (!name[0]) cpu_bf16_probe(name, sizeof name);
  return name;
}

nn_backend *nn_backend_cpu_create(int threads) {
#ifdef TACA_CPU_V3
  if (use_v3()) return nn_backend_cpu_create_isa_v3(threads);
#endif
  return nn_backend_cpu_create_isa_base(threads);
}
