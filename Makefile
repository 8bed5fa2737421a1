# Every target that needs the services runs scripts/services.sh first: it is
# idempotent and returns in about a second when the machine is ready. The test
# target also has it install what only the tests use (chDB, docker-compose).
#
#   make test TESTFLAGS='-run TestRelay -v'   extra flags for go test
#   GOFLAGS=-mod=mod make build               GOFLAGS reaches every go command

GO        ?= go
TESTFLAGS ?=
PKGS      ?= ./...
# chdb builds in the tests that run the ClickHouse SQL on chDB, a current
# engine in-process, as well (libchdb.so, installed by scripts/services.sh);
# the Elasticsearch contract suite is built in whenever a cluster is named.
# The binaries never depend on either.
comma     := ,
TESTTAGS  ?= -tags chdb$(if $(ELASTICSEARCH_URL),$(comma)elasticsearch,)

.PHONY: all services run test bench lint build

all: lint build

services:
	bash scripts/services.sh

run: services
	$(GO) run ./cmd/jetcqrs serve

test:
	bash scripts/services.sh tests
	$(GO) test -race -count=1 -timeout 25m $(TESTTAGS) $(TESTFLAGS) $(PKGS)

bench: services
	$(GO) run ./cmd/jetcqrs-bench all

lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet -tags chdb ./...

build:
	$(GO) build -o bin/jetcqrs ./cmd/jetcqrs
