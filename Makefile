# shoal — see README.md. `make run` starts a single node with data in ./data;
# `make test` runs go vet and the whole suite with the race detector.

GO        ?= go
BIN       := bin/shoal
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/shoaldb/shoal/internal/buildinfo.Version=$(VERSION)
PROTO     := api/shoal/v1/shoal.proto
TESTFLAGS ?=

.PHONY: all build run test test-race test-short lint verify proto bench bench-go soak clean docker

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shoal

run: build
	./$(BIN) server --data ./data

# The suite CI runs: vet, then every test with the race detector.
test:
	$(GO) vet ./...
	$(GO) test -race -timeout 14m $(TESTFLAGS) ./...

test-race: test

# The fault tests again and again (kill -9 under load, failover, partitions, lagging replicas,
# dead-node replacement, hung leaders), each run with a new seed; bounded by SOAK_TIMEOUT.
SOAK_COUNT   ?= 10
SOAK_TIMEOUT ?= 60m
soak: build
	$(GO) test -race -count $(SOAK_COUNT) -timeout $(SOAK_TIMEOUT) \
	  -run 'Kill9|Failover|Partition|Lagging|QuorumLoss|ReplacesDeadNode|HungLeader' ./internal/e2e/ ./node/

test-short:
	$(GO) test -short ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

verify: lint
	$(GO) mod tidy -diff
	$(MAKE) proto
	git diff --exit-code -- api/

proto:
	protoc --proto_path=api --go_out=api --go_opt=paths=source_relative \
	  --go-grpc_out=api --go-grpc_opt=paths=source_relative $(PROTO)

# Go micro-benchmarks of the hot paths; compare runs with benchstat.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./shard/ ./replica/ ./node/ | tee bench-go.txt

# Side by side with NATS JetStream and PostgreSQL; writes docs/benchmarks.md.
bench: build
	./scripts/bench.sh

clean:
	rm -rf bin
