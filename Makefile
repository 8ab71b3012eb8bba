# shoal — see README.md. `make run` starts a single node with data in ./data;
# `make test` runs go vet and the whole suite with the race detector.

GO        ?= go
BIN       := bin/shoal
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/shoaldb/shoal/internal/buildinfo.Version=$(VERSION)
PROTO     := api/shoal/v1/shoal.proto
TESTFLAGS ?=

.PHONY: all build run test test-race test-short lint verify proto bench bench-go soak upgrade-test clean image docker-test docker-chaos

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shoal

run: build
	./$(BIN) server --data ./data --console-data

# The suite CI runs: vet, then every test with the race detector. The multi-node tests that
# call t.Parallel spend most of their time waiting (elections, gossip, placement rounds: the
# node package's use about a quarter of one core run one at a time), so two run at once; four
# halve the time again on an idle machine, but starved a loaded one into elections that tests
# of a quiet cluster do not expect.
TEST_PARALLEL ?= 2
test:
	$(GO) vet ./...
	$(GO) test -race -timeout 14m -parallel $(TEST_PARALLEL) $(TESTFLAGS) ./...

test-race: test

# The fault tests again and again (kill -9 under load, failover, partitions, lagging replicas,
# dead-node replacement, hung leaders), each run with a new seed; bounded by SOAK_TIMEOUT.
SOAK_COUNT   ?= 10
SOAK_TIMEOUT ?= 60m
soak: build
	$(GO) test -race -count $(SOAK_COUNT) -timeout $(SOAK_TIMEOUT) \
	  -run 'Kill9|Failover|Partition|Lagging|QuorumLoss|ReplacesDeadNode|HungLeader' ./internal/e2e/ ./node/

# A rolling upgrade of three real servers from UPGRADE_FROM (a commit; default the last one
# before shard formats) to this tree, under load, with deletes (internal/e2e TestRollingUpgrade).
# UPGRADE_FROM_FORMAT is that commit's highest shard format: 1 before formats, 2 from 6d2c4c2
# (shard format 2) to b2c2cec, 3 from then to ecca8c1, 4 from then to 52d00ff (truncation), 5 from
# then to 4c71bda (truncation marks), 6 from then to ee81b40 (retention policies), 7 since (event
# IDs forgotten with their events), e.g.
# make upgrade-test UPGRADE_FROM=b2c2cec UPGRADE_FROM_FORMAT=2
# or make upgrade-test UPGRADE_FROM=ee81b40 UPGRADE_FROM_FORMAT=6.
# Needs the repository's history.
UPGRADE_FROM ?= 7bcec11
UPGRADE_FROM_FORMAT ?= 1
upgrade-test:
	rm -rf /tmp/shoal-upgrade-from && mkdir -p /tmp/shoal-upgrade-from
	git archive $(UPGRADE_FROM) | tar -x -C /tmp/shoal-upgrade-from
	cd /tmp/shoal-upgrade-from && $(GO) build -o /tmp/shoal-upgrade-from/shoal-old ./cmd/shoal
	SHOAL_E2E_OLD_BIN=/tmp/shoal-upgrade-from/shoal-old SHOAL_E2E_OLD_FORMAT=$(UPGRADE_FROM_FORMAT) $(GO) test -count 1 -v -timeout 10m -run TestRollingUpgrade ./internal/e2e/

# The container image (deploy/Dockerfile): the static binary FROM scratch, tagged $(IMAGE).
IMAGE ?= shoal:dev
image: build
	rm -rf bin/image && mkdir -p -m 0700 bin/image/data && cp $(BIN) bin/image/shoal
	docker build -q -f deploy/Dockerfile -t $(IMAGE) bin/image

# Three servers in containers on a private Docker network (internal/e2e docker_test.go):
# partitions cut with iptables in the containers' network namespaces under load, and the
# shipped deploy/docker-compose.yml brought up and used. Needs Docker and root (nsenter).
docker-test:
	SHOAL_DOCKER=1 $(GO) test -count 1 -v -timeout 15m -run 'TestDocker' ./internal/e2e/

# The same containers under a seeded schedule of faults, one at a time, for CHAOS_DURATION:
# cuts, one-way drops, SIGKILL and restart, pause, a change of the replication factor and back
# (TestDockerChaos; SHOAL_E2E_SEED replays).
# CHAOS_NODES=4 (or more) adds faults longer than a 6 s --dead-after: replicas replaced while
# a node is away, placed back when it returns.
CHAOS_DURATION ?= 3m
CHAOS_NODES    ?= 3
docker-chaos:
	SHOAL_DOCKER=1 SHOAL_DOCKER_CHAOS=$(CHAOS_DURATION) SHOAL_DOCKER_CHAOS_NODES=$(CHAOS_NODES) \
	  $(GO) test -count 1 -v -timeout 30m -run 'TestDockerChaos' ./internal/e2e/

test-short:
	$(GO) test -short ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

verify: lint
	$(GO) mod tidy -diff
	cd bench/peers && $(GO) mod tidy -diff
	$(MAKE) proto
	git diff --exit-code -- api/

# The generated code names the generators' versions: protoc 3.21.12 (Debian's
# protobuf-compiler) and the two plugins pinned here, installed into bin/.
PROTOC_GEN_GO = google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC = google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
proto:
	@command -v protoc >/dev/null || { echo "make proto needs protoc 3.21.12 (apt-get install protobuf-compiler)"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/bin $(GO) install $(PROTOC_GEN_GO_GRPC)
	protoc --plugin=protoc-gen-go=bin/protoc-gen-go --plugin=protoc-gen-go-grpc=bin/protoc-gen-go-grpc \
	  --proto_path=api --go_out=api --go_opt=paths=source_relative \
	  --go-grpc_out=api --go-grpc_opt=paths=source_relative $(PROTO)

# Go micro-benchmarks of the hot paths; compare runs with benchstat.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./shard/ ./replica/ ./node/ | tee bench-go.txt

# Side by side with NATS JetStream and PostgreSQL; writes docs/benchmarks.md.
bench: build
	./scripts/bench.sh

clean:
	rm -rf bin
