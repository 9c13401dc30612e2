# hmls — make targets. Everything runs with the machine's python3; `make deps` installs the
# package in editable mode with its test tools, and the local environment (devenv/, its own
# package: the tests, benchmarks, soak and demo run on it; the hmls wheel and image do not carry it).
PYTHON ?= python3
DEMO_DIR ?= .hmls-env/demo

.PHONY: deps binaries lint typecheck unit test demo demo-down clean fuzz-rollout image image-test

deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]' -e ./devenv

# kube-apiserver, etcd, the tests' kstatus client and helm, built from the Go module proxy
# into ~/.cache/hmls/bin (once)
binaries:
	$(PYTHON) -c "from hmls_devenv import binaries; binaries.ensure_all()"

lint:
	$(PYTHON) -m ruff check hmls devenv tests scripts
	$(PYTHON) -m mypy

unit:
	$(PYTHON) -m pytest tests/unit -q

# the README's test command: lint, types, unit tests and the real-API-server tests
test: deps binaries lint
	$(PYTHON) -m pytest -q -ra

# the controller image from the unmodified Dockerfile with podman, no Docker daemon; state in
# .hmls-env/podman (devenv/hmls_devenv/image.py; needs Debian's podman, runc and mmdebstrap)
image: deps
	$(PYTHON) -m hmls_devenv.image build

# built cold then cached, and run as in a cluster against the local hub until the seed sample
# is Ready (tests/image/); figures in .hmls-env/podman/figures.json
image-test: deps binaries
	HMLS_TEST_ENV_DIR=$(CURDIR)/.hmls-env/image-test $(PYTHON) -m pytest tests/image -q -ra -p no:cacheprovider
	cat .hmls-env/podman/figures.json

# the rollout state machine's stateful property test at random, for longer than make test
# runs it (FUZZ_EXAMPLES sequences of up to 50 steps; prints hypothesis' statistics)
FUZZ_EXAMPLES ?= 2000
fuzz-rollout: deps
	HMLS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTHON) -m pytest tests/unit/test_rollout_machine.py \
		-q -p no:cacheprovider --hypothesis-show-statistics

demo: deps binaries
	$(PYTHON) scripts/demo.py --dir $(DEMO_DIR) $(DEMO_FLAGS)

demo-down:
	$(PYTHON) -m hmls_devenv down --dir $(DEMO_DIR)

clean: demo-down
	rm -rf .hmls-env .pytest_cache .mypy_cache .ruff_cache

# benchmarks: one command line, scripts/bench/bench.py suite|scale|ab. The suite against real
# local API servers (scripts/bench/run.py) writes docs/benchmarks/
# full.{json,md,png} (bench, < 20 min) or quick.* (bench-quick, < 6 min with the rtt phase). BENCH_FLAGS="--dir D"
# bench-ab: before/after of the controller in one run (bench.py ab: scripts/bench/ab.py; AB_FLAGS="--base REV")
.PHONY: bench bench-quick bench-ab
bench: deps binaries
	$(PYTHON) -m pip install --quiet --disable-pip-version-check matplotlib
	$(PYTHON) scripts/bench/bench.py suite $(BENCH_FLAGS)

bench-quick: deps binaries
	$(PYTHON) -m pip install --quiet --disable-pip-version-check matplotlib
	$(PYTHON) scripts/bench/bench.py suite --quick $(BENCH_FLAGS)

bench-ab: deps binaries
	$(PYTHON) -m pip install --quiet --disable-pip-version-check matplotlib
	$(PYTHON) scripts/bench/bench.py ab $(AB_FLAGS)

# fleet scale (bench.py scale: scripts/bench/fleet.py): 1k/3k/10k CRs x 4/16 spokes against the request floor,
# idle window and restart at the largest case run; writes docs/benchmarks/scale.{json,md,png}.
# SCALE_FLAGS="--budget S --cases 1000x4,3000x16"
.PHONY: bench-scale
bench-scale: deps binaries
	$(PYTHON) -m pip install --quiet --disable-pip-version-check matplotlib
	$(PYTHON) scripts/bench/bench.py scale $(SCALE_FLAGS)

# chaos soak (scripts/soak/soak.py): hub, 4 spokes behind fault proxies, ingress, 2 leader-elected
# replicas, ~100 HyperMLServices, random faults, invariants checked all along; fails on any
# violation. soak: 30 minutes, writes docs/soak/full.*; soak-quick (CI): under 4 minutes.
# SOAK_FLAGS="--seed N" replays a run.
.PHONY: soak soak-quick
soak: deps binaries
	PYTHONPATH=scripts/bench $(PYTHON) scripts/soak/soak.py $(SOAK_FLAGS)

soak-quick: deps binaries
	PYTHONPATH=scripts/bench $(PYTHON) scripts/soak/soak.py --quick --out .hmls-env/soak-report $(SOAK_FLAGS)
