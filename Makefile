# holdfast — see README.md. Every target installs what it needs.
SHELL := /bin/bash
GO ?= go
CACHE := $(CURDIR)/.cache
CNI_PLUGINS_VERSION := v1.9.1
CNI_PLUGINS_DIR := $(CACHE)/cni-plugins-$(CNI_PLUGINS_VERSION)
# The flannel CNI plugin kube-flannel installs lived in
# containernetworking/plugins until v0.9.1 (flannel-io/cni-plugin, its home
# since, is not on the module proxy). test/harness builds the same pin.
FLANNEL_CNI_VERSION := v0.9.1
FLANNEL_CNI_DIR := $(CACHE)/flannel-cni-$(FLANNEL_CNI_VERSION)
export HOLDFAST_CACHE := $(CACHE)

# Debian packages the tests and the demo run: the container runtime, the
# network tools, busybox for pod images, etcd for flanneld's backend, and
# systemd for `systemd-analyze verify` of the installed units.
# gcc and libc6-dev: flanneld (built from its module for the tests) has a
# cgo backend on amd64. libssl-dev: the TPM 2.0 reference simulator
# (go-tpm-tools, cgo) that cri-shim/seal's TPM test seals the node key to.
# strace: plugins/holdfast's fsync budget test.
DEB_PACKAGES := containerd runc iptables nftables iproute2 busybox-static conntrack \
	etcd-server etcd-client systemd util-linux procps kmod ca-certificates git \
	gcc libc6-dev libssl-dev strace

GO_TEST_FLAGS ?= -count=1 -timeout 40m
# package:benchmark-regexp:benchtime ("-" = go test's default). Iteration
# counts fit each benchmark: CNI ADD+DEL and proxy calls want many samples
# for p50/p99; recovery and relaunch runs take seconds each.
BENCH_SPECS ?= ./plugins/holdfast:.:100x ./snapshot:.:10x ./cri-shim:Proxy:1000x \
	./cri-shim:Relaunch:3x ./cri-shim/volumes:Restore:200x ./dns:.:- ./health/sim:.:1x ./test/reboot:.:2x \
	./test/footprint:.:1x

.PHONY: all deps go-check build cni-plugins flannel-cni test unit bench demo lint clean image require-root fuzz e2e-tools e2e

all: build

require-root:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make: this target needs root (apt-get, network namespaces, containerd). Run it as root, e.g. 'sudo make $(MAKECMDGOALS)'." >&2; exit 1; fi

go-check:
	@command -v $(GO) >/dev/null || { echo "make: Go is not on PATH; install Go >= 1.26, as go.mod says (this machine image has it in /usr/local/go)" >&2; exit 1; }

# Idempotent: installs only what is missing, and is silent when nothing is.
deps: require-root go-check
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi
	@$(GO) mod download

# Every shipped binary is static, without the symbol table and DWARF
# (-s -w), with module-relative paths (-trimpath): the plugins are exec'd on
# every pod's ADD and DEL, and holdfastd is mapped into every daemon
# (docs/cni.md, docs/footprint.md). test/harness builds them the same way
# (harness.BuildFlags), so tests and benchmarks measure the binaries as shipped.
# -tags grpcnotrace leaves out grpc's /debug/requests tracing (nothing in
# holdfast turns it on): it links html/template, whose executor makes the
# linker keep every exported method of every linked type, 20 MB of holdfastd
# (docs/footprint.md).
BUILD_FLAGS := -trimpath -tags grpcnotrace -ldflags='-s -w'

build: go-check
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o bin/holdfast ./plugins/holdfast
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o bin/holdfast-ipam ./plugins/holdfast-ipam
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o bin/holdfastd ./cmd/holdfastd

# Reference CNI plugins at a pinned version, built from source into the
# git-ignored cache (never whatever the machine happens to have).
cni-plugins: go-check
	@if [ ! -x $(CNI_PLUGINS_DIR)/portmap ]; then \
		echo "building containernetworking/plugins $(CNI_PLUGINS_VERSION) into $(CNI_PLUGINS_DIR)"; \
		cd /tmp && GOBIN=$(CNI_PLUGINS_DIR) CGO_ENABLED=0 GOFLAGS=-mod=mod $(GO) install \
			github.com/containernetworking/plugins/plugins/main/bridge@$(CNI_PLUGINS_VERSION) \
			github.com/containernetworking/plugins/plugins/main/loopback@$(CNI_PLUGINS_VERSION) \
			github.com/containernetworking/plugins/plugins/meta/portmap@$(CNI_PLUGINS_VERSION) \
			github.com/containernetworking/plugins/plugins/ipam/host-local@$(CNI_PLUGINS_VERSION); \
	fi

flannel-cni: go-check
	@if [ ! -x $(FLANNEL_CNI_DIR)/flannel ]; then \
		echo "building the flannel CNI plugin (containernetworking/plugins $(FLANNEL_CNI_VERSION)) into $(FLANNEL_CNI_DIR)"; \
		cd /tmp && GOBIN=$(FLANNEL_CNI_DIR) CGO_ENABLED=0 GOFLAGS=-mod=mod $(GO) install \
			github.com/containernetworking/plugins/plugins/meta/flannel@$(FLANNEL_CNI_VERSION); \
	fi

# The packages whose integration tests run containerd (CRI shim, reboot
# recovery, install, the harness itself, critest through the shim): `make
# test` runs them on Debian's containerd 1.6 (with every other package),
# then again on each of CONTAINERD_AGAIN (test/harness: HOLDFAST_CONTAINERD).
CONTAINERD_PKGS := ./cri-shim ./test/reboot ./install ./test/harness ./test/critest
CONTAINERD_AGAIN ?= 2.1
# The e2e runs on containerd 2.x, what current distributions install.
E2E_CONTAINERD ?= 2.1

# Unit and integration tests: integration tests need root and create (and
# always remove) their own network namespaces.
# Every test: the packages' unit and netns tests (containerd 1.6), the
# containerd packages again on 2.x, then the full-cluster e2e (stock
# Kubernetes on a three-node site, containerd 2.x), one after the other so
# the e2e does not share the machine with the netns tests.
test: require-root deps build cni-plugins flannel-cni e2e-tools
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e
	$(GO) test $(GO_TEST_FLAGS) ./...
	@set -e; for v in $(CONTAINERD_AGAIN); do \
		echo "== containerd $$v: $(CONTAINERD_PKGS)"; \
		HOLDFAST_CONTAINERD=$$v $(GO) test $(GO_TEST_FLAGS) $(CONTAINERD_PKGS); done
	HOLDFAST_CONTAINERD=$(E2E_CONTAINERD) $(E2E_TEST)

unit: go-check
	$(GO) test -count=1 -short ./internal/... ./test/benchreport/...

# Each holdfast figure beside its baseline measured in the same run.
bench: require-root deps build cni-plugins e2e-tools
	@mkdir -p _output; : > _output/bench.txt
	@set -o pipefail; for spec in $(BENCH_SPECS); do \
		IFS=: read -r pkg re bt <<< "$$spec"; flags="-run ^$$ -bench $$re -timeout 40m"; \
		[ "$$bt" != - ] && flags="$$flags -benchtime $$bt"; \
		echo "== go test $$flags $$pkg"; $(GO) test $$flags $$pkg | tee -a _output/bench.txt || exit 1; \
	done
	@echo; echo "=== holdfast vs baseline (same run) ==="
	@$(GO) run ./test/benchreport < _output/bench.txt | tee _output/bench-report.txt

# Short fuzzing of every Fuzz target (the seed corpora also run in `make test`).
FUZZTIME ?= 10s
fuzz: go-check
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; done

demo: require-root deps build cni-plugins
	@if [ -x test/scripts/demo.sh ]; then test/scripts/demo.sh $(DEMO_ARGS); \
	else echo "make demo: not yet — the offline reboot demo lands with the reboot-recovery work (issue 6)."; fi

# Everything the tests build from upstream modules into .cache (test/tools/
# build.sh): Kubernetes, flanneld, CoreDNS, containerd 2.x, critest.
e2e-tools: go-check
	test/tools/build.sh

E2E_TEST = $(GO) test -tags e2e -count=1 -timeout 30m -v -run TestE2E ./test/e2e

e2e: require-root deps build cni-plugins flannel-cni e2e-tools
	HOLDFAST_CONTAINERD=$(E2E_CONTAINERD) $(E2E_TEST)

# The holdfastd image, built by a build tool (install/cmd/mkimage), not by
# holdfastd: the image builder is code a node never runs.
image: go-check build
	$(GO) run ./install/cmd/mkimage --bin-dir bin --out _output/holdfastd-image.tar

# Linters at pinned versions, installed from the module proxy into the
# git-ignored cache (never whatever the machine has on PATH).
STATICCHECK_VERSION := v0.8.2
DEADCODE_VERSION := v0.52.0
LINT_BIN := $(CACHE)/lint-bin
STATICCHECK := $(LINT_BIN)/staticcheck-$(STATICCHECK_VERSION)
DEADCODE := $(LINT_BIN)/deadcode-$(DEADCODE_VERSION)

$(STATICCHECK): | go-check
	@mkdir -p $(LINT_BIN)/staticcheck.tmp
	cd /tmp && GOBIN=$(LINT_BIN)/staticcheck.tmp GOFLAGS=-mod=mod $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(LINT_BIN)/staticcheck.tmp/staticcheck $@ && rmdir $(LINT_BIN)/staticcheck.tmp

$(DEADCODE): | go-check
	@mkdir -p $(LINT_BIN)/deadcode.tmp
	cd /tmp && GOBIN=$(LINT_BIN)/deadcode.tmp GOFLAGS=-mod=mod $(GO) install golang.org/x/tools/cmd/deadcode@$(DEADCODE_VERSION)
	mv $(LINT_BIN)/deadcode.tmp/deadcode $@ && rmdir $(LINT_BIN)/deadcode.tmp

# gofmt, go vet and staticcheck (also with the e2e tag), and deadcode with
# -test -tags e2e: a function only tests (the e2e too) call counts as used;
# one nothing calls fails.
lint: go-check $(STATICCHECK) $(DEADCODE)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./test/e2e
	@out=$$($(DEADCODE) -test -tags e2e ./...); if [ -n "$$out" ]; then echo "deadcode: unreachable functions:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin _output
	@echo "kept $(CACHE) (built tools and images); remove it by hand for a cold start"
