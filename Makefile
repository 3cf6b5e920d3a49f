# bgpnet: `make demo` and `make test` work on a fresh Debian 12 machine as root; each installs what it needs.
PY := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: bootstrap bootstrap-vm demo demo-down test test-unit test-integration test-kernel bench lint

bootstrap:
	@scripts/bootstrap.sh

bootstrap-vm:
	@scripts/bootstrap.sh --vm

demo: bootstrap
	$(PY) -m bgpnet.lab.demo

demo-down:
	-$(PY) -m bgpnet lab down demo

lint: bootstrap
	.venv/bin/ruff check .

# Every tier; the VM tier boots Debian's stock kernel under qemu (software emulation) for IPIP.
test: bootstrap-vm lint
	$(PYTEST) -m unit -q
	$(PYTEST) -m integration -q
	$(PYTEST) -m kernel -q

test-unit: bootstrap
	$(PYTEST) -m unit -q

test-integration: bootstrap
	$(PYTEST) -m integration -q

test-kernel: bootstrap-vm
	$(PYTEST) -m kernel -q

bench: bootstrap
	$(PY) -m bench.run_all
