package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func TestFormatAck(t *testing.T) {
	ack := &pimv1.SendAck{ClientMsgId: "c1", Conv: "d:alice:bob", Seq: 7, MsgId: "m7", ServerTime: 1700000000123}
	var b bytes.Buffer
	if err := formatAck(&b, ack, false); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "sent d:alice:bob seq=7 msg_id=m7 client_msg_id=c1\n" {
		t.Errorf("human: %q", got)
	}
	b.Reset()
	ack.Duplicate = true
	formatAck(&b, ack, false)
	if !strings.Contains(b.String(), "duplicate") {
		t.Errorf("human duplicate: %q", b.String())
	}
	b.Reset()
	formatAck(&b, ack, true)
	want := `{"conv":"d:alice:bob","seq":7,"msg_id":"m7","server_time":1700000000123,"client_msg_id":"c1","duplicate":true}` + "\n"
	if b.String() != want {
		t.Errorf("json: %s want %s", b.String(), want)
	}
}

func msgEvent(userSeq uint64, m *pimv1.Message) *pimv1.Event {
	return &pimv1.Event{UserSeq: userSeq, Kind: &pimv1.Event_Message{Message: m}}
}

func TestFormatEventJSON(t *testing.T) {
	base := func(typ pimv1.MessageType, body []byte, members ...string) *pimv1.Message {
		return &pimv1.Message{Conv: "g:team", Seq: 3, MsgId: "m3", Sender: "alice", SenderDevice: "cli",
			ClientMsgId: "c3", Type: typ, Body: body, Members: members, ServerTime: 2000, ClientTime: 1999}
	}
	tests := []struct {
		name string
		ev   *pimv1.Event
		want map[string]any
		omit []string
	}{
		{"text", msgEvent(9, base(pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte("hi\nthere"))), map[string]any{
			"conv": "g:team", "seq": 3.0, "user_seq": 9.0, "msg_id": "m3", "sender": "alice", "sender_device": "cli",
			"client_msg_id": "c3", "type": "text", "body": "hi\nthere", "server_time": 2000.0, "client_time": 1999.0,
		}, []string{"body_base64", "members"}},
		{"binary", msgEvent(10, base(pimv1.MessageType_MESSAGE_TYPE_BINARY, []byte{0, 0xff})), map[string]any{
			"type": "binary", "body_base64": "AP8=",
		}, []string{"body", "members"}},
		{"group created", msgEvent(11, base(pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, nil, "alice", "bob")), map[string]any{
			"type": "group_created", "members": []any{"alice", "bob"},
		}, []string{"body", "body_base64"}},
		{"members added", msgEvent(12, base(pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED, nil, "carol")), map[string]any{
			"type": "members_added", "members": []any{"carol"},
		}, nil},
		{"members removed", msgEvent(13, base(pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED, nil, "carol")), map[string]any{
			"type": "members_removed",
		}, nil},
		{"unknown kind", &pimv1.Event{UserSeq: 14}, map[string]any{"user_seq": 14.0, "type": "unknown"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := formatEvent(&b, tc.ev, true, time.UTC); err != nil {
				t.Fatal(err)
			}
			if strings.Count(b.String(), "\n") != 1 {
				t.Fatalf("not one line: %q", b.String())
			}
			var got map[string]any
			if err := json.Unmarshal(b.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				gb, _ := json.Marshal(got[k])
				wb, _ := json.Marshal(v)
				if string(gb) != string(wb) {
					t.Errorf("%s = %s, want %s", k, gb, wb)
				}
			}
			for _, k := range tc.omit {
				if _, ok := got[k]; ok {
					t.Errorf("%s present", k)
				}
			}
		})
	}
}

func TestFormatEventHuman(t *testing.T) {
	m := func(typ pimv1.MessageType, body string, members ...string) *pimv1.Event {
		return msgEvent(1, &pimv1.Message{Conv: "d:alice:bob", Seq: 4, Sender: "bob", SenderDevice: "phone",
			Type: typ, Body: []byte(body), Members: members, ServerTime: 1700000000123})
	}
	tests := []struct {
		ev   *pimv1.Event
		want string
	}{
		{m(pimv1.MessageType_MESSAGE_TYPE_TEXT, "hello"), "2023-11-14 22:13:20.123 d:alice:bob #4 bob/phone: hello\n"},
		{m(pimv1.MessageType_MESSAGE_TYPE_TEXT, "two\nlines"), "2023-11-14 22:13:20.123 d:alice:bob #4 bob/phone: \"two\\nlines\"\n"},
		{m(pimv1.MessageType_MESSAGE_TYPE_TEXT, "tab\tok"), "2023-11-14 22:13:20.123 d:alice:bob #4 bob/phone: tab\tok\n"},
		{m(pimv1.MessageType_MESSAGE_TYPE_BINARY, "abc"), "2023-11-14 22:13:20.123 d:alice:bob #4 bob/phone: [binary, 3 bytes]\n"},
		{m(pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, "", "bob", "alice"), "2023-11-14 22:13:20.123 d:alice:bob #4 bob/phone: [created the group: bob, alice]\n"},
		{m(pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED, "", "carol"), "2023-11-14 22:13:20.123 d:alice:bob #4 bob/phone: [added carol]\n"},
		{m(pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED, "", "carol"), "2023-11-14 22:13:20.123 d:alice:bob #4 bob/phone: [removed carol]\n"},
		{&pimv1.Event{UserSeq: 5}, "(event 5 of an unknown kind)\n"},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		if err := formatEvent(&b, tc.ev, false, time.UTC); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("got  %q\nwant %q", b.String(), tc.want)
		}
	}
}

func TestFormatGroup(t *testing.T) {
	g := &pimv1.GroupResp{Group: "g:team", Seq: 2, Members: []*pimv1.Member{
		{User: "alice", Role: "owner", JoinSeq: 1}, {User: "bob", Role: "member", JoinSeq: 2},
	}}
	tests := []struct {
		verb   string
		asJSON bool
		want   string
	}{
		{"created", false, "created g:team (seq 2): members alice (owner), bob\n"},
		{"", false, "alice\towner\t1\nbob\tmember\t2\n"},
		{"added to", true, `{"group":"g:team","seq":2,"members":[{"user":"alice","role":"owner","join_seq":1},{"user":"bob","role":"member","join_seq":2}],"receipts_visible":false}` + "\n"},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		if err := formatGroup(&b, g, tc.verb, tc.asJSON); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("verb %q json %v:\n got %q\nwant %q", tc.verb, tc.asJSON, b.String(), tc.want)
		}
	}
	// After leaving: no members, no list.
	var b bytes.Buffer
	formatGroup(&b, &pimv1.GroupResp{Group: "g:team", Seq: 5}, "removed from", false)
	if b.String() != "removed from g:team (seq 5)\n" {
		t.Errorf("got %q", b.String())
	}
	b.Reset()
	formatGroup(&b, &pimv1.GroupResp{Group: "g:team"}, "", true)
	if b.String() != `{"group":"g:team","members":[],"receipts_visible":false}`+"\n" {
		t.Errorf("got %q", b.String())
	}
}
