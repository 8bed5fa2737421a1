package domain

// CommandMeta is what a command carries besides its own fields.
type CommandMeta struct {
	Actor Actor
	// ExpectedVersion, when set, is the If-Match version the aggregate must have.
	ExpectedVersion *int64
	// IdempotencyKey, when set, makes the command replay-safe: the first
	// successful result is kept and returned for every retry with the same
	// key and RequestHash.
	IdempotencyKey string
	// RequestHash identifies the request the key was first used with.
	RequestHash []byte
	// TraceParent is the W3C trace context the command's events carry.
	TraceParent string
}

// CommandResult is what a successful command returns and what an idempotent
// replay returns again, byte for byte. Exactly one of Order, Product,
// Inventory is set.
type CommandResult struct {
	AggregateType string           `json:"aggregate_type"`
	AggregateID   string           `json:"aggregate_id"`
	Version       int64            `json:"version"`
	Order         *OrderSnapshot   `json:"order,omitempty"`
	Product       *ProductSnapshot `json:"product,omitempty"`
	Inventory     *InventoryLevels `json:"inventory,omitempty"`
	// Replayed is true when the result comes from a kept idempotency record.
	Replayed bool `json:"-"`
}
