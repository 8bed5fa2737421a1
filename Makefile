# Every target that needs the services runs scripts/services.sh first: it is
# idempotent and returns in about a second when the machine is ready.
#
#   make test TESTFLAGS='-run TestRelay -v'   extra flags for go test
#   GOFLAGS=-mod=mod make build               GOFLAGS reaches every go command

GO        ?= go
TESTFLAGS ?=
PKGS      ?= ./...
# The Elasticsearch contract suite is built in whenever a cluster is named.
TESTTAGS  ?= $(if $(ELASTICSEARCH_URL),-tags elasticsearch,)

.PHONY: all services run test bench lint build

all: lint build

services:
	bash scripts/services.sh

run: services
	$(GO) run ./cmd/jetcqrs serve

test: services
	$(GO) test -race -count=1 -timeout 25m $(TESTTAGS) $(TESTFLAGS) $(PKGS)

bench: services
	$(GO) run ./cmd/jetcqrs-bench all

lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet ./...

build:
	$(GO) build -o bin/jetcqrs ./cmd/jetcqrs
