package nats

import (
	"encoding/json"
	"fmt"
	"iter"

	natsgo "github.com/nats-io/nats.go"
)

// AppliedSubject carries "these aggregates were just applied" notices from
// projectors to query APIs, which wake their read-your-writes waiters. It is
// core NATS, not JetStream: a notice only wakes a waiter, which then reads
// the version from its read model, so a lost notice costs a wait (bounded by
// the query API) and never a wrong answer.
const AppliedSubject = "jetcqrs.applied"

// appliedNotice is the body of an AppliedSubject message.
type appliedNotice struct {
	Keys [][2]string `json:"keys"` // [aggregate type, aggregate id]
}

// PublishApplied tells the query APIs that events of these aggregates
// (aggregate type, aggregate id) were applied. It only buffers the notice in
// the connection (core NATS publish); its error is the connection's.
func PublishApplied(nc *natsgo.Conn, aggregates iter.Seq2[string, string]) error {
	var n appliedNotice
	for typ, id := range aggregates {
		n.Keys = append(n.Keys, [2]string{typ, id})
	}
	if len(n.Keys) == 0 {
		return nil
	}
	body, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("applied notice: %w", err)
	}
	if err := nc.Publish(AppliedSubject, body); err != nil {
		return fmt.Errorf("applied notice: %w", err)
	}
	return nil
}

// SubscribeApplied calls notify with each aggregate of every applied notice
// published on nc's server, until the subscription is unsubscribed or the
// connection drains. notify runs on the subscription's one goroutine, in
// the order notices arrive; it must not block. A notice that does not decode
// is ignored.
func SubscribeApplied(nc *natsgo.Conn, notify func(aggregateType, aggregateID string)) (*natsgo.Subscription, error) {
	sub, err := nc.Subscribe(AppliedSubject, func(msg *natsgo.Msg) {
		var n appliedNotice
		if json.Unmarshal(msg.Data, &n) != nil {
			return
		}
		for _, k := range n.Keys {
			notify(k[0], k[1])
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", AppliedSubject, err)
	}
	return sub, nil
}
