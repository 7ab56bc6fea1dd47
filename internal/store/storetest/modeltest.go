// The model test: a seeded random sequence of operations run against the
// store under test and the reference model (model.go), every answer compared.
//
// Invariants:
//   - The sequence depends only on the seed, which is logged; a failure names
//     the seed and the operation's index, and -storetest.seed replays it.
//   - Both sides get identical requests; answers are compared exactly, except
//     that errors are compared by the store error they are (errName) and
//     deliveries as a set ordered by user.
package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func testModel(t *testing.T, open Opener) {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("model seed %d (replay: go test -run 'Model' -storetest.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
	e := newEnv(t, open)
	m := newModel()
	ctx := t.Context()

	users := []string{"u0", "u1", "u2", "u3", "u4", "u5"}
	devices := []string{"d0", "d1", "d2"}
	groups := []string{"g:g0", "g:g1", "g:g2", "g:g3"}
	var convs []string
	for i, a := range users {
		for _, b := range users[i:] {
			convs = append(convs, store.DirectConv(a, b))
		}
	}
	convs = append(convs, groups...)
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	someUsers := func() []string {
		us := make([]string, rng.IntN(4))
		for i := range us {
			us[i] = pick(users)
		}
		return us
	}
	conv := func() string {
		if rng.IntN(2) == 0 {
			return pick(groups)
		}
		return pick(convs)
	}
	var n int64
	change := func() store.GroupChange {
		n++
		ch := store.GroupChange{
			Group: pick(groups), Actor: pick(users), Device: pick(devices), Users: someUsers(),
			MsgID: fmt.Sprintf("m%d", n), ServerTime: 5000 + n,
		}
		if rng.IntN(3) == 0 {
			ch.MaxMembers = 1 + rng.IntN(6)
		}
		if rng.IntN(4) == 0 { // shares the id space with sends
			ch.ClientMsgID = fmt.Sprintf("c%d", rng.IntN(40))
		}
		return ch
	}

	for i := range *opsFlag {
		step := fmt.Sprintf("seed %d, op %d", seed, i)
		if rng.IntN(4) == 0 {
			readStateOp(t, rng, step, e.s, m, pick(users), pick(devices), conv())
			continue
		}
		switch p := rng.IntN(100); {
		case p < 40:
			n++
			req := store.SendRequest{
				Conv: conv(), Sender: pick(users), Device: pick(devices),
				ClientMsgID: fmt.Sprintf("c%d", rng.IntN(40)), MsgID: fmt.Sprintf("m%d", n),
				Type: pimv1.MessageType(1 + rng.IntN(2)), Body: []byte(fmt.Sprintf("body %d", n)),
				ClientTime: 1000 + n, ServerTime: 5000 + n, ClientSeq: uint64(rng.IntN(100)),
			}
			if rng.IntN(10) == 0 {
				req.ClientMsgID = ""
			}
			got, gerr := e.s.Send(ctx, req)
			want, werr := m.Send(ctx, req)
			sameResult(t, fmt.Sprintf("%s: Send %+v", step, req), got, gerr, want, werr)
		case p < 48:
			ch := change()
			got, gerr := e.s.CreateGroup(ctx, ch)
			want, werr := m.CreateGroup(ctx, ch)
			sameResult(t, fmt.Sprintf("%s: CreateGroup %+v", step, ch), got, gerr, want, werr)
		case p < 56:
			ch := change()
			got, gerr := e.s.AddMembers(ctx, ch)
			want, werr := m.AddMembers(ctx, ch)
			sameResult(t, fmt.Sprintf("%s: AddMembers %+v", step, ch), got, gerr, want, werr)
		case p < 63:
			ch := change()
			got, gerr := e.s.RemoveMembers(ctx, ch)
			want, werr := m.RemoveMembers(ctx, ch)
			sameResult(t, fmt.Sprintf("%s: RemoveMembers %+v", step, ch), got, gerr, want, werr)
		case p < 71:
			u, d := pick(users), pick(devices)
			h, _ := m.Head(ctx, u)
			seq := uint64(rng.IntN(int(h) + 4))
			got, gerr := e.s.Ack(ctx, u, d, seq)
			want, werr := m.Ack(ctx, u, d, seq)
			same(t, fmt.Sprintf("%s: Ack(%s, %s, %d)", step, u, d, seq), fmt.Sprint(got, errName(gerr)), fmt.Sprint(want, errName(werr)))
		case p < 76:
			u, d := pick(users), pick(devices)
			got, gerr := e.s.Cursor(ctx, u, d)
			want, werr := m.Cursor(ctx, u, d)
			same(t, fmt.Sprintf("%s: Cursor(%s, %s)", step, u, d), fmt.Sprint(got, errName(gerr)), fmt.Sprint(want, errName(werr)))
		case p < 83:
			u := pick(users)
			h, _ := m.Head(ctx, u)
			after, limit := uint64(rng.IntN(int(h)+3)), 1+rng.IntN(8)
			got, gh, gerr := e.s.Timeline(ctx, u, after, limit)
			want, wh, werr := m.Timeline(ctx, u, after, limit)
			same(t, fmt.Sprintf("%s: Timeline(%s, %d, %d)", step, u, after, limit),
				fmtEvents(got, gh, gerr), fmtEvents(want, wh, werr))
		case p < 89:
			c := conv()
			from, before, limit := uint64(rng.IntN(12)), uint64(rng.IntN(20)), 1+rng.IntN(8)
			if rng.IntN(2) == 0 {
				before = 0
			}
			got, gmore, gerr := e.s.History(ctx, c, from, before, limit)
			want, wmore, werr := m.History(ctx, c, from, before, limit)
			same(t, fmt.Sprintf("%s: History(%s, %d, %d, %d)", step, c, from, before, limit),
				fmtMsgs(got, gmore, gerr), fmtMsgs(want, wmore, werr))
		case p < 93:
			c := conv()
			got, gerr := e.s.Members(ctx, c)
			want, werr := m.Members(ctx, c)
			same(t, fmt.Sprintf("%s: Members(%s)", step, c), fmt.Sprint(got, errName(gerr)), fmt.Sprint(want, errName(werr)))
		case p < 97:
			c, u := conv(), pick(users)
			got, gok, gerr := e.s.Membership(ctx, c, u)
			want, wok, werr := m.Membership(ctx, c, u)
			same(t, fmt.Sprintf("%s: Membership(%s, %s)", step, c, u),
				fmt.Sprint(got, gok, errName(gerr)), fmt.Sprint(want, wok, errName(werr)))
		case p < 99:
			u := pick(users)
			got, gerr := e.s.Head(ctx, u)
			want, werr := m.Head(ctx, u)
			same(t, fmt.Sprintf("%s: Head(%s)", step, u), fmt.Sprint(got, errName(gerr)), fmt.Sprint(want, errName(werr)))
		default:
			e.reopen()
			m.Close()
			m = m.reopen()
		}
	}
	diffLines(t, fmt.Sprintf("seed %d: final state", seed), dump(t, e.s, convs, users, devices), dump(t, m, convs, users, devices))
	CheckConsistent(t, e.s, convs, users)
}

func same(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s:\n got: %s\nwant: %s", what, got, want)
	}
}

func sameResult(t *testing.T, what string, got store.Result, gerr error, want store.Result, werr error) {
	t.Helper()
	same(t, what, fmtResult(got, gerr), fmtResult(want, werr))
}

func fmtResult(r store.Result, err error) string {
	if err != nil {
		return "error " + errName(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dup=%v %s", r.Duplicate, fmtMsg(r.Message))
	ds := slices.Clone(r.Deliveries)
	slices.SortFunc(ds, func(x, y store.Delivery) int { return strings.Compare(x.User, y.User) })
	for _, d := range ds {
		fmt.Fprintf(&b, "\n  to %s: %d", d.User, d.Event.GetUserSeq())
		if d.Event.GetMessage() == nil {
			fmt.Fprintf(&b, " %s", fmtEvent(d.Event))
		} else if !proto.Equal(d.Event.GetMessage(), r.Message) {
			fmt.Fprintf(&b, " carrying %s", fmtMsg(d.Event.GetMessage()))
		}
	}
	return b.String()
}

func fmtEvents(evs []*pimv1.Event, head uint64, err error) string {
	if err != nil {
		return "error " + errName(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "head %d", head)
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %d: %s", ev.UserSeq, fmtEvent(ev))
	}
	return b.String()
}

func fmtMsgs(msgs []*pimv1.Message, more bool, err error) string {
	if err != nil {
		return "error " + errName(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "more=%v", more)
	for _, m := range msgs {
		fmt.Fprintf(&b, "\n  %s", fmtMsg(m))
	}
	return b.String()
}

// readStateOp runs one random read-state operation on both stores.
func readStateOp(t *testing.T, rng *rand.Rand, step string, s store.Store, m *memStore, u, d, c string) {
	ctx := t.Context()
	h, _ := m.Head(ctx, u)
	switch p := rng.IntN(100); {
	case p < 30:
		seq := uint64(rng.IntN(14))
		gp, gres, gerr := s.MarkRead(ctx, u, d, c, seq)
		wp, wres, werr := m.MarkRead(ctx, u, d, c, seq)
		same(t, fmt.Sprintf("%s: MarkRead(%s, %s, %s, %d)", step, u, d, c, seq),
			fmt.Sprint(gp, " ", fmtResult(gres, gerr)), fmt.Sprint(wp, " ", fmtResult(wres, werr)))
	case p < 40:
		seq := uint64(rng.IntN(14))
		got, gerr := s.Hide(ctx, u, d, c, seq)
		want, werr := m.Hide(ctx, u, d, c, seq)
		sameResult(t, fmt.Sprintf("%s: Hide(%s, %s, %s, %d)", step, u, d, c, seq), got, gerr, want, werr)
	case p < 55:
		seq := uint64(rng.IntN(int(h) + 3))
		got, gerr := s.MarkDelivered(ctx, u, seq)
		want, werr := m.MarkDelivered(ctx, u, seq)
		sameResult(t, fmt.Sprintf("%s: MarkDelivered(%s, %d)", step, u, seq), got, gerr, want, werr)
	case p < 63:
		from := uint64(rng.IntN(10))
		to := from + uint64(rng.IntN(8))
		got, gerr := s.NotifyReads(ctx, c, from, to)
		want, werr := m.NotifyReads(ctx, c, from, to)
		sameResult(t, fmt.Sprintf("%s: NotifyReads(%s, %d, %d)", step, c, from, to), got, gerr, want, werr)
	case p < 73:
		seq, after, limit := uint64(rng.IntN(12)), "", rng.IntN(4)
		if rng.IntN(2) == 0 {
			after = fmt.Sprintf("u%d", rng.IntN(6))
		}
		gn, gu, gm, gerr := s.Receipts(ctx, c, seq, after, limit)
		wn, wu, wm, werr := m.Receipts(ctx, c, seq, after, limit)
		same(t, fmt.Sprintf("%s: Receipts(%s, %d, %q, %d)", step, c, seq, after, limit),
			fmt.Sprint(gn, gu, gm, errName(gerr)), fmt.Sprint(wn, wu, wm, errName(werr)))
	case p < 90:
		q := store.ConvQuery{Limit: rng.IntN(5)}
		if rng.IntN(2) == 0 {
			q.SinceVersion = uint64(rng.IntN(int(h) + 2))
		} else if rng.IntN(2) == 0 {
			q.BeforeActivity = uint64(rng.IntN(int(h) + 2))
		}
		gc, gm, gv, gerr := s.Conversations(ctx, u, q)
		wc, wm, wv, werr := m.Conversations(ctx, u, q)
		same(t, fmt.Sprintf("%s: Conversations(%s, %+v)", step, u, q), fmtConvs(gc, gm, gv, gerr), fmtConvs(wc, wm, wv, werr))
	case p < 92:
		gs := store.GroupSettings{ReceiptsVisible: rng.IntN(2) == 0}
		gerr, werr := s.SetGroupSettings(ctx, c, gs), m.SetGroupSettings(ctx, c, gs)
		same(t, fmt.Sprintf("%s: SetGroupSettings(%s, %+v)", step, c, gs), errName(gerr), errName(werr))
		g, gerr := s.GroupSettings(ctx, c)
		w, werr := m.GroupSettings(ctx, c)
		same(t, fmt.Sprintf("%s: GroupSettings(%s)", step, c), fmt.Sprint(g, errName(gerr)), fmt.Sprint(w, errName(werr)))
	case p < 95:
		on := rng.IntN(3) != 0
		gerr, werr := s.SetReadReceipts(ctx, u, on), m.SetReadReceipts(ctx, u, on)
		same(t, fmt.Sprintf("%s: SetReadReceipts(%s, %v)", step, u, on), errName(gerr), errName(werr))
	default:
		got, gerr := s.ReadReceipts(ctx, u)
		want, werr := m.ReadReceipts(ctx, u)
		same(t, fmt.Sprintf("%s: ReadReceipts(%s)", step, u), fmt.Sprint(got, errName(gerr)), fmt.Sprint(want, errName(werr)))
	}
}
