# pdx: two set-up commands, one build profile.
#
#   make demo   build, then run the cross-province settlement scenario on real nodes
#   make demo-realtime   the same month born online: calls at the counter, daily uploads, disputes
#   make test   build, then run the whole test suite
#
# Everything (tests, demo, benchmarks) uses the release profile, so `make test`
# after `make demo` rebuilds nothing. Missing system packages are installed.

CARGO      ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BIN        := $(TARGET_DIR)/release
DEMO_DIR   ?= $(CURDIR)/demo-net
DEMO_ARGS  ?=

.PHONY: all deps build test demo demo-realtime bench lint fmt fuzz-build clean

all: build

# librocksdb-sys needs libclang at build time (bindgen).
deps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so'; then \
	  echo "installing libclang-dev (needed by librocksdb-sys)"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev; \
	  else \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev; \
	  fi; \
	fi
	@# The README's gateway example (run by a test) uses curl.
	@if ! command -v curl >/dev/null 2>&1; then \
	  echo "installing curl (used by the README's gateway example)"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; \
	  else \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; \
	  fi; \
	fi

build: deps
	$(CARGO) build --release --workspace --bins

test: build
	$(CARGO) test --release --workspace

demo: build
	rm -rf $(DEMO_DIR)
	$(BIN)/pdx-testnet scenario settlement --provinces 5 --records 100000 $(DEMO_ARGS) --dir $(DEMO_DIR)

demo-realtime: build
	rm -rf $(DEMO_DIR)-realtime
	$(BIN)/pdx-testnet scenario realtime --provinces 5 --patients 2500 --days 5 --rate 400 $(DEMO_ARGS) --dir $(DEMO_DIR)-realtime

bench: build
	bash docs/bench/run.sh

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Needs a nightly toolchain and cargo-fuzz; CI runs the same entry points as tests.
fuzz-build:
	cd fuzz && $(CARGO) +nightly fuzz build

clean:
	$(CARGO) clean
