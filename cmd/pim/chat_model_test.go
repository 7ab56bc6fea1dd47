package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

// testUI is the chat UI of alice/laptop with a recorder for effects.
type testUI struct {
	t    *testing.T
	u    *chatUI
	effs []any
}

func newTestUI(t *testing.T) *testUI {
	s := newChatState("alice", "laptop", time.UTC)
	s.autoRead = true
	tu := &testUI{t: t}
	tu.u = newChatUI(s, func(e any) tea.Cmd {
		tu.effs = append(tu.effs, e)
		return nil
	})
	tu.u.Update(tea.WindowSizeMsg{Width: 100, Height: 16})
	tu.u.Update(clockInfo{now: time.Date(2030, 1, 2, 9, 30, 0, 0, time.UTC)})
	return tu
}

func (tu *testUI) msg(m tea.Msg) *testUI {
	tu.u.Update(m)
	return tu
}

func (tu *testUI) ev(e pim.Event) *testUI { return tu.msg(eventMsg{e}) }

func (tu *testUI) typeLine(s string) *testUI {
	tu.msg(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)})
	return tu.msg(tea.KeyMsg{Type: tea.KeyEnter})
}

func (tu *testUI) key(k tea.KeyType) *testUI { return tu.msg(tea.KeyMsg{Type: k}) }

// takeEffs returns and clears the recorded effects.
func (tu *testUI) takeEffs() []any {
	e := tu.effs
	tu.effs = nil
	return e
}

// screen is the view without escape sequences.
func (tu *testUI) screen() string { return ansi.Strip(tu.u.View()) }

func (tu *testUI) shows(want ...string) {
	tu.t.Helper()
	sc := tu.screen()
	for _, w := range want {
		if !strings.Contains(sc, w) {
			tu.t.Fatalf("screen lacks %q:\n%s", w, sc)
		}
	}
}

func (tu *testUI) lacks(bad ...string) {
	tu.t.Helper()
	sc := tu.screen()
	for _, b := range bad {
		if strings.Contains(sc, b) {
			tu.t.Fatalf("screen shows %q:\n%s", b, sc)
		}
	}
}

// showsRe checks the screen against regular expressions.
func (tu *testUI) showsRe(want ...string) {
	tu.t.Helper()
	sc := tu.screen()
	for _, w := range want {
		if !regexp.MustCompile(w).MatchString(sc) {
			tu.t.Fatalf("screen does not match %q:\n%s", w, sc)
		}
	}
}

func (tu *testUI) lacksRe(bad ...string) {
	tu.t.Helper()
	sc := tu.screen()
	for _, b := range bad {
		if regexp.MustCompile(b).MatchString(sc) {
			tu.t.Fatalf("screen matches %q:\n%s", b, sc)
		}
	}
}

func textMsg(conv string, seq uint64, sender, device, body, id string) *pim.Message {
	return &pim.Message{Conv: conv, Seq: seq, Sender: sender, SenderDevice: device, ClientMsgId: id,
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(body),
		ServerTime: time.Date(2030, 1, 2, 9, 31, 0, 0, time.UTC).UnixMilli()}
}

const dm = "d:alice:bob"

func TestChatSendStatesFollowOneLine(t *testing.T) {
	tu := newTestUI(t)
	tu.shows("No conversation open", "○ starting")
	tu.typeLine("/to bob")
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effLoad{conv: dm}}) {
		t.Fatalf("/to bob: effects %v", got)
	}
	tu.msg(loadResult{conv: dm})
	tu.shows("pim chat · alice/laptop · @bob", "No messages yet with @bob")

	tu.typeLine("hello bob")
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effSend{local: 1, conv: dm, text: "hello bob"}}) {
		t.Fatalf("Enter: effects %v", got)
	}
	tu.shows("09:30 me: hello bob "+markQueued, "1 unsent")
	if in := tu.u.input; len(in) != 0 {
		t.Fatalf("input not cleared: %q", string(in))
	}

	// The SDK reports states before Send returned the id: they wait.
	tu.ev(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Queued})
	tu.ev(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Sending, Attempts: 1})
	tu.shows("hello bob " + markQueued)
	tu.msg(sendResult{local: 1, id: "m1"})
	tu.shows("hello bob " + markSending)

	tu.ev(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Sent,
		Ack: &pimv1.SendAck{ClientMsgId: "m1", Conv: dm, Seq: 1, ServerTime: time.Date(2030, 1, 2, 9, 31, 0, 0, time.UTC).UnixMilli()}})
	tu.shows("09:31 me: hello bob " + markSent)
	tu.lacks("unsent")
	// The echo updates the line, it adds none; a late state changes nothing.
	tu.ev(pim.MessageEvent{UserSeq: 1, Own: true, Message: textMsg(dm, 1, "alice", "laptop", "hello bob", "m1")})
	tu.ev(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Sending})
	if n := strings.Count(tu.screen(), "hello bob"); n != 1 {
		t.Fatalf("%d lines of hello bob:\n%s", n, tu.screen())
	}
	tu.shows("hello bob " + markSent)
	// bob read it: a receipt.
	tu.ev(pim.ReadEvent{UserSeq: 2, Conv: dm, Seq: 1, User: "bob", Device: "phone"})
	tu.shows("hello bob " + markRead)
	if got := tu.takeEffs(); len(got) != 0 {
		t.Fatalf("unexpected effects %v", got)
	}
}

func TestChatEchoBeforeSendReturned(t *testing.T) {
	tu := newTestUI(t)
	tu.typeLine("/to bob")
	tu.typeLine("fast")
	tu.ev(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Sent, Ack: &pimv1.SendAck{Seq: 1}})
	tu.ev(pim.MessageEvent{UserSeq: 1, Own: true, Message: textMsg(dm, 1, "alice", "laptop", "fast", "m1")})
	tu.msg(sendResult{local: 1, id: "m1"})
	if n := strings.Count(tu.screen(), "fast"); n != 1 {
		t.Fatalf("%d lines of fast:\n%s", n, tu.screen())
	}
	tu.shows("me: fast " + markSent)
	tu.lacks("unsent")
}

func TestChatUnreadCountsAndMarkRead(t *testing.T) {
	// With nothing open, Tab opens the first conversation of the list.
	first := newTestUI(t)
	first.ev(pim.MessageEvent{UserSeq: 1, Message: textMsg(dm, 1, "bob", "phone", "old", "")})
	first.ev(pim.MessageEvent{UserSeq: 2, Message: textMsg("d:alice:carol", 1, "carol", "pc", "new", "")})
	first.key(tea.KeyTab)
	first.shows("· @carol", "carol: new")

	tu := newTestUI(t)
	tu.typeLine("/group team")
	tu.takeEffs()
	for i := uint64(1); i <= 2; i++ {
		tu.ev(pim.MessageEvent{UserSeq: i, Message: textMsg(dm, i, "bob", "phone", fmt.Sprintf("ping %d", i), "")})
	}
	tu.ev(pim.MessageEvent{UserSeq: 3, Message: textMsg("d:alice:carol", 1, "carol", "pc", "yo", "")})
	tu.showsRe(`@bob +\(2\)│`, `@carol +\(1\)│`, `#team +│`)
	if got := tu.takeEffs(); len(got) != 0 {
		t.Fatalf("marked read without looking: %v", got)
	}
	// A message in the open conversation is read as it arrives.
	tu.ev(pim.MessageEvent{UserSeq: 4, Message: textMsg("g:team", 1, "dave", "pc", "standup?", "")})
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effMarkRead{conv: "g:team", seq: 1}}) {
		t.Fatalf("effects %v", got)
	}
	tu.lacksRe(`#team +\(\d`)

	// Switching to a conversation marks it read up to its last seq. The
	// list is #team, @carol, @bob (most recent first): back from the top
	// wraps to @bob.
	tu.key(tea.KeyShiftTab)
	tu.shows("· @bob", "bob: ping 1", "bob: ping 2")
	tu.lacksRe(`@bob +\(\d`)
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effMarkRead{conv: dm, seq: 2}}) {
		t.Fatalf("effects after switching to @bob: %v", got)
	}
	// carol's conversation was read on another device.
	tu.showsRe(`@carol +\(1\)│`)
	tu.ev(pim.ReadEvent{UserSeq: 5, Conv: "d:alice:carol", Seq: 1, User: "alice", Device: "phone", Own: true})
	tu.lacksRe(`@carol +\(\d`)
	// My own messages from another device are not unread.
	tu.ev(pim.MessageEvent{UserSeq: 6, Message: textMsg("d:alice:carol", 2, "alice", "phone", "from my phone", "x")})
	tu.lacksRe(`@carol +\(\d`)
	tu.key(tea.KeyTab) // @carol is on top now
	tu.shows("· @carol", "me (phone): from my phone")
}

func TestChatFailedAndRetry(t *testing.T) {
	tu := newTestUI(t)
	tu.typeLine("/to bob")
	tu.typeLine("one")
	tu.typeLine("two")
	tu.takeEffs()
	tu.msg(sendResult{local: 1, id: "m1"})
	tu.msg(sendResult{local: 2, err: errors.New("pim: client closed")})
	tu.ev(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Failed, Err: pim.ErrRetryBudget, Attempts: 5})
	tu.shows("me: one "+markFailed+" failed: retry budget spent (/retry)",
		"me: two "+markFailed+" failed: not queued: client closed", "2 failed")

	tu.typeLine("/retry")
	want := []any{effRetry{id: "m1"}, effSend{local: 2, conv: dm, text: "two"}}
	if got := tu.takeEffs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("/retry: effects %v, want %v", got, want)
	}
	tu.shows("me: one "+markQueued, "me: two "+markQueued, "retrying 2 message(s)")
	tu.lacks("failed:")
	tu.msg(sendResult{local: 2, id: "m2"})
	tu.ev(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Sent, Ack: &pimv1.SendAck{Seq: 1}})
	tu.ev(pim.SendStateEvent{ClientMsgID: "m2", Conv: dm, State: pim.Sent, Ack: &pimv1.SendAck{Seq: 2}})
	tu.shows("me: one "+markSent, "me: two "+markSent)
	tu.typeLine("/retry")
	tu.shows("nothing failed here to retry")
	tu.takeEffs()

	// A refusal by the server shows its message and code.
	tu.typeLine("/group secret")
	tu.typeLine("let me in")
	tu.msg(sendResult{local: 3, id: "m3"})
	tu.ev(pim.SendStateEvent{ClientMsgID: "m3", Conv: "g:secret", State: pim.Failed,
		Err: &pim.ServerError{Code: pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, Message: "not a member of g:secret"}})
	tu.shows("failed: not a member of g:secret (code FORBIDDEN)")
	tu.takeEffs()
	tu.typeLine("/discard")
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effDiscard{id: "m3"}}) {
		t.Fatalf("/discard: effects %v", got)
	}
	tu.lacks("let me in")
	tu.shows("discarded 1 failed message(s)")
}

func TestChatStatusLine(t *testing.T) {
	tu := newTestUI(t)
	now := time.Date(2030, 1, 2, 9, 30, 0, 0, time.UTC)
	tu.ev(pim.ConnStateEvent{State: pim.Connecting, Addr: "tcp://127.0.0.1:7400"})
	tu.shows("○ connecting tcp://127.0.0.1:7400")
	tu.ev(pim.ConnStateEvent{State: pim.Connected, Addr: "tcp://127.0.0.1:7400"})
	tu.shows("● connected tcp://127.0.0.1:7400, catching up")
	tu.ev(pim.CaughtUpEvent{UserSeq: 0})
	tu.msg(clockInfo{now: now, offset: -3 * time.Millisecond, bound: 400 * time.Microsecond, ok: true})
	tu.shows("● connected tcp://127.0.0.1:7400, up to date · clock -3.0ms ±400µs")
	tu.ev(pim.ConnStateEvent{State: pim.Disconnected, Addr: "tcp://127.0.0.1:7400",
		Err: errors.New("pim: connection refused"), Retry: now.Add(2 * time.Second)})
	tu.shows("○ offline, retry in 2s · clock -3.0ms ±400µs · connection refused")
	tu.ev(pim.ConnStateEvent{State: pim.Stopped, Err: &pim.ServerError{Code: pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, Message: "token expired"}})
	tu.shows("✗ stopped · clock -3.0ms ±400µs · token expired (code UNAUTHENTICATED)")
}

func TestChatCommandsAndKeys(t *testing.T) {
	tu := newTestUI(t)
	tu.typeLine("no conversation yet")
	tu.shows("error: no conversation open")
	if got := tu.takeEffs(); len(got) != 0 {
		t.Fatalf("effects %v", got)
	}
	tu.typeLine("/bogus")
	tu.shows("error: unknown command /bogus")
	tu.typeLine("/to not valid")
	tu.shows("error: usage: /to USER")
	tu.typeLine("/create team bob carol")
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effCreate{group: "g:team", members: []string{"bob", "carol"}}, effLoad{conv: "g:team"}}) {
		t.Fatalf("/create: effects %v", got)
	}
	tu.shows("· #team")
	tu.typeLine("/reconnect")
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effReconnect{}}) {
		t.Fatalf("/reconnect: effects %v", got)
	}
	tu.typeLine("//etc/hosts is a path")
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effSend{local: 1, conv: "g:team", text: "/etc/hosts is a path"}}) {
		t.Fatalf("//: effects %v", got)
	}
	// Editing: cursor moves, backspace, delete, Ctrl-U.
	tu.msg(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("helo")})
	tu.key(tea.KeyLeft).msg(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("l")})
	tu.key(tea.KeyEnd).key(tea.KeyBackspace).msg(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("o!")})
	if got := string(tu.u.input); got != "hello!" {
		t.Fatalf("input %q", got)
	}
	tu.key(tea.KeyHome).key(tea.KeyDelete)
	if got := string(tu.u.input); got != "ello!" {
		t.Fatalf("input %q", got)
	}
	tu.key(tea.KeyRight).key(tea.KeyCtrlU)
	if got := string(tu.u.input); got != "llo!" {
		t.Fatalf("Ctrl-U left %q", got)
	}
	tu.key(tea.KeyCtrlK)
	if len(tu.u.input) != 0 {
		t.Fatalf("Ctrl-K left %q", string(tu.u.input))
	}
	for _, quit := range []func(){
		func() { tu.typeLine("/quit") },
		func() { tu.key(tea.KeyCtrlC) },
	} {
		tu.takeEffs()
		quit()
		if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effQuit{}}) {
			t.Fatalf("quit: effects %v", got)
		}
	}
}

// History from the local store is shown once, not as unread; events the
// store already had are ignored; a message an earlier run left in the
// outbox gets its text from its echo.
func TestChatSeedAndHistory(t *testing.T) {
	tu := newTestUI(t)
	s := tu.u.s
	s.seed([]pim.TimelineEntry{
		{UserSeq: 1, Message: textMsg(dm, 1, "bob", "phone", "old one", "")},
		{UserSeq: 2, Message: textMsg(dm, 2, "alice", "laptop", "old reply", "r1")},
	}, 3)
	tu.shows(" @bob ")
	tu.lacksRe(`@bob +\(\d`)
	tu.ev(pim.MessageEvent{UserSeq: 2, Message: textMsg(dm, 2, "alice", "laptop", "old reply", "r1"), Own: true})
	tu.ev(pim.ReadEvent{UserSeq: 3, Conv: dm, Seq: 9, User: "bob", Device: "phone"})
	tu.typeLine("/to bob")
	tu.msg(loadResult{conv: dm, msgs: []*pim.Message{
		textMsg(dm, 1, "bob", "phone", "old one", ""), textMsg(dm, 2, "alice", "laptop", "old reply", "r1"),
	}})
	for _, w := range []string{"old one", "old reply"} {
		if n := strings.Count(tu.screen(), w); n != 1 {
			t.Fatalf("%d lines of %q:\n%s", n, w, tu.screen())
		}
	}
	tu.shows("me: old reply " + markSent)
	tu.lacks("reply " + markRead) // the receipt at user seq 3 was before this run

	// Restart with a message in the outbox.
	tu2 := newTestUI(t)
	tu2.u.s.seedPending("m9", dm, pim.Sending, nil)
	tu2.typeLine("/to bob")
	tu2.shows("me: (queued by an earlier run) " + markSending)
	tu2.ev(pim.SendStateEvent{ClientMsgID: "m9", Conv: dm, State: pim.Sent, Ack: &pimv1.SendAck{Seq: 4}})
	tu2.ev(pim.MessageEvent{UserSeq: 7, Own: true, Message: textMsg(dm, 4, "alice", "laptop", "written offline", "m9")})
	tu2.shows("me: written offline " + markSent)
	tu2.lacks("earlier run")

	// A resync clears what was shown.
	tu2.ev(pim.ResyncEvent{OldEpoch: "a", NewEpoch: "b"})
	tu2.lacks("written offline")
	tu2.shows("delivered again")
	tu2.ev(pim.MessageEvent{UserSeq: 1, Message: textMsg(dm, 1, "bob", "phone", "again", "")})
	tu2.shows("bob: again")
}

// The --plain log: one line per event, starting with its kind.
func TestChatPlainLog(t *testing.T) {
	s := newChatState("alice", "laptop", time.UTC)
	s.open(dm)
	s.apply(pim.ConnStateEvent{State: pim.Connected, Addr: "tcp://h:1"})
	s.apply(pim.CaughtUpEvent{})
	s.apply(pim.MessageEvent{UserSeq: 1, Message: textMsg(dm, 1, "bob", "phone", "hi\nthere", "")})
	s.submit("hello")
	s.result(sendResult{local: 1, id: "m1"})
	s.apply(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Sending})
	s.apply(pim.SendStateEvent{ClientMsgID: "m1", Conv: dm, State: pim.Sent, Ack: &pimv1.SendAck{Seq: 2}})
	s.apply(pim.MessageEvent{UserSeq: 2, Own: true, Message: textMsg(dm, 2, "alice", "laptop", "hello", "m1")})
	s.apply(pim.ReadEvent{UserSeq: 3, Conv: dm, Seq: 2, User: "bob", Device: "phone"})
	s.submit("/nope")
	want := []string{
		"info conversation @bob (d:alice:bob)",
		"conn connected tcp://h:1",
		"caught-up",
		`msg d:alice:bob #1 bob/phone: "hi\nthere"`,
		"send d:alice:bob id=m1 queued: hello",
		"send d:alice:bob id=m1 sending",
		"send d:alice:bob id=m1 sent #2",
		"read d:alice:bob #2 by bob/phone",
		"error unknown command /nope (" + chatHelp + ")",
	}
	if got := s.takeLog(); !reflect.DeepEqual(got, want) {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Every row fits the terminal and the screen has exactly its height, with
// long messages wrapped and PgUp scrolling back.
func TestChatViewFits(t *testing.T) {
	for _, size := range [][2]int{{100, 16}, {40, 10}, {20, 4}} {
		tu := newTestUI(t)
		tu.msg(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		tu.typeLine("/to bob")
		for i := uint64(1); i <= 30; i++ {
			tu.ev(pim.MessageEvent{UserSeq: i, Message: textMsg(dm, i, "bob", "phone",
				fmt.Sprintf("message %d %s", i, strings.Repeat("word ", int(i%7)*8)), "")})
		}
		tu.typeLine("/group a-very-long-group-name-that-does-not-fit")
		tu.key(tea.KeyTab)
		tu.msg(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(strings.Repeat("x", 150) + "日本語")})
		check := func() {
			rows := strings.Split(tu.u.View(), "\n")
			if len(rows) != size[1] {
				t.Fatalf("%v: %d rows", size, len(rows))
			}
			for _, r := range rows {
				if w := ansi.StringWidth(r); w > size[0] {
					t.Fatalf("%v: row of width %d: %q", size, w, ansi.Strip(r))
				}
			}
		}
		check()
		if size[1] > 8 {
			tu.shows("message 30")
			tu.key(tea.KeyPgUp)
			tu.shows("↓ ")
			tu.lacks("message 30")
			check()
			for range 100 {
				tu.key(tea.KeyPgUp)
			}
			tu.shows("message 1 ")
			tu.key(tea.KeyPgDown)
			for range 100 {
				tu.key(tea.KeyPgDown)
			}
			tu.shows("message 30")
		}
	}
}

// A server that refuses read marks gets no more of them this run; unread
// counts still clear locally.
func TestChatReadMarksRefused(t *testing.T) {
	tu := newTestUI(t)
	tu.typeLine("/to bob")
	tu.takeEffs()
	tu.ev(pim.MessageEvent{UserSeq: 1, Message: textMsg(dm, 1, "bob", "phone", "one", "")})
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effMarkRead{conv: dm, seq: 1}}) {
		t.Fatalf("effects %v", got)
	}
	refusal := &pim.ServerError{Code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL, Message: "read_req frames are sent by the server only"}
	// The refusal may come before MarkRead returned the command's id.
	tu.ev(pim.CommandResultEvent{ID: 7, Err: refusal})
	tu.msg(opResult{what: "mark read", read: 7})
	tu.shows("read marks are off")
	tu.ev(pim.MessageEvent{UserSeq: 2, Message: textMsg(dm, 2, "bob", "phone", "two", "")})
	if got := tu.takeEffs(); len(got) != 0 {
		t.Fatalf("marked read after a refusal: %v", got)
	}
	tu.lacksRe(`@bob +\(\d`)

	// The other order: the id first, then the refusal.
	tu2 := newTestUI(t)
	tu2.typeLine("/to bob")
	tu2.ev(pim.MessageEvent{UserSeq: 1, Message: textMsg(dm, 1, "bob", "phone", "one", "")})
	tu2.msg(opResult{what: "mark read", read: 3})
	tu2.ev(pim.CommandResultEvent{ID: 3, Err: refusal})
	tu2.shows("read marks are off")
	tu2.takeEffs()
	tu2.typeLine("/read")
	if got := tu2.takeEffs(); len(got) != 0 {
		t.Fatalf("/read after a refusal: %v", got)
	}
}

// The SDK's conversation list drives the unread counts (also of messages
// never shown here), opening a conversation marks it read up to the list's
// last message, and receipts mark my messages: read and delivered in 1:1,
// read counts in groups. A message deleted for me disappears.
func TestChatListUnreadAndReceiptMarks(t *testing.T) {
	tu := newTestUI(t)
	s := tu.u.s
	for i := uint64(1); i <= 4; i++ {
		tu.ev(pim.MessageEvent{UserSeq: i, Own: true, Message: textMsg(dm, i, "alice", "laptop", fmt.Sprintf("mine %d", i), fmt.Sprintf("m%d", i))})
	}
	tu.ev(pim.MessageEvent{UserSeq: 5, Message: textMsg("g:team", 2, "alice", "laptop", "to the team", "g2")})
	tu.ev(pim.MessageEvent{UserSeq: 6, Message: textMsg("g:team", 3, "alice", "phone", "from my phone", "g3")})
	// The list (as at start, or after a reconnect): bob wrote 3 more that
	// this run never showed; bob read up to 2, got up to 4.
	s.seedList([]pim.Conversation{
		{Conv: "d:alice:carol", LastSeq: 1, Unread: 1, Activity: 12},
		{Conv: dm, LastSeq: 7, Unread: 3, Activity: 11, PeerReadSeq: 2, PeerDeliveredSeq: 4},
		{Conv: "g:team", LastSeq: 3, Activity: 6, JoinSeq: 1},
	})
	tu.showsRe(`@carol +\(1\)│`, `@bob +\(3\)│`, `#team +│`)
	if got := tu.takeEffs(); len(got) != 0 {
		t.Fatalf("marked read without looking: %v", got)
	}
	// Viewing @bob marks it read up to the list's last message.
	tu.typeLine("/to bob")
	if got := tu.takeEffs(); !reflect.DeepEqual(got, []any{effLoad{conv: dm}, effMarkRead{conv: dm, seq: 7}}) {
		t.Fatalf("effects of opening @bob: %v", got)
	}
	tu.lacksRe(`@bob +\(\d`)
	tu.shows("mine 1 "+markRead, "mine 2 "+markRead, "mine 3 "+markDelivered, "mine 4 "+markDelivered)
	tu.lacks("mine 3 " + markRead)
	// The read comes back through the list; bob read everything.
	tu.ev(pim.ReadEvent{UserSeq: 7, Conv: dm, Seq: 7, User: "alice", Device: "laptop", Own: true})
	tu.ev(pim.ReadEvent{UserSeq: 8, Conv: dm, Seq: 4, User: "bob", Device: "phone"})
	tu.ev(pim.ConversationEvent{Conversation: pim.Conversation{Conv: dm, LastSeq: 7, ReadSeq: 7, Activity: 11,
		PeerReadSeq: 4, PeerDeliveredSeq: 4, Version: 8}})
	tu.shows("mine 3 "+markRead, "mine 4 "+markRead)
	tu.lacksRe(`@bob +\(\d`)
	// carol's conversation was read on another device.
	tu.ev(pim.ConversationEvent{Conversation: pim.Conversation{Conv: "d:alice:carol", LastSeq: 1, ReadSeq: 1, Activity: 12}})
	tu.lacksRe(`@carol +\(\d`)
	// A delivered receipt for a message bob has not read.
	tu.ev(pim.MessageEvent{UserSeq: 9, Own: true, Message: textMsg(dm, 8, "alice", "laptop", "mine 8", "m8")})
	tu.shows("mine 8 " + markSent)
	tu.ev(pim.ReceiptEvent{UserSeq: 10, Conv: dm, Kind: pim.ReceiptDelivered, Seq: 8, User: "bob"})
	tu.shows("mine 8 " + markDelivered)
	tu.lacks("mine 8 " + markRead)
	// Deleted for me (on another device): the line goes.
	tu.ev(pim.HiddenEvent{UserSeq: 11, Conv: dm, Seq: 2, Device: "phone"})
	tu.lacks("mine 2")
	tu.shows("mine 1", "mine 3")
	// Group read counts, on messages from any of my devices.
	tu.ev(pim.ReceiptEvent{UserSeq: 12, Conv: "g:team", Kind: pim.ReceiptRead,
		Reads: []pim.MessageReads{{Seq: 2, ReadCount: 2}, {Seq: 3, ReadCount: 1}}})
	tu.typeLine("/group team")
	tu.shows("me: to the team "+markSent+" read by 2", "me (phone): from my phone "+markSent+" read by 1")
	// A replayed event (at or below the last user seq) changes nothing.
	tu.ev(pim.HiddenEvent{UserSeq: 11, Conv: "g:team", Seq: 2})
	tu.shows("to the team")

	// --plain: one line per receipt, deletion and change of an unread count.
	p := newChatState("alice", "laptop", time.UTC)
	p.seedList([]pim.Conversation{{Conv: dm, LastSeq: 1, Unread: 1, Activity: 1}})
	p.apply(pim.MessageEvent{UserSeq: 2, Message: textMsg(dm, 2, "bob", "phone", "more", "")})
	p.apply(pim.ConversationEvent{Conversation: pim.Conversation{Conv: dm, LastSeq: 2, Unread: 2, Activity: 2}})
	p.apply(pim.ConversationEvent{Conversation: pim.Conversation{Conv: dm, LastSeq: 2, Unread: 2, Activity: 2, PeerDeliveredSeq: 1}})
	p.apply(pim.ReceiptEvent{UserSeq: 3, Conv: dm, Kind: pim.ReceiptDelivered, Seq: 1, User: "bob"})
	p.apply(pim.HiddenEvent{UserSeq: 4, Conv: dm, Seq: 2, Device: "phone"})
	p.apply(pim.ReceiptEvent{UserSeq: 5, Conv: "g:team", Kind: pim.ReceiptRead, Reads: []pim.MessageReads{{Seq: 4, ReadCount: 3}}})
	want := []string{
		`msg d:alice:bob #2 bob/phone: more`,
		"unread d:alice:bob 2",
		"receipt d:alice:bob delivered #1 to bob",
		"hidden d:alice:bob #2 on phone",
		"receipt g:team read #4 by 3",
	}
	if got := p.takeLog(); !reflect.DeepEqual(got, want) {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
