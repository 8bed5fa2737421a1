// Package relay moves committed domain events from the write store's outbox
// (outbox_events) to the event stream, exactly as they committed: nothing
// that rolled back is ever published, nothing that committed is lost or
// appended twice, and each aggregate's events leave in version order.
//
// The relay learns from the stream what it already appended (see ledger.go):
// each publish names the stream sequence it must be stored at; each CDC
// event carries its commit position, and a restarted session resumes after
// the position of the stream's last message; outbox rows are marked with
// the sequence the stream stored them at, from what the stream says. A new
// or re-created slot is preceded by a backfill of the rows committed before
// it that the stream does not hold.
//
// It owns two ways of reading the outbox:
//
//   - CDC (the default) tails PostgreSQL logical replication: a publication
//     on outbox_events (inserts only) and a pgoutput replication slot,
//     protocol version 2 with streaming of large in-progress transactions.
//     A transaction's events are buffered until its commit and published in
//     commit order; the slot's confirmed position advances only past
//     transactions whose every event the Publisher acknowledged; after a
//     crash the slot re-sends what was not yet confirmed, and the relay
//     skips what the stream already holds.
//   - Polling, for databases without logical decoding: it reads unpublished
//     rows under a transaction-snapshot horizon, wakes on LISTEN/NOTIFY and
//     marks published_at after the acknowledgement.
//
// Several relay processes may run against one database: a session-level
// advisory lock elects the one that works; the others wait and take over
// when its database session ends.
//
// The relay publishes through its own port, Publisher; cmd/ adapts it to
// JetStream.
package relay
