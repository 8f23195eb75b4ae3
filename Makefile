# The README's commands. Every target installs missing Debian packages first (idempotent).
#   make demo       the embedded end-to-end demo (deploy/demo.sh), report in demo-out/
#   make ablations  the paper's ablations on the demo's setup (deploy/ablations.sh), report in
#                   ablations-out/ (BUDGET=30 minutes; reuses demo-out/models when make demo made them)
#   make test       build (Release) and run the whole CTest suite
#   make test-asan  the same under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/);
#                   full malloc stacks and Open MPI plugins kept loaded, so that tests/lsan.supp
#                   can tell third-party globals from project leaks
#   make build      configure and build only
#   make install    the programs (taca, taca-featured, taca-train, taca-stack), the .proto files and
#                   the docs under PREFIX [/usr/local] (staged under DESTDIR when set)
#   make bench      benchmarks side by side with PyTorch (needs a quiet machine)
#                   (ViT forward; bench/run-train.sh, bench/run-aft.sh etc. run by hand)
JOBS ?= 2
BUILD ?= build
PREFIX ?= /usr/local
DESTDIR ?=

BUDGET ?= 30

.PHONY: deps deps-reference build install demo ablations test build-asan test-asan bench fixtures clean

deps:
	deploy/install-deps.sh

deps-reference:
	deploy/install-deps.sh --reference

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

install: build
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

demo: build
	deploy/demo.sh demo-out

ablations: build
	deploy/ablations.sh ablations-out --budget $(BUDGET)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

build-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTACA_SANITIZE=ON
	cmake --build build-asan -j$(JOBS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  OMPI_MCA_mca_base_component_disable_dlclose=1 \
	  ctest --test-dir build-asan --output-on-failure -j$(JOBS)

bench: build deps-reference
	bench/run-vit.sh ViT-B-16 8

fixtures: deps-reference
	for g in tests/fixtures/gen_*.py; do /usr/bin/python3 $$g || exit 1; done

clean:
	rm -rf $(BUILD) build-asan
