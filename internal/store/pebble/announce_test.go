package pebblestore_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// TestOnCommitAnnouncesPipelinedGroupSends: every delivery of group messages
// sent by several senders, each pipelining its sends (SendAsync chained),
// is announced, once, in user-seq order.
func TestOnCommitAnnouncesPipelinedGroupSends(t *testing.T) {
	s, ann := openAnnounced(t)
	ctx := t.Context()
	users := []string{"s0", "s1", "s2", "s3", "r0", "r1"}
	if _, err := s.CreateGroup(ctx, store.GroupChange{Group: "g:x", Actor: "s0", Users: users[1:], MsgID: "c"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sender := users[w]
			for round := range 20 {
				var prev store.Pending
				var ps []store.Pending
				for i := range 8 {
					p := s.SendAsync(ctx, store.SendRequest{Conv: "g:x", Sender: sender, Device: "d",
						ClientMsgID: fmt.Sprint(round, "-", i), MsgID: fmt.Sprint(sender, round, i),
						Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("x")}, prev)
					prev = p
					ps = append(ps, p)
				}
				for _, p := range ps {
					if _, err := p.Wait(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	ann.check(t, s, users)
}
