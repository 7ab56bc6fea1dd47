package main

// Output formatting. Invariants: human output puts one event on one line
// (control characters in text are escaped); --json output is exactly one
// JSON object per line, in the field names of internal/api's views.

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pim-project/pim/internal/api"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// timeLayout is how human output shows times.
const timeLayout = "2006-01-02 15:04:05.000"

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// formatAck writes a SendAck.
func formatAck(w io.Writer, ack *pimv1.SendAck, asJSON bool) error {
	if asJSON {
		return writeJSONLine(w, api.AckView(ack))
	}
	dup := ""
	if ack.Duplicate {
		dup = " (duplicate: already sent)"
	}
	_, err := fmt.Fprintf(w, "sent %s seq=%d msg_id=%s client_msg_id=%s%s\n", ack.Conv, ack.Seq, ack.MsgId, ack.ClientMsgId, dup)
	return err
}

// unknownEvent is the JSON of a timeline event of a kind this CLI does not know.
type unknownEvent struct {
	UserSeq uint64 `json:"user_seq"`
	Type    string `json:"type"`
}

// readEvent is the JSON of a read-sync event (the user's own read on another
// device, or a 1:1 peer's read receipt).
type readEvent struct {
	UserSeq uint64 `json:"user_seq"`
	Type    string `json:"type"` // "read"
	Conv    string `json:"conv"`
	Seq     uint64 `json:"seq"`
	User    string `json:"user"`
	Device  string `json:"device"`
}

// formatEvent writes one timeline event on one line; loc is the time zone of
// human output. Every kind has a "type": a message's type ("text", ...),
// "read", "hidden", "receipt", or "unknown" for a kind this CLI does not know.
func formatEvent(w io.Writer, ev *pimv1.Event, asJSON bool, loc *time.Location) error {
	switch k := ev.Kind.(type) {
	case *pimv1.Event_Message:
		if k.Message != nil {
			return formatMessageEvent(w, ev.UserSeq, k.Message, asJSON, loc)
		}
	case *pimv1.Event_Read:
		if r := k.Read; r != nil {
			if asJSON {
				return writeJSONLine(w, readEvent{UserSeq: ev.UserSeq, Type: "read", Conv: r.Conv, Seq: r.Seq, User: r.User, Device: r.Device})
			}
			_, err := fmt.Fprintf(w, "%s read up to #%d by %s/%s\n", r.Conv, r.Seq, r.User, r.Device)
			return err
		}
	case *pimv1.Event_Hidden:
		if k.Hidden != nil {
			return formatHidden(w, ev.UserSeq, k.Hidden, asJSON)
		}
	case *pimv1.Event_Receipt:
		if k.Receipt != nil {
			return formatReceipt(w, ev.UserSeq, k.Receipt, asJSON)
		}
	}
	if asJSON {
		return writeJSONLine(w, unknownEvent{UserSeq: ev.UserSeq, Type: "unknown"})
	}
	_, err := fmt.Fprintf(w, "(event %d of an unknown kind)\n", ev.UserSeq)
	return err
}

func formatMessageEvent(w io.Writer, userSeq uint64, m *pimv1.Message, asJSON bool, loc *time.Location) error {
	if asJSON {
		return writeJSONLine(w, api.MessageView(m, userSeq))
	}
	ts := time.UnixMilli(m.ServerTime).In(loc).Format(timeLayout)
	_, err := fmt.Fprintf(w, "%s %s #%d %s/%s: %s\n", ts, m.Conv, m.Seq, m.Sender, m.SenderDevice, describe(m))
	return err
}

// describe is the human text of a message.
func describe(m *pimv1.Message) string {
	members := strings.Join(m.Members, ", ")
	switch m.Type {
	case pimv1.MessageType_MESSAGE_TYPE_TEXT:
		return oneLine(string(m.Body))
	case pimv1.MessageType_MESSAGE_TYPE_BINARY:
		return fmt.Sprintf("[binary, %d bytes]", len(m.Body))
	case pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED:
		return "[created the group: " + members + "]"
	case pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED:
		return "[added " + members + "]"
	case pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED:
		return "[removed " + members + "]"
	}
	return fmt.Sprintf("[%s, %d bytes]", api.TypeName(m.Type), len(m.Body))
}

// oneLine returns s, quoted Go-style if it holds control characters (a
// newline would split the event over lines).
func oneLine(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// formatGroup writes a group after an operation (verb: "created", "added to",
// "removed from", or "" for a plain listing).
func formatGroup(w io.Writer, g *pimv1.GroupResp, verb string, asJSON bool) error {
	if asJSON {
		return writeJSONLine(w, api.GroupView(g))
	}
	if verb == "" {
		for _, m := range g.Members {
			if _, err := fmt.Fprintf(w, "%s\t%s\t%d\n", m.User, m.Role, m.JoinSeq); err != nil {
				return err
			}
		}
		return nil
	}
	var names []string
	for _, m := range g.Members {
		n := m.User
		if m.Role == "owner" {
			n += " (owner)"
		}
		names = append(names, n)
	}
	line := fmt.Sprintf("%s %s", verb, g.Group)
	if g.Seq != 0 {
		line += fmt.Sprintf(" (seq %d)", g.Seq)
	}
	if len(names) > 0 {
		line += ": members " + strings.Join(names, ", ")
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
