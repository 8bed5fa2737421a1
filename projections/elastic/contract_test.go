//go:build elasticsearch

package elasticstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"

	"github.com/jetcqrs/jetcqrs/projections/contract"
)

// TestCatalogContract runs the catalog contract suite against the
// Elasticsearch cluster at ELASTICSEARCH_URL. Each subtest gets an alias and
// generation index of its own, deleted when it ends.
//
// It is built with the elasticsearch tag, which `make test` adds whenever
// ELASTICSEARCH_URL is set: no Elasticsearch runs on every development
// machine and CI runner, and the request/response tests in store_test.go
// cover the adapter meanwhile. Built with the tag, a missing URL fails.
func TestCatalogContract(t *testing.T) {
	addr := os.Getenv("ELASTICSEARCH_URL")
	if addr == "" {
		t.Fatal("ELASTICSEARCH_URL is not set: point it at a cluster (docker compose up elasticsearch) or build without -tags elasticsearch")
	}
	client, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res, err := client.Info(client.Info.WithContext(ctx))
	if err := decodeResponse("info", res, err, nil); err != nil {
		t.Fatalf("Elasticsearch at ELASTICSEARCH_URL=%s does not answer: %v", addr, err)
	}

	contract.Catalog(t, func(t *testing.T) contract.CatalogUnderTest {
		suffix := make([]byte, 6)
		_, _ = rand.Read(suffix)
		cfg := DefaultConfig()
		cfg.Alias = "jetcqrs-catalog-test-" + hex.EncodeToString(suffix)
		cfg.Replicas = 0     // a single-node cluster stays green
		cfg.Refresh = "true" // the suite searches right after every Apply
		s, err := New(client, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := client.Indices.Delete([]string{s.Index()}, client.Indices.Delete.WithContext(ctx))
			if err := decodeResponse("delete index "+s.Index(), res, err, nil); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		if err := s.EnsureIndex(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := s.SwapAlias(t.Context(), cfg.Generation); err != nil {
			t.Fatal(err)
		}
		return s
	})
}
