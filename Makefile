# corral -- the two commands of the README, and a few more.
#   make demo   install what is missing, build, run aggregator + agent + demo workloads on this host
#   make test   install what is missing, build (normal and ASan+UBSan), run every test with ctest
#   make fuzz   build the libFuzzer harnesses with clang and run each for FUZZ_SECONDS
# SPDX-License-Identifier: Apache-2.0

BUILD ?= build
ASAN ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS ?= $(shell nproc)

.PHONY: all deps build test demo fuzz clean

all: build

deps:
	@./scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCORRAL_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# One ctest run covers both trees: the normal tree registers the sanitizer tree's tests as asan/*.
test: deps
	@cmake -S . -B $(ASAN) -DCORRAL_WERROR=ON -DCORRAL_SANITIZE=ON >/dev/null
	@cmake -S . -B $(BUILD) -DCORRAL_WERROR=ON -DCORRAL_ASAN_TREE=$(CURDIR)/$(ASAN) >/dev/null
	@cmake --build $(ASAN) -j$(JOBS)
	@cmake --build $(BUILD) -j$(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

demo: build
	@./scripts/demo.sh $(BUILD)

fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCORRAL_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS)
	@for f in $(FUZZ_BUILD)/fuzz/*; do \
		n=$$(basename $$f); mkdir -p $(FUZZ_BUILD)/corpus/$$n; \
		echo "== $$n for $(FUZZ_SECONDS) s"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$n tests/fuzz/corpus/$$n || exit 1; \
	done

clean:
	rm -rf $(BUILD) $(ASAN) $(FUZZ_BUILD)
