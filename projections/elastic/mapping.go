package elasticstore

// schemaMetaKey names the mapping _meta entry recording which catalog mapping
// an index was created with; schemaVersion changes whenever indexDefinition
// or projections.CatalogDoc change incompatibly.
const (
	schemaMetaKey = "jetcqrs_catalog_schema"
	schemaVersion = "2" // 2: in_stock replaced available
)

// indexDefinition is the body that creates a generation's index. The mapping
// is strict: the _source is a projections.CatalogDoc, and a field it does not list is a
// write error rather than a silently guessed mapping.
//
//   - name, description: text with the english analyzer (full-text search)
//   - category: keyword (exact filter, terms aggregation)
//   - price_cents: long (range filter, range aggregation)
//   - in_stock: boolean (in-stock filter; the count of available units is
//     the stock model's, see projections.CatalogDoc)
//   - has_product: boolean (hides SKUs known only from inventory events)
//   - version, inventory_version, product_seq, inventory_seq: long, not
//     indexed (returned, never searched)
//   - attributes: an object kept in _source only
func indexDefinition(cfg Config) map[string]any {
	stored := func(typ string) map[string]any { return map[string]any{"type": typ, "index": false} }
	return map[string]any{
		"settings": map[string]any{
			"number_of_shards":   cfg.Shards,
			"number_of_replicas": cfg.Replicas,
		},
		"mappings": map[string]any{
			"dynamic": "strict",
			"_meta":   map[string]any{schemaMetaKey: schemaVersion},
			"properties": map[string]any{
				"sku":               map[string]any{"type": "keyword"},
				"has_product":       map[string]any{"type": "boolean"},
				"name":              map[string]any{"type": "text", "analyzer": "english"},
				"description":       map[string]any{"type": "text", "analyzer": "english"},
				"category":          map[string]any{"type": "keyword"},
				"price_cents":       map[string]any{"type": "long"},
				"in_stock":          map[string]any{"type": "boolean"},
				"attributes":        map[string]any{"type": "object", "enabled": false},
				"version":           stored("long"),
				"inventory_version": stored("long"),
				"product_seq":       stored("long"),
				"inventory_seq":     stored("long"),
			},
		},
	}
}
