// Package domain owns jetcqrs's business rules: the Order, Product and Inventory
// aggregates, the commands that change them, the events those changes produce and
// the stable error codes clients see. It imports the standard library only; the
// adapters (postgres, commandapi, projections) depend on it, never the reverse.
//
// Every state change returns the events it caused. The events carry the state the
// read side needs (event-carried state), so projections never read the write store.
package domain
