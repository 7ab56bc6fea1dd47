package e2e

// Unread counts under random interleavings of sends, reads, joins, removals
// and device reconnects, against a reference model kept by the test. Each
// user's devices must agree with the model twice over: in the server's
// conversation list, and in what each device derives from its own timeline
// (messages, read-syncs, membership), which is how an SDK keeps its list
// current without refetching it.

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/store/readmodel"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

var unreadSeed = flag.Uint64("unread.seed", 0, "seed of TestUnreadCountsMatchModel (0: a new one)")

// unreadModel is the reference: messages per conversation with who got them.
type unreadModel struct {
	msgs    map[string][]modelMsg        // conv -> messages, index seq-1
	members map[string]map[string]uint64 // group -> member -> join seq
	reads   map[[2]string]uint64
	joins   map[[2]string]uint64 // (user, group) -> the last join, kept after removal
}

type modelMsg struct {
	sender  string
	content bool
	to      []string // recipients
}

func (m *unreadModel) recipients(conv string) []string {
	if a, b, ok := store.ParseDirect(conv); ok {
		return []string{a, b}
	}
	var us []string
	for u := range m.members[conv] {
		us = append(us, u)
	}
	slices.Sort(us)
	return us
}

// unread is the model's count for user in conv.
func (m *unreadModel) unread(user, conv string) (n uint64) {
	join := m.joins[[2]string{user, conv}]
	for i, msg := range m.msgs[conv] {
		seq := uint64(i + 1)
		if msg.content && msg.sender != user && slices.Contains(msg.to, user) && seq > max(m.reads[[2]string{user, conv}], join) {
			n++
		}
	}
	return n
}

func TestUnreadCountsMatchModel(t *testing.T) {
	seed := *unreadSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test ./internal/e2e -run TestUnreadCountsMatchModel -unread.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	srv := startServer(t, t.TempDir())
	users := []string{"u0", "u1", "u2", "u3"}
	conns := make(map[[2]string]*client.Conn)
	conn := func(u, d string) *client.Conn {
		k := [2]string{u, d}
		if conns[k] == nil {
			conns[k] = dialOpts(t, srv, client.Options{Token: token(t, srv, u), Device: d, DiscardPushes: true})
		}
		return conns[k]
	}
	dev := func(u string) *client.Conn { return conn(u, fmt.Sprintf("d%d", rng.IntN(2))) }
	m := &unreadModel{msgs: map[string][]modelMsg{}, members: map[string]map[string]uint64{}, reads: map[[2]string]uint64{},
		joins: map[[2]string]uint64{{"u0", "g:r"}: 1, {"u1", "g:r"}: 1}}
	group(t, conn("u0", "d0"), pimv1.GroupOp_GROUP_OP_CREATE, "g:r", "u1")
	m.members["g:r"] = map[string]uint64{"u0": 1, "u1": 1}
	m.msgs["g:r"] = []modelMsg{{sender: "u0", to: []string{"u0", "u1"}}}
	var convs []string
	for i, a := range users {
		for _, b := range users[i+1:] {
			convs = append(convs, store.DirectConv(a, b))
		}
	}
	convs = append(convs, "g:r")

	for i := range 600 {
		u, conv := users[rng.IntN(len(users))], convs[rng.IntN(len(convs))]
		member := slices.Contains(m.recipients(conv), u)
		switch p := rng.IntN(100); {
		case p < 45 && member:
			send(t, dev(u), "", conv, fmt.Sprintf("%d", i), "x")
			m.msgs[conv] = append(m.msgs[conv], modelMsg{sender: u, content: true, to: m.recipients(conv)})
		case p < 75 && member:
			seq := uint64(rng.IntN(len(m.msgs[conv]) + 2))
			r, err := dev(u).Read(ctxT(t), &pimv1.ReadReq{Conv: conv, Seq: seq})
			if err != nil {
				t.Fatalf("seed %d op %d: read: %v", seed, i, err)
			}
			k := [2]string{u, conv}
			m.reads[k] = max(m.reads[k], min(seq, uint64(len(m.msgs[conv]))))
			if r.ReadSeq != m.reads[k] {
				t.Fatalf("seed %d op %d: read position %d, model %d", seed, i, r.ReadSeq, m.reads[k])
			}
		case p < 83 && conv == "g:r" && member:
			op, who := pimv1.GroupOp_GROUP_OP_ADD, users[rng.IntN(len(users))]
			_, in := m.members[conv][who]
			if in && who != "u0" {
				op = pimv1.GroupOp_GROUP_OP_REMOVE
			} else if in {
				continue
			}
			actor := u
			if op == pimv1.GroupOp_GROUP_OP_REMOVE {
				actor = "u0" // only the owner removes others
			}
			group(t, dev(actor), op, conv, who)
			m.msgs[conv] = append(m.msgs[conv], modelMsg{sender: actor, to: append(m.recipients(conv), who)})
			if op == pimv1.GroupOp_GROUP_OP_ADD {
				m.members[conv][who] = uint64(len(m.msgs[conv]))
				m.joins[[2]string{who, conv}] = uint64(len(m.msgs[conv]))
			} else {
				delete(m.members[conv], who)
			}
		case p >= 90:
			k := [2]string{u, fmt.Sprintf("d%d", rng.IntN(2))}
			if c := conns[k]; c != nil {
				c.Close()
				delete(conns, k)
			}
		}
	}
	total := 0
	for _, ms := range m.msgs {
		total += len(ms)
	}
	t.Logf("%d messages in %d conversations, %d read positions", total, len(m.msgs), len(m.reads))
	for _, u := range users {
		for _, d := range []string{"d0", "d1"} {
			checkDeviceUnread(t, seed, conn(u, d), u, d, m)
		}
	}
}

// checkDeviceUnread compares the server's list and the device's own
// derivation from its timeline with the model.
func checkDeviceUnread(t *testing.T, seed uint64, c *client.Conn, user, device string, m *unreadModel) {
	t.Helper()
	resp, err := c.Conversations(ctxT(t), &pimv1.ConvListReq{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	derived := readmodel.Derive(user, syncAll(t, c, 0))
	for _, e := range resp.Convs {
		want := m.unread(user, e.Conv)
		if e.Unread != want || e.ReadSeq != m.reads[[2]string{user, e.Conv}] {
			t.Fatalf("seed %d: %s/%s %s: server unread %d read %d, model unread %d read %d",
				seed, user, device, e.Conv, e.Unread, e.ReadSeq, want, m.reads[[2]string{user, e.Conv}])
		}
		if got := derived[e.Conv].GetUnread(); got != want {
			t.Fatalf("seed %d: %s/%s %s: derived from the timeline %d, model %d", seed, user, device, e.Conv, got, want)
		}
	}
}
