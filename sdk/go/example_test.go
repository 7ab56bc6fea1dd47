// Runnable examples: each starts an in-process server on a temporary
// directory and talks to it through the SDK.

package pim_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/pim-project/pim/internal/server"
	pim "github.com/pim-project/pim/sdk/go"
)

// demo is a server and a way to connect users to it, for the examples.
type demo struct {
	dir string
	srv *server.Server
}

func newDemo() *demo {
	dir, err := os.MkdirTemp("", "pim-example")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.Start(server.Config{DataDir: filepath.Join(dir, "server"), TCPAddr: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	return &demo{dir: dir, srv: srv}
}

func (d *demo) connect(user, device string) *pim.Client {
	tok, err := d.srv.Keys().Issue(user, time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	cl, err := pim.Connect(context.Background(), pim.Options{
		Servers:  []string{d.srv.TCPAddr().String()},
		Token:    tok, // the user is read from the token
		DeviceID: device,
		DataDir:  filepath.Join(d.dir, user+"-"+device),
	})
	if err != nil {
		log.Fatal(err)
	}
	return cl
}

func (d *demo) close() {
	d.srv.Shutdown(context.Background())
	os.RemoveAll(d.dir)
}

// nextMessage reads events until a message arrives.
func nextMessage(cl *pim.Client) *pim.Message {
	for ev := range cl.Events() {
		if m, ok := ev.(pim.MessageEvent); ok {
			return m.Message
		}
	}
	return nil
}

// Alice sends Bob a message; the handle follows it to "sent", and Bob's
// event stream delivers it.
func Example() {
	d := newDemo()
	defer d.close()
	alice := d.connect("alice", "phone")
	defer alice.Close()
	bob := d.connect("bob", "phone")
	defer bob.Close()
	ctx := context.Background()

	out, err := alice.SendTo(ctx, "bob", "hello, Bob") // on disk once it returns
	if err != nil {
		log.Fatal(err)
	}
	if err := out.Wait(ctx); err != nil { // until the server stored it
		log.Fatal(err)
	}
	fmt.Println("alice's message:", out.State(), "as seq", out.Ack().GetSeq(), "of", out.Conv())

	m := nextMessage(bob)
	fmt.Printf("bob got %q from %s\n", m.GetBody(), m.GetSender())
	// Output:
	// alice's message: sent as seq 1 of d:alice:bob
	// bob got "hello, Bob" from alice
}

// One event stream carries everything, in order: connection states,
// "caught up", messages and send states.
func ExampleClient_Events() {
	d := newDemo()
	defer d.close()
	alice := d.connect("alice", "phone")
	defer alice.Close()
	ctx := context.Background()
	// Wait until connected and caught up before sending, so the sequence
	// printed below is the same on every run.
	for ev := range alice.Events() {
		if _, ok := ev.(pim.CaughtUpEvent); ok {
			fmt.Println("caught up")
			break
		}
	}
	if _, err := alice.SendTo(ctx, "alice", "a note to self"); err != nil {
		log.Fatal(err)
	}
	for ev := range alice.Events() {
		switch e := ev.(type) {
		case pim.SendStateEvent:
			fmt.Println("send state:", e.State)
		case pim.MessageEvent:
			fmt.Printf("message %d: %q (own: %v)\n", e.UserSeq, e.Message.GetBody(), e.Own)
		}
		if m, ok := ev.(pim.SendStateEvent); ok && m.State == pim.Sent {
			break
		}
	}
	// Output:
	// caught up
	// send state: queued
	// send state: sending
	// send state: sent
}

// Group operations are offline commands: stored, then replayed in order
// when connected. The group's id is known at once, so messages can be
// queued to it before the server has even seen the group.
func ExampleClient_CreateGroup() {
	d := newDemo()
	defer d.close()
	alice := d.connect("alice", "phone")
	defer alice.Close()
	bob := d.connect("bob", "phone")
	defer bob.Close()
	ctx := context.Background()

	create, err := alice.CreateGroup(ctx, "g:team", "bob")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := alice.Send(ctx, create.Group(), "welcome to the team"); err != nil {
		log.Fatal(err)
	}
	if err := create.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		m := nextMessage(bob)
		fmt.Printf("bob: %s seq %d %s %q\n", m.GetConv(), m.GetSeq(), m.GetType(), m.GetBody())
	}
	members, err := bob.Members(ctx, "g:team")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("members:", len(members))
	// Output:
	// bob: g:team seq 1 MESSAGE_TYPE_GROUP_CREATED ""
	// bob: g:team seq 2 MESSAGE_TYPE_TEXT "welcome to the team"
	// members: 2
}

// waitConv reads events until a ConversationEvent satisfies ok.
func waitConv(cl *pim.Client, ok func(pim.Conversation) bool) pim.Conversation {
	for ev := range cl.Events() {
		if e, is := ev.(pim.ConversationEvent); is && ok(e.Conversation) {
			return e.Conversation
		}
	}
	return pim.Conversation{}
}

// The conversation list: unread counts and read positions, stored locally
// (an app shows it offline), kept current by the SDK and equal to the
// server's. A read on one side is a read receipt on the other.
func ExampleClient_Conversations() {
	d := newDemo()
	defer d.close()
	alice := d.connect("alice", "phone")
	defer alice.Close()
	bob := d.connect("bob", "phone")
	defer bob.Close()
	ctx := context.Background()

	for _, text := range []string{"lunch?", "at noon"} {
		if _, err := alice.SendTo(ctx, "bob", text); err != nil {
			log.Fatal(err)
		}
	}
	c := waitConv(bob, func(c pim.Conversation) bool { return c.Unread == 2 })
	fmt.Printf("bob: %s, %d unread, the last: %q\n", c.Conv, c.Unread, c.LastMessage.GetBody())

	if _, err := bob.MarkRead(ctx, c.Conv, c.LastSeq); err != nil { // an offline command
		log.Fatal(err)
	}
	waitConv(bob, func(c pim.Conversation) bool { return c.Unread == 0 })
	list, err := bob.Conversations()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bob's list: %d conversation, read up to #%d, %d unread\n", len(list), list[0].ReadSeq, list[0].Unread)

	c = waitConv(alice, func(c pim.Conversation) bool { return c.PeerReadSeq == 2 })
	fmt.Printf("alice: bob read up to #%d\n", c.PeerReadSeq)
	// Output:
	// bob: d:alice:bob, 2 unread, the last: "at noon"
	// bob's list: 1 conversation, read up to #2, 0 unread
	// alice: bob read up to #2
}

// Delete for me: an offline command like the others. Every device of the
// user gets a HiddenEvent; the message leaves the local store's Messages
// and the server's History, for this user only.
func ExampleClient_Hide() {
	d := newDemo()
	defer d.close()
	alice := d.connect("alice", "phone")
	defer alice.Close()
	bob := d.connect("bob", "phone")
	defer bob.Close()
	ctx := context.Background()

	out, err := alice.SendTo(ctx, "bob", "oops, wrong chat")
	if err != nil {
		log.Fatal(err)
	}
	if err := out.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	m := nextMessage(bob)
	if _, err := bob.Hide(ctx, m.GetConv(), m.GetSeq()); err != nil {
		log.Fatal(err)
	}
	for ev := range bob.Events() {
		if h, ok := ev.(pim.HiddenEvent); ok {
			fmt.Printf("hidden: %s #%d (on %s)\n", h.Conv, h.Seq, h.Device)
			break
		}
	}
	local, _ := bob.Messages(m.GetConv(), 0, 10)
	page, err := bob.History(ctx, m.GetConv(), 0, 10)
	if err != nil {
		log.Fatal(err)
	}
	theirs, err := alice.History(ctx, m.GetConv(), 0, 10)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bob: stored", len(local), "history", len(page.Messages), "· alice: history", len(theirs.Messages))
	// Output:
	// hidden: d:alice:bob #1 (on phone)
	// bob: stored 0 history 0 · alice: history 1
}
