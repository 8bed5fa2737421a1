// Package postgres is jetcqrs's write store: the schema and its migrations, and
// the command handlers that load an aggregate, run the domain logic and write the
// new state together with its outbox events and idempotency record in one
// transaction. A command that fails writes nothing.
//
// The domain makes every business decision; the store owns the transaction,
// the row locks, the idempotency record and the outbox rows. It asks the domain
// the rules that need no stored state (who may run a command) before the
// transaction begins, so a caller who may not run a command never reaches its
// idempotency keys, and it asks a loaded order which stock rows a transition
// would move before locking them.
package postgres
