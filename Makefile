# Two commands on a fresh machine: `make train` and `make test`. Both set up
# everything they need: Debian packages (when root), the .venv, the package.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/fmnist_dnn.yaml
RUN    ?= runs/$(basename $(notdir $(CONFIG)))
BOARD  ?= nano33ble
PORT   ?=
# Debian packages: Fashion-MNIST, the Arm toolchain and QEMU (firmware, tests, bench),
# g++ (host simulator, native firmware, QEMU plugin), espeak-ng + sox (the offline
# synthetic_keywords data set), util-linux (unshare: the read-only/full-disk tests).
APT_PACKAGES := dataset-fashion-mnist gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm \
                g++ espeak-ng sox util-linux

.PHONY: setup apt venv train export test lint bench bench-latency bench-memory flash monitor clean

setup: apt $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else \
	  echo "note: missing Debian packages:$$missing"; \
	  echo "      install them with: sudo apt-get install$$missing (data then downloads instead)"; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

train: setup
	$(BIN)/reds train --config $(CONFIG) --out $(RUN)
	$(BIN)/reds export $(RUN)

export: setup
	$(BIN)/reds export $(RUN)

test: setup
	$(BIN)/ruff check reds_tf tests firmware examples
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check reds_tf tests firmware examples
	$(BIN)/ruff format --check reds_tf tests firmware examples

bench: setup
	@test -f $(RUN)/export/manifest.json || $(MAKE) train
	$(BIN)/reds bench $(RUN) --markdown BENCHMARKS.md

# Activation memory (BENCHMARKS.md, "Activation memory"): each submodel's arena
# before/after the in-place planner against TensorFlow Lite Micro's, for the
# default FC model, DS-CNN-S and MobileNetV1-0.25 (random weights); a few minutes.
bench-memory: setup
	$(BIN)/python examples/memory_bench.py --out runs/memory_bench.json --markdown

# Latency budgets (BENCHMARKS.md): DS-CNN-S on CIFAR-10 trained briefly with MAC
# budgets, then from the same base model with latency budgets (the knapsack on
# estimated Cortex-M4 cycles); both exported and benched. About 20 min on 2 cores.
LAT_ARGS ?= --epochs 3 --finetune-epochs 1 --limit 10000
bench-latency: setup
	$(BIN)/reds train --config configs/cifar10_dscnn.yaml --out runs/c10_macs $(LAT_ARGS)
	rm -rf runs/c10_latency && cp -r runs/c10_macs runs/c10_latency
	rm -rf runs/c10_latency/export runs/c10_latency/bench.json runs/c10_latency/.bench
	$(BIN)/reds train --config configs/cifar10_dscnn_latency.yaml --out runs/c10_latency $(LAT_ARGS)
	$(BIN)/reds export runs/c10_macs
	$(BIN)/reds export runs/c10_latency
	$(BIN)/reds bench runs/c10_macs --markdown BENCHMARKS.md
	$(BIN)/reds bench runs/c10_latency --markdown BENCHMARKS.md

flash: setup
	@test -f $(RUN)/export/manifest.json || $(MAKE) train
	@if [ "$(BOARD)" = nano33ble ]; then \
	  $(BIN)/reds firmware $(RUN) --board $(BOARD) --upload; \
	else \
	  $(BIN)/reds firmware $(RUN) --board $(BOARD) --serve; \
	fi

monitor: setup
	@test -n "$(PORT)" || { echo "usage: make monitor PORT=/dev/ttyACM0"; exit 2; }
	$(BIN)/reds monitor --port $(PORT)

clean:
	rm -rf build firmware/.pio firmware/.pio-core firmware/lib/reds_model .pytest_cache
