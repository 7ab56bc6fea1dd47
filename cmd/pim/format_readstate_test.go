package main

// Unit tests of the read-state output and of the paging of convs and
// receipts against scripted pages (no server).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func TestFormatReadStateEvents(t *testing.T) {
	read := &pimv1.Event{UserSeq: 7, Kind: &pimv1.Event_Read{Read: &pimv1.ReadSync{Conv: "d:alice:bob", Seq: 4, User: "bob", Device: "phone"}}}
	hidden := &pimv1.Event{UserSeq: 8, Kind: &pimv1.Event_Hidden{Hidden: &pimv1.Hidden{Conv: "g:team", Seq: 3, Device: "laptop"}}}
	delivered := &pimv1.Event{UserSeq: 9, Kind: &pimv1.Event_Receipt{Receipt: &pimv1.Receipt{
		Conv: "d:alice:bob", Kind: pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED, Seq: 5, User: "bob"}}}
	groupRead := &pimv1.Event{UserSeq: 10, Kind: &pimv1.Event_Receipt{Receipt: &pimv1.Receipt{
		Conv: "g:team", Kind: pimv1.ReceiptKind_RECEIPT_KIND_READ,
		Messages: []*pimv1.MessageReads{{Seq: 3, ReadCount: 2}, {Seq: 4, ReadCount: 1}}}}}
	oddReceipt := &pimv1.Event{UserSeq: 11, Kind: &pimv1.Event_Receipt{Receipt: &pimv1.Receipt{Conv: "g:team"}}}
	nilHidden := &pimv1.Event{UserSeq: 12, Kind: &pimv1.Event_Hidden{}}
	tests := []struct {
		ev    *pimv1.Event
		json  string
		human string
	}{
		{read, `{"user_seq":7,"type":"read","conv":"d:alice:bob","seq":4,"user":"bob","device":"phone"}`,
			"d:alice:bob read up to #4 by bob/phone"},
		{hidden, `{"user_seq":8,"type":"hidden","conv":"g:team","seq":3,"device":"laptop"}`,
			"g:team #3 hidden (deleted for you on laptop)"},
		{delivered, `{"user_seq":9,"type":"receipt","kind":"delivered","conv":"d:alice:bob","seq":5,"user":"bob"}`,
			"d:alice:bob delivered up to #5 to bob"},
		{groupRead, `{"user_seq":10,"type":"receipt","kind":"read","conv":"g:team","messages":[{"seq":3,"read_count":2},{"seq":4,"read_count":1}]}`,
			"g:team read: #3 by 2, #4 by 1"},
		{oddReceipt, `{"user_seq":11,"type":"receipt","kind":"unspecified","conv":"g:team"}`,
			"g:team receipt of an unknown kind (unspecified)"},
		{nilHidden, `{"user_seq":12,"type":"unknown"}`, "(event 12 of an unknown kind)"},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		if err := formatEvent(&b, tc.ev, true, time.UTC); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.json+"\n" {
			t.Errorf("json:\n got %s\nwant %s", b.String(), tc.json)
		}
		b.Reset()
		if err := formatEvent(&b, tc.ev, false, time.UTC); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.human+"\n" {
			t.Errorf("human:\n got %q\nwant %q", b.String(), tc.human)
		}
	}
}

func TestConvLineJSON(t *testing.T) {
	c := &pimv1.Conversation{Conv: "d:alice:bob", LastSeq: 3, ReadSeq: 1, Unread: 2, Version: 9, Activity: 8,
		LastMessage: &pimv1.Message{Conv: "d:alice:bob", Seq: 3, MsgId: "m3", Sender: "bob", SenderDevice: "phone",
			ClientMsgId: "c3", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi"), ServerTime: 5, ClientTime: 4}}
	var b bytes.Buffer
	writeJSONLine(&b, convLineOf(c))
	want := `{"conv":"d:alice:bob","last_seq":3,"read_seq":1,"unread":2,"version":9,"activity":8,"join_seq":0,"left":false,` +
		`"peer_read_seq":0,"peer_delivered_seq":0,"last_message":{"seq":3,"msg_id":"m3","sender":"bob","sender_device":"phone","type":"text","body":"hi","server_time":5}}` + "\n"
	if b.String() != want {
		t.Errorf("got  %s\nwant %s", b.String(), want)
	}
	// A binary last message: no body at all; no last message: no key.
	c.LastMessage.Type, c.LastMessage.Body = pimv1.MessageType_MESSAGE_TYPE_BINARY, []byte{1, 2}
	b.Reset()
	writeJSONLine(&b, convLineOf(c))
	if strings.Contains(b.String(), "body") {
		t.Errorf("binary body in %s", b.String())
	}
	c.LastMessage = nil
	b.Reset()
	writeJSONLine(&b, convLineOf(c))
	if strings.Contains(b.String(), "last_message") {
		t.Errorf("last_message in %s", b.String())
	}
}

func TestConvTable(t *testing.T) {
	long := strings.Repeat("é", previewRunes+5)
	convs := []*pimv1.Conversation{
		{Conv: "g:team", LastSeq: 12, ReadSeq: 10, Unread: 2, Left: true, LastMessage: &pimv1.Message{
			Seq: 12, Sender: "carol", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("a\tb\nc"), ServerTime: 1700000000123}},
		{Conv: "d:alice:bob", LastSeq: 5, ReadSeq: 5, PeerReadSeq: 3, PeerDeliveredSeq: 5, LastMessage: &pimv1.Message{
			Seq: 5, Sender: "alice", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(long), ServerTime: 1700000000123}},
		{Conv: "d:alice:carol", LastSeq: 1, PeerDeliveredSeq: 1},
	}
	var b bytes.Buffer
	tab := newConvTable(&b, time.UTC)
	for _, c := range convs {
		if err := tab.add(c); err != nil {
			t.Fatal(err)
		}
	}
	tab.flush()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 rows:\n%s", b.String())
	}
	for i, want := range []string{
		"CONV  UNREAD  READ  LAST  PEER  LAST MESSAGE",
		`g:team (left)  2  10  12  -  2023-11-14 22:13 #12 carol: "a\tb\nc"`,
		"d:alice:bob  0  5  5  read #3, delivered #5  2023-11-14 22:13 #5 alice: " + strings.Repeat("é", previewRunes-1) + "…",
		"d:alice:carol  0  0  1  delivered #1  -",
	} {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != strings.Join(strings.Fields(want), " ") {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[i], want)
		}
	}
	// Aligned: every row's PEER column starts where the header's does.
	col := strings.Index(lines[0], "PEER")
	if !strings.HasPrefix(lines[2][col:], "read #3") || !strings.HasPrefix(lines[3][col:], "delivered") {
		t.Errorf("columns not aligned:\n%s", b.String())
	}
}

func TestFormatReceipts(t *testing.T) {
	var b bytes.Buffer
	formatReceipts(&b, api.Receipts{Conv: "g:team", Seq: 2, ReadCount: 2, Readers: []string{"bob", "carol"}}, false)
	if b.String() != "g:team #2: read by 2\n  bob\n  carol\n" {
		t.Errorf("got %q", b.String())
	}
	b.Reset()
	formatReceipts(&b, api.Receipts{Conv: "g:team", Seq: 2, Readers: []string{}}, false)
	if b.String() != "g:team #2: read by nobody yet\n" {
		t.Errorf("got %q", b.String())
	}
	b.Reset()
	formatReceipts(&b, api.Receipts{Conv: "g:team", Seq: 2, Readers: []string{}}, true)
	if b.String() != `{"conv":"g:team","seq":2,"read_count":0,"readers":[],"has_more":false}`+"\n" {
		t.Errorf("got %q", b.String())
	}
}

// convReq is what one ConvListReq asked for.
type convReq struct {
	since, before uint64
	limit         uint32
}

// pagedList serves a conversation list the way the server pages it, from
// entries sorted by activity (newest first); change, if set, runs after
// the first page (a change while the client pages).
type pagedList struct {
	convs  []*pimv1.Conversation
	head   uint64
	reqs   []convReq
	change func(l *pagedList)
}

func (l *pagedList) fetch(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
	l.reqs = append(l.reqs, convReq{req.SinceVersion, req.BeforeActivity, req.Limit})
	limit := int(req.Limit)
	var match []*pimv1.Conversation
	if req.SinceVersion > 0 {
		for v := req.SinceVersion + 1; v <= l.head; v++ {
			for _, c := range l.convs {
				if c.Version == v {
					match = append(match, c)
				}
			}
		}
	} else {
		for _, c := range l.convs {
			if req.BeforeActivity == 0 || c.Activity < req.BeforeActivity {
				match = append(match, c)
			}
		}
	}
	resp := &pimv1.ConvListResp{Version: l.head}
	if len(match) > limit {
		match, resp.HasMore = match[:limit], true
	}
	resp.Convs = match
	if l.change != nil {
		l.change(l)
		l.change = nil
	}
	return resp, nil
}

func convNames(t *testing.T, out string) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var v struct{ Conv string }
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		names = append(names, v.Conv)
	}
	return names
}

func TestWalkConvsPages(t *testing.T) {
	mk := func() *pagedList {
		// c1 is the newest activity; versions are the order of last changes.
		return &pagedList{head: 9, convs: []*pimv1.Conversation{
			{Conv: "g:c1", Activity: 9, Version: 9}, {Conv: "g:c2", Activity: 7, Version: 8},
			{Conv: "g:c3", Activity: 5, Version: 6}, {Conv: "g:c4", Activity: 2, Version: 3},
		}}
	}
	run := func(l *pagedList, since uint64, limit int, asJSON bool) (string, error) {
		var b bytes.Buffer
		err := printConvs(context.Background(), &b, l.fetch, since, limit, asJSON, time.UTC)
		return b.String(), err
	}
	l := mk()
	out, err := run(l, 0, 0, true)
	if err != nil || strings.Join(convNames(t, out), ",") != "g:c1,g:c2,g:c3,g:c4" || len(l.reqs) != 1 {
		t.Errorf("one page: %v %q, requests %v", err, out, l.reqs)
	}

	// A server that caps pages at 2: every page is read; --limit 3 asks
	// the last page for just what is left.
	l = mk()
	capped := func(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
		c := &pimv1.ConvListReq{SinceVersion: req.SinceVersion, BeforeActivity: req.BeforeActivity, Limit: min(req.Limit, 2)}
		resp, err := l.fetch(c)
		l.reqs[len(l.reqs)-1].limit = req.Limit
		return resp, err
	}
	var b bytes.Buffer
	if err := printConvs(context.Background(), &b, capped, 0, 0, true, time.UTC); err != nil ||
		strings.Join(convNames(t, b.String()), ",") != "g:c1,g:c2,g:c3,g:c4" {
		t.Errorf("pages of 2: %v %q", err, b.String())
	}
	// The third request is the catch-up of what changed while paging.
	if want := []convReq{{0, 0, convPage}, {0, 7, convPage}, {9, 0, convPage}}; fmt.Sprint(l.reqs) != fmt.Sprint(want) {
		t.Errorf("pages of 2: requests %v, want %v", l.reqs, want)
	}
	l = mk()
	b.Reset()
	if err := printConvs(context.Background(), &b, capped, 0, 3, true, time.UTC); err != nil ||
		strings.Join(convNames(t, b.String()), ",") != "g:c1,g:c2,g:c3" {
		t.Errorf("--limit 3: %v %q", err, b.String())
	}
	if want := []convReq{{0, 0, 3}, {0, 7, 1}}; fmt.Sprint(l.reqs) != fmt.Sprint(want) {
		t.Errorf("--limit 3: requests %v, want %v", l.reqs, want)
	}

	// A server that sends more than asked: --limit still holds.
	for _, since := range []uint64{0, 1} {
		l = mk()
		greedy := func(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
			return l.fetch(&pimv1.ConvListReq{SinceVersion: req.SinceVersion, Limit: 100})
		}
		b.Reset()
		res, err := walkConvs(context.Background(), greedy, since, 2, func(c *pimv1.Conversation) error { return writeJSONLine(&b, convLineOf(c)) })
		if n := len(convNames(t, b.String())); err != nil || n != 2 || !res.truncated {
			t.Errorf("greedy server, since %d: %v, %d printed, %+v", since, err, n, res)
		}
		if since == 1 && res.version != 6 { // c4 (3), c3 (6) printed
			t.Errorf("greedy server: next version %d, want 6", res.version)
		}
	}

	// Changes since 5: oldest change first, in pages, resumed by version.
	l = mk()
	out, err = run(l, 5, 2, true)
	if err != nil || strings.Join(convNames(t, out), ",") != "g:c3,g:c2" {
		t.Errorf("--since 5 --limit 2: %v %q", err, out)
	}
	l = mk()
	out, err = run(l, 5, 0, false)
	if err != nil || !strings.Contains(out, "g:c3") || !strings.Contains(out, "list version 9") {
		t.Errorf("--since 5 human: %v %q", err, out)
	}
	l = mk()
	out, err = run(l, 9, 0, false)
	if err != nil || out != "(no changes since version 9; list version 9: `pim convs --since 9` prints what changes after this)\n" {
		t.Errorf("no changes: %v %q", err, out)
	}

	// A conversation changes while the list is paged: c4 gets a message
	// after page one and jumps to the top, above the cursor. The catch-up
	// prints it.
	l = mk()
	l.change = func(l *pagedList) {
		l.head = 10
		c4 := l.convs[3]
		c4.Activity, c4.Version = 10, 10
		l.convs = append([]*pimv1.Conversation{c4}, l.convs[:3]...)
	}
	b.Reset()
	page := func(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
		if req.SinceVersion == 0 {
			req.Limit = 2
		}
		return l.fetch(req)
	}
	res, err := walkConvs(context.Background(), page, 0, 0, func(c *pimv1.Conversation) error { return writeJSONLine(&b, convLineOf(c)) })
	if err != nil || strings.Join(convNames(t, b.String()), ",") != "g:c1,g:c2,g:c3,g:c4" || res.version != 10 {
		t.Errorf("change while paging: %v %q version %d, requests %v", err, b.String(), res.version, l.reqs)
	}
}

func TestWalkConvsRefusesNoProgress(t *testing.T) {
	stuck := func(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
		return &pimv1.ConvListResp{HasMore: true, Version: 3, Convs: []*pimv1.Conversation{{Conv: "g:x", Activity: 3, Version: 3}}}, nil
	}
	emit := func(*pimv1.Conversation) error { return nil }
	if _, err := walkConvs(context.Background(), stuck, 0, 0, emit); err == nil || !strings.Contains(err.Error(), "did not move") {
		t.Errorf("activity: %v", err)
	}
	if _, err := walkConvs(context.Background(), stuck, 3, 0, emit); err == nil || !strings.Contains(err.Error(), "did not move") {
		t.Errorf("since: %v", err)
	}
	empty := func(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
		return &pimv1.ConvListResp{HasMore: true}, nil
	}
	if _, err := walkConvs(context.Background(), empty, 0, 0, emit); err == nil {
		t.Error("empty has_more page accepted")
	}
	refused := func(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
		return nil, &errcode.Error{Code: pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, Msg: "shutting down"}
	}
	_, err := walkConvs(context.Background(), refused, 0, 0, emit)
	var ce *errcode.Error
	if err == nil || err.Error() != "conversations: shutting down (code UNAVAILABLE)" || !errors.As(err, &ce) {
		t.Errorf("refused: %v", err)
	}
}

func TestAllReceiptsPages(t *testing.T) {
	readers := []string{"a", "b", "c", "d", "e"}
	var afters []string
	fetch := func(req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error) {
		afters = append(afters, req.AfterUser)
		var page []string
		for _, r := range readers {
			if r > req.AfterUser && len(page) < 2 {
				page = append(page, r)
			}
		}
		more := page[len(page)-1] != readers[len(readers)-1]
		return &pimv1.ReceiptsResp{Conv: req.Conv, Seq: req.Seq, ReadCount: 5, Readers: page, HasMore: more}, nil
	}
	got, err := allReceipts(fetch, "g:team", 4)
	if err != nil || got.ReadCount != 5 || strings.Join(got.Readers, ",") != "a,b,c,d,e" || strings.Join(afters, ",") != ",b,d" {
		t.Errorf("got %+v, %v; afters %q", got, err, afters)
	}
	stuck := func(req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error) {
		return &pimv1.ReceiptsResp{Readers: []string{"a"}, HasMore: true}, nil
	}
	if _, err := allReceipts(stuck, "g:team", 4); err == nil || !strings.Contains(err.Error(), "did not move on") {
		t.Errorf("stuck: %v", err)
	}
}
