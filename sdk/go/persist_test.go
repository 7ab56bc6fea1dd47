// The persistence rule, checked on the real driver: when a frame reaches
// the socket, what it implies is already in the local store.

package pim

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func TestFramesNeverAheadOfTheStore(t *testing.T) {
	var (
		mu         sync.Mutex
		violations []string
		checked    = map[string]int{}
	)
	writeHook = func(st *store, fs []*pimv1.Frame) {
		err := st.db.View(func(tx *bolt.Tx) error {
			var meta core.Meta
			if v := tx.Bucket(bktMeta).Get(keyCore); v != nil {
				if err := json.Unmarshal(v, &meta); err != nil {
					return err
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, f := range fs {
				switch b := f.GetBody().(type) {
				case *pimv1.Frame_SendReq:
					checked["send"]++
					if tx.Bucket(bktOutbox).Get([]byte(b.SendReq.GetClientMsgId())) == nil {
						violations = append(violations, "SendReq "+b.SendReq.GetClientMsgId()+" before its outbox entry")
					}
				case *pimv1.Frame_PushAck:
					checked["ack"]++
					if b.PushAck.GetUserSeq() > meta.Delivered {
						violations = append(violations, fmt.Sprintf("PushAck(%d) with cursor %d on disk", b.PushAck.GetUserSeq(), meta.Delivered))
					}
					us := u64(b.PushAck.GetUserSeq())
					if tx.Bucket(bktTimeline).Get(us) == nil && tx.Bucket(bktEvents).Get(us) == nil && b.PushAck.GetUserSeq() > 0 {
						violations = append(violations, fmt.Sprintf("PushAck(%d) before the event is stored", b.PushAck.GetUserSeq()))
					}
				case *pimv1.Frame_Hello:
					checked["hello"]++
					if b.Hello.GetLastUserSeq() > meta.Delivered {
						violations = append(violations, fmt.Sprintf("Hello(%d) with cursor %d on disk", b.Hello.GetLastUserSeq(), meta.Delivered))
					}
				}
			}
			return nil
		})
		if err != nil {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}
	}
	defer func() { writeHook = nil }()

	srv := startServer(t)
	a := newDevice(t, "alice", "phone", token(t, srv, "alice"), srv.TCPAddr().String())
	b := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	a.tune.AckEvery = 3 // many acks
	b.tune.AckEvery = 3
	a.open()
	b.open()
	const n = 20
	conv := DirectConv("alice", "bob")
	var wg sync.WaitGroup
	for _, d := range []*device{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); waitSent(t, sendAll(t, d.cl, conv, d.user, 0, n)) }()
	}
	wg.Wait()
	a.rec.waitMessages(t, 2*n)
	b.rec.waitMessages(t, 2*n)
	a.close() // writers end before the hook is removed
	b.close()
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations {
		t.Error(v)
	}
	if checked["send"] < 2*n || checked["ack"] == 0 || checked["hello"] < 2 {
		t.Fatalf("too little was checked: %v", checked)
	}
}
