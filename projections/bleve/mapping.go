package blevestore

import (
	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/analysis/analyzer/keyword"
	"github.com/blevesearch/bleve/v2/analysis/lang/en"
	"github.com/blevesearch/bleve/v2/mapping"
)

// Index fields. The document ID is the SKU.
const (
	fieldName        = "name"        // full text, English analysis
	fieldDescription = "description" // full text, English analysis
	fieldCategory    = "category"    // exact keyword: filter and terms facet
	fieldPrice       = "price_cents" // number: range filter and range facet
	fieldInStock     = "in_stock"    // flag: in-stock filter
	fieldHasProduct  = "has_product" // false while only inventory events were seen
	fieldSource      = "source"      // the projections.CatalogDoc as JSON, stored only
)

// schemaKey names the internal value recording which mapping an index was
// built with; schemaVersion changes whenever catalogMapping or projections.CatalogDoc
// change incompatibly, so that Open refuses an index the code cannot read.
const (
	schemaKey     = "jetcqrs.catalog.schema"
	schemaVersion = "2" // 2: in_stock replaced available
)

// catalogMapping is a static mapping: only the fields listed here are
// indexed, nothing goes to the composite _all field, and everything the
// readers return comes from the stored source field.
// Mapping is the catalog index mapping: the same one every generation's
// index is created with (benchmarks build their bare baseline index with it).
func Mapping() mapping.IndexMapping { return catalogMapping() }

func catalogMapping() mapping.IndexMapping {
	text := func() *mapping.FieldMapping {
		f := bleve.NewTextFieldMapping()
		f.Analyzer = en.AnalyzerName
		f.Store, f.IncludeInAll, f.IncludeTermVectors, f.DocValues = false, false, false, false
		return f
	}
	keywordField := bleve.NewTextFieldMapping()
	keywordField.Analyzer = keyword.Name
	keywordField.Store, keywordField.IncludeInAll, keywordField.IncludeTermVectors = false, false, false
	// No doc values on the faceted fields either: Bleve then builds their
	// facets from each segment's uninverted terms, cached in memory for the
	// segment's life, instead of decompressing doc-value chunks (snappy) for
	// every matching document of every search, which cost 2.4 times the CPU
	// per search (`jetcqrs-bench catalog-search`, docs/benchmarks.md). An
	// index created with doc values keeps them (Bleve keeps the mapping an
	// index was created with) and answers alike, so the schema version
	// stays; it gets the cheaper facets at its next rebuild.
	keywordField.DocValues = false

	number := func() *mapping.FieldMapping {
		f := bleve.NewNumericFieldMapping()
		f.Store, f.IncludeInAll, f.DocValues = false, false, false
		return f
	}
	flag := bleve.NewBooleanFieldMapping()
	flag.Store, flag.IncludeInAll, flag.DocValues = false, false, false

	source := bleve.NewTextFieldMapping()
	source.Index, source.Store = false, true
	source.IncludeInAll, source.IncludeTermVectors, source.DocValues = false, false, false

	doc := bleve.NewDocumentStaticMapping()
	doc.AddFieldMappingsAt(fieldName, text())
	doc.AddFieldMappingsAt(fieldDescription, text())
	doc.AddFieldMappingsAt(fieldCategory, keywordField)
	doc.AddFieldMappingsAt(fieldPrice, number()) // range facet
	doc.AddFieldMappingsAt(fieldInStock, flag)
	doc.AddFieldMappingsAt(fieldHasProduct, flag)
	doc.AddFieldMappingsAt(fieldSource, source)

	m := bleve.NewIndexMapping()
	m.DefaultMapping = doc
	m.DefaultAnalyzer = en.AnalyzerName
	m.StoreDynamic, m.IndexDynamic, m.DocValuesDynamic = false, false, false
	return m
}
