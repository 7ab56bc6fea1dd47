package e2e

import (
	"fmt"
	"testing"

	"github.com/pim-project/pim/internal/client"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func group(t *testing.T, c *client.Conn, op pimv1.GroupOp, g string, users ...string) *pimv1.GroupResp {
	t.Helper()
	resp, err := c.Group(ctxT(t), &pimv1.GroupReq{Op: op, Group: g, Users: users})
	if err != nil {
		t.Fatalf("group %v %s %v: %v", op, g, users, err)
	}
	return resp
}

func types(evs []*pimv1.Event) []pimv1.MessageType {
	var out []pimv1.MessageType
	for _, ev := range evs {
		out = append(out, ev.GetMessage().Type)
	}
	return out
}

// Group membership changes are messages; members see the group from the
// seq at which they joined; removed members get the removal and nothing after.
func TestGroupMembershipAndVisibility(t *testing.T) {
	srv := startServer(t, t.TempDir())
	alice := dial(t, srv, "alice", "phone")
	bob := dial(t, srv, "bob", "phone")
	carol := dial(t, srv, "carol", "phone")

	g := group(t, alice, pimv1.GroupOp_GROUP_OP_CREATE, "", "bob", "carol")
	if len(g.Members) != 3 || g.Seq != 1 {
		t.Fatalf("create = %v", g)
	}
	send(t, alice, "", g.Group, "g1", "first")
	send(t, bob, "", g.Group, "g2", "second")
	for _, c := range []*client.Conn{alice, bob, carol} {
		evs := recv(t, c, 3)
		if ts := types(evs); ts[0] != pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED || text(evs[2]) != "second" {
			t.Fatalf("group stream = %v", evs)
		}
	}

	// dave joins at seq 4 and sees only from there.
	add := group(t, bob, pimv1.GroupOp_GROUP_OP_ADD, g.Group, "dave")
	if add.Seq != 4 {
		t.Fatalf("add = %v", add)
	}
	dave := dial(t, srv, "dave", "phone")
	send(t, carol, "", g.Group, "g3", "third")
	evs := recv(t, dave, 2)
	if evs[0].GetMessage().Seq != 4 || text(evs[1]) != "third" {
		t.Fatalf("dave's stream = %v", evs)
	}
	if h := history(t, dave, g.Group); len(h) != 2 || h[0].Seq != 4 {
		t.Fatalf("dave's history starts at %v", h)
	}
	if h := history(t, alice, g.Group); len(h) != 5 {
		t.Fatalf("alice's history has %d messages, want 5", len(h))
	}

	// Only the owner removes others; carol is removed and sees nothing after.
	if _, err := bob.Group(ctxT(t), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: g.Group, Users: []string{"carol"}}); errCode(err) != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("non-owner removing another member: %v", err)
	}
	group(t, alice, pimv1.GroupOp_GROUP_OP_REMOVE, g.Group, "carol")
	send(t, alice, "", g.Group, "g4", "after carol left")
	cev := recv(t, carol, 3) // MEMBERS_ADDED, third, MEMBERS_REMOVED
	if cev[2].GetMessage().Type != pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED {
		t.Fatalf("carol's last event = %v", cev[2])
	}
	atHead(t, carol, cev[2].UserSeq)
	if _, err := carol.Send(ctxT(t), &pimv1.SendReq{ClientMsgId: "c9", Conv: g.Group,
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("let me in")}); errCode(err) != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("removed member sending: %v", err)
	}
	// A member may leave by removing themselves.
	group(t, bob, pimv1.GroupOp_GROUP_OP_REMOVE, g.Group, "bob")
	m := group(t, alice, pimv1.GroupOp_GROUP_OP_MEMBERS, g.Group)
	if len(m.Members) != 2 || m.Members[0].User != "alice" || m.Members[0].Role != "owner" || m.Members[1].User != "dave" {
		t.Fatalf("members = %v", m.Members)
	}
}

func TestGroupSizeLimit(t *testing.T) {
	srv := startServer(t, t.TempDir())
	alice := dial(t, srv, "alice", "phone")
	users := make([]string, 1000) // with alice, 1,001 > 1,000
	for i := range users {
		users[i] = fmt.Sprintf("u%04d", i)
	}
	_, err := alice.Group(ctxT(t), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_CREATE, Users: users})
	if errCode(err) != pimv1.ErrorCode_ERROR_CODE_GROUP_TOO_LARGE {
		t.Fatalf("creating a 1,001-member group: %v", err)
	}
	g := group(t, alice, pimv1.GroupOp_GROUP_OP_CREATE, "g:big", users[:999]...)
	if len(g.Members) != 1000 {
		t.Fatalf("members = %d", len(g.Members))
	}
	if _, err := alice.Group(ctxT(t), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_ADD, Group: "g:big", Users: []string{"one-more"}}); errCode(err) != pimv1.ErrorCode_ERROR_CODE_GROUP_TOO_LARGE {
		t.Fatalf("adding the 1,001st member: %v", err)
	}
}
