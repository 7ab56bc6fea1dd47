// Delivered receipts off the ack path: an ack only records how far a user's
// devices got; RunDelivered turns that into receipts in the background, so
// a session never waits for the store's writer (and its fsync) to take an
// ack.
//
// Invariants:
//   - pending holds, per user, the highest acknowledged user seq not yet
//     handed to the store; a later ack only raises it, so acks that arrive
//     while a round runs are folded into the next round (coalescing).
//   - One round hands every pending user to the store at once, so their
//     receipts share one group commit; rounds start at most every
//     DeliveredInterval, so a busy conversation gets one delivered receipt
//     per interval, not one per message.
//   - RunDelivered owns the only goroutines that do this; while it does not
//     run, Ack produces the receipts itself (tests of logic alone).
package logic

import (
	"context"
	"sync"
	"time"
)

const (
	// deliveredRound bounds the store calls in flight in one round.
	deliveredRound = 64
	// DeliveredInterval is the shortest time between two rounds.
	DeliveredInterval = 100 * time.Millisecond
)

// noteAcked records user's acknowledged position; false when RunDelivered
// is not running.
func (s *Service) noteAcked(user string, upTo uint64) bool {
	s.dmu.Lock()
	if s.dpending == nil {
		s.dmu.Unlock()
		return false
	}
	s.dpending[user] = max(s.dpending[user], upTo)
	s.dmu.Unlock()
	select {
	case s.dwake <- struct{}{}:
	default:
	}
	return true
}

// RunDelivered produces delivered receipts for acknowledged messages until
// ctx is done. The server runs it once.
func (s *Service) RunDelivered(ctx context.Context) {
	s.dmu.Lock()
	s.dpending = make(map[string]uint64)
	s.dmu.Unlock()
	defer func() {
		s.dmu.Lock()
		s.dpending = nil
		s.dmu.Unlock()
	}()
	pace := time.NewTimer(0)
	defer pace.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dwake:
		}
		select { // the previous round started less than an interval ago
		case <-ctx.Done():
			return
		case <-pace.C:
		}
		pace.Reset(DeliveredInterval)
		s.dmu.Lock()
		round := s.dpending
		s.dpending = make(map[string]uint64, len(round))
		s.dmu.Unlock()
		s.deliveredRound(ctx, round)
	}
}

// deliveredRound hands round to the store, deliveredRound users at a time.
func (s *Service) deliveredRound(ctx context.Context, round map[string]uint64) {
	sem := make(chan struct{}, deliveredRound)
	var wg sync.WaitGroup
	for user, upTo := range round {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.delivered(ctx, user, upTo)
		})
	}
	wg.Wait()
}
