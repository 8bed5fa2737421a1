// Package nats owns everything jetcqrs does with NATS JetStream: the
// embedded nats-server, client connections, provisioning of the EVENTS and
// DLQ streams, the subject and partition scheme, the event envelope on the
// wire, and the ordered pipelined publisher the relay uses.
//
// The subject scheme (Subject, Partition) and the envelope headers (the
// Header* constants) are wire contracts shared by the relay, the projections
// and anyone inspecting the stream with the nats CLI; changing them breaks
// per-aggregate ordering or decoding of events already in the stream.
package nats
