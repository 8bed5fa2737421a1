// Package relay moves committed domain events from the write store's outbox
// (outbox_events) to the event stream, exactly as they committed: nothing
// that rolled back is ever published, nothing that committed is lost, and
// events leave in commit order.
//
// It owns two ways of reading the outbox:
//
//   - CDC (the default) tails PostgreSQL logical replication: a publication
//     on outbox_events (inserts only) and a pgoutput replication slot,
//     protocol version 2 with streaming of large in-progress transactions.
//     A transaction's events are buffered until its commit and published in
//     commit order; the slot's confirmed position advances only past
//     transactions whose every event the Publisher acknowledged, so a crash
//     re-sends at most what was not yet confirmed (the stream's duplicate
//     window drops the copies).
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
