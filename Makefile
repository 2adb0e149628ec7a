# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-tools lock lint format typecheck clean bench load screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# requirements.txt is the service's lock (hashes, every transitive package): installed in
# pip's hash-checking mode, then the tools and the embedded node binary beside it.
$(STAMP): $(BIN)/python requirements.txt requirements-embedded.txt requirements-dev.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## lock: recompile requirements.txt (the service's runtime with the postgres extra, hashed)
## from pyproject.toml's ranges with uv; tests/unit/test_packaging.py checks they agree
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra postgres --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
		--upgrade -o requirements.txt

## run: serve on :8000; with REDIS_NODES unset, on embedded nodes at 127.0.0.1:7070-7072
## (--embedded-ok: intended here, so serve logs them at INFO, not as a WARNING)
run: $(STAMP)
	$(BIN)/python -m app serve --embedded-ok --host $${HOST:-127.0.0.1} --port $${PORT:-8000} --workers $${WORKERS:-1}

## test: lint, type-check, then the whole suite against real node and server processes
## (with apt-get, installs what is missing: redis-tools for the Redis Cluster tests' redis-cli,
## chromium and chromium-driver for the browser tests, which are skipped without them, and
## prometheus for promtool, which lints /metrics and tests the alert rules, skipped without it).
## Two pytest workers, a test file each at a time (every test starts its own processes and
## ports, and session fixtures are per worker): half the wall time on 2 cores. The tests that
## move nodes under load while reading (marked `serial`) then run alone, as they were written.
test: $(STAMP) lint typecheck test-tools
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -m serial

# $(call apt_install,commands,packages,what happens without them[,then]): install the Debian
# packages when one of the commands is missing and apt-get is there (apt-get update first if
# need be); `then` runs once they are installed.
define apt_install
	@{ $(foreach command,$(1),command -v $(command) >/dev/null 2>&1 &&) true; } || \
		! command -v apt-get >/dev/null 2>&1 || \
		{ { apt-get install -y -qq $(2) >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(2) >/dev/null 2>&1; }; } && \
		{ $(or $(4),true); }; } || \
		echo "$(3)"
endef

# Debian's prometheus package (wanted for promtool alone) enables a Prometheus server and starts
# it where services may start (systemd, or sysvinit without a policy-rc.d that says no): stop it
# and keep it from starting at boot, so nothing holds :9090 (the compose `monitoring` profile's).
stop_prometheus_server := { systemctl disable --now prometheus.service || \
	{ service prometheus stop; update-rc.d prometheus disable; }; } >/dev/null 2>&1 || true

test-tools:
	$(call apt_install,redis-cli,redis-tools,test: could not install redis-tools; the Redis Cluster tests need redis-cli)
	$(call apt_install,chromium chromedriver,chromium chromium-driver,test: could not install chromium and chromium-driver; the browser tests will be skipped)
	$(call apt_install,promtool,--no-install-recommends prometheus,test: could not install prometheus; the promtool tests will be skipped,$(stop_prometheus_server))

lint: $(STAMP)
	$(BIN)/ruff check visit_counter app tests bench examples
	$(BIN)/ruff format --check visit_counter app tests bench examples

format: $(STAMP)
	$(BIN)/ruff format visit_counter app tests bench
	$(BIN)/ruff check --fix visit_counter app tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: the side-by-side benchmark of issue 4, then 1,000,000 pages moved from 3 nodes to 4
## under POST load (issue 10), then scenario (b) on a Redis Cluster (3 primaries + 3 replicas)
## beside the ring (issue 11) -> docs/benchmarks.md and .png (about 8 min). One part only:
## BENCH_ARGS="--only cluster" (or move, or scenarios): the move's or the cluster's part of an
## existing report is replaced, the rest kept; a smaller move: BENCH_ARGS="--move-pages 100000"
## (installs wrk and redis-tools with apt-get when missing and possible; without wrk a slower
## Python load generator runs, without redis-cli the cluster section cannot)
bench: $(STAMP) requirements-bench.txt
	$(call apt_install,wrk,wrk,bench: could not install wrk; the Python load generator will run)
	$(call apt_install,redis-cli,redis-tools,bench: could not install redis-tools; the cluster section needs redis-cli)
	$(BIN)/pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## screenshots: the README's docs/screenshot-snippet.png and docs/screenshot-badge.png, taken
## of real pages in headless Chromium by their test (tests/browser/test_screenshots.py)
screenshots: $(STAMP) test-tools
	DOCS_SCREENSHOTS_DIR=$(CURDIR)/docs $(BIN)/python -m pytest -q tests/browser/test_screenshots.py

## load: against the service `make run` serves (start it first, in another shell): the seed's
## curl load test (10 concurrent POSTs to page1), then `python -m app load` (loopback only)
LOAD_URL ?= http://localhost:8000
LOAD_ARGS ?= --requests 2000 --pages 20 --concurrency 10
load: $(STAMP)
	@curl -sf -o /dev/null $(LOAD_URL)/status || \
		{ echo "load: no service answers at $(LOAD_URL); start it with 'make run'"; exit 1; }
	@echo "seed load test: 10 concurrent POSTs to page1 (HTTP status of each):"
	@for i in 1 2 3 4 5 6 7 8 9 10; do \
		curl -s -o /dev/null -w "%{http_code} " -X POST $(LOAD_URL)/api/v1/counter/visit/page1 & \
	done; wait; echo
	@echo "page1 now reads: $$(curl -s $(LOAD_URL)/api/v1/counter/visits/page1)"
	$(BIN)/python -m app load --url $(LOAD_URL) $(LOAD_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
