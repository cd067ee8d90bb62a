# lilcluster — diskless cluster appliance. `make help` lists the targets.
SHELL := /bin/bash
ESBUILD := node_modules/.bin/esbuild
NODE ?= node
DIST := dist
# Bundles for the host (dispatcher, CLI, build tools) keep node_modules external;
# the agent bundle is self-contained because it ships inside the RAM image.
HOST_FLAGS := --bundle --platform=node --format=esm --target=node20 --packages=external --sourcemap=inline --log-level=warning \
  --banner:js='\#!/usr/bin/env node'
AGENT_FLAGS := --bundle --platform=node --format=esm --target=node20 --log-level=warning --legal-comments=none \
  --banner:js=$$'\#!/usr/bin/env node\nimport { createRequire as __cr } from "node:module"; const require = __cr(import.meta.url);'

SOURCES := $(shell find dispatcher node-agent image pxe -name '*.ts' -o -name '*.sh' -o -name '*.ipxe' -o -name '*.html' -o -name '*.css' -o -name '*.js' 2>/dev/null)

.PHONY: help build image pxe test test-unit test-integration test-e2e typecheck bench bench-image bench-boot bench-dhcp bench-dispatch bench-operator demo demo-stop install clean

help:
	@echo "make demo        boot a virtual diskless cluster (QEMU) and run a sample job"
	@echo "make test        typecheck and run every test tier (unit, integration, e2e)"
	@echo "make image       build dist/image/{vmlinuz,initrd.img,manifest.json}"
	@echo "make build       bundle dispatcher, dispatcherctl and node-agent into dist/bin"
	@echo "make pxe         copy iPXE first-stage binaries into pxe/bin"
	@echo "make bench       run every benchmark (bench-image, bench-boot, bench-dispatch, bench-operator)"
	@echo "make install     install the dispatcher and its systemd unit on this host"

build: $(DIST)/bin/dispatcher.mjs $(DIST)/bin/dispatcherctl.mjs $(DIST)/bin/node-agent.mjs $(DIST)/bench/sim-agents.mjs

$(DIST)/bin/dispatcher.mjs: $(SOURCES) package.json
	$(ESBUILD) dispatcher/src/main.ts $(HOST_FLAGS) --outfile=$@
	@chmod +x $@
$(DIST)/bin/dispatcherctl.mjs: $(SOURCES) package.json
	$(ESBUILD) dispatcher/src/ctl/main.ts $(HOST_FLAGS) --outfile=$@
	@chmod +x $@
$(DIST)/bin/node-agent.mjs: $(SOURCES) package.json
	$(ESBUILD) node-agent/src/main.ts $(AGENT_FLAGS) --outfile=$@
	@chmod +x $@
# Simulated agents (the real protocol codec) for the dispatcher benchmarks.
$(DIST)/bench/sim-agents.mjs: $(SOURCES) bench/sim-agents.ts package.json
	$(ESBUILD) bench/sim-agents.ts $(HOST_FLAGS) --outfile=$@
$(DIST)/tools/build-image.mjs: $(SOURCES) package.json
	$(ESBUILD) image/src/main.ts $(HOST_FLAGS) --outfile=$@

image: $(DIST)/bin/node-agent.mjs $(DIST)/tools/build-image.mjs
	$(NODE) $(DIST)/tools/build-image.mjs

pxe:
	bash pxe/fetch-ipxe.sh

typecheck:
	node_modules/.bin/tsc --noEmit -p .

# The e2e tier boots dist/image; `make image` is incremental (it stops early when nothing changed).
test: typecheck build pxe image
	node_modules/.bin/vitest run

test-unit: build
	node_modules/.bin/vitest run test/unit
test-integration: build
	node_modules/.bin/vitest run test/integration
test-e2e: build pxe image
	node_modules/.bin/vitest run test/e2e

bench: bench-image bench-boot bench-dispatch bench-operator
bench-image: image
	$(ESBUILD) bench/image.ts $(HOST_FLAGS) --outfile=$(DIST)/bench/image.mjs
	$(NODE) $(DIST)/bench/image.mjs
bench-boot: image pxe
	bash bench/boot.sh
# The DHCP lease rate alone: perfdhcp against the dispatcher and Kea (part of bench-boot too).
bench-dhcp: build
	bash bench/dhcp-rate.sh
bench-dispatch: build
	bash bench/dispatch.sh
bench-operator: build
	bash bench/operator.sh

demo: build
	bash test/demo/demo.sh
demo-stop:
	bash test/demo/demo.sh stop

install: build
	bash dispatcher/systemd/install.sh

clean:
	rm -rf $(DIST)
