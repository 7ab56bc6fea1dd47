// Package bus defines how timeline events travel from the send pipeline to
// the sessions that hold a user's devices (the article's internal RPC/MQ).
//
// The contract every implementation keeps:
//
//   - Publish is called only after the event is durably stored. The store,
//     not the bus, is the source of truth: delivery over the bus is
//     best-effort, at most once per subscriber, and may be dropped.
//   - Publish never blocks on a slow subscriber.
//   - A subscriber may see a user's events out of user-seq order or with
//     gaps (concurrent publishers, drops). It detects that from the user seq
//     and reads the missing range from the store; so Subscriber.Notify must
//     be cheap and must not block.
//   - After cancel returns, Notify is not called for that subscription again.
package bus

import pimv1 "github.com/pim-project/pim/proto/pim/v1"

// Subscriber receives a user's new timeline events.
type Subscriber interface {
	// Notify is called with an event stored for user. It must not block.
	Notify(user string, ev *pimv1.Event)
}

// Bus routes events to the subscribers of a user.
type Bus interface {
	Publish(user string, ev *pimv1.Event)
	// Subscribe registers sub for user's events until cancel is called.
	Subscribe(user string, sub Subscriber) (cancel func())
}
