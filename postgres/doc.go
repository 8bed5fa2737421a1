// Package postgres is jetcqrs's write store: the schema and its migrations, and
// the command handlers that load an aggregate, run the domain logic and write the
// new state together with its outbox events and idempotency record in one
// transaction. A command that fails writes nothing.
package postgres
