package main

// Output of the read state: conversation lists, receipts, and the Hidden and
// Receipt timeline events. Invariants: as in format.go, --json output is
// exactly one JSON object per line in the field names of internal/api's
// views (a conversation line carries every scalar field of the list entry,
// zero values included, so scripts need no defaults), and human output puts
// one event or one conversation on one line (message text made one-line and
// free of tabs, so table columns stay aligned).

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/pim-project/pim/internal/api"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// previewRunes is the longest last-message preview of the human list.
const previewRunes = 60

// hiddenEvent is the JSON of a Hidden event ("delete for me" on a device).
type hiddenEvent struct {
	UserSeq uint64 `json:"user_seq"`
	Type    string `json:"type"` // "hidden"
	Conv    string `json:"conv"`
	Seq     uint64 `json:"seq"`
	Device  string `json:"device"`
}

// receiptEvent is the JSON of a Receipt event: "delivered" carries seq and
// user (the peer), "read" the new read counts of the user's messages.
type receiptEvent struct {
	UserSeq  uint64         `json:"user_seq"`
	Type     string         `json:"type"` // "receipt"
	Kind     string         `json:"kind"` // "delivered", "read"
	Conv     string         `json:"conv"`
	Seq      uint64         `json:"seq,omitempty"`
	User     string         `json:"user,omitempty"`
	Messages []messageReads `json:"messages,omitempty"`
}

type messageReads struct {
	Seq       uint64 `json:"seq"`
	ReadCount uint32 `json:"read_count"`
}

// receiptKindName is the short lower-case name of a receipt kind:
// "delivered", "read".
func receiptKindName(k pimv1.ReceiptKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "RECEIPT_KIND_"))
}

func formatHidden(w io.Writer, userSeq uint64, h *pimv1.Hidden, asJSON bool) error {
	if asJSON {
		return writeJSONLine(w, hiddenEvent{UserSeq: userSeq, Type: "hidden", Conv: h.Conv, Seq: h.Seq, Device: h.Device})
	}
	_, err := fmt.Fprintf(w, "%s #%d hidden (deleted for you on %s)\n", h.Conv, h.Seq, h.Device)
	return err
}

func formatReceipt(w io.Writer, userSeq uint64, r *pimv1.Receipt, asJSON bool) error {
	if asJSON {
		v := receiptEvent{UserSeq: userSeq, Type: "receipt", Kind: receiptKindName(r.Kind), Conv: r.Conv, Seq: r.Seq, User: r.User}
		for _, m := range r.Messages {
			v.Messages = append(v.Messages, messageReads{Seq: m.Seq, ReadCount: m.ReadCount})
		}
		return writeJSONLine(w, v)
	}
	var err error
	switch r.Kind {
	case pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED:
		_, err = fmt.Fprintf(w, "%s delivered up to #%d to %s\n", r.Conv, r.Seq, r.User)
	case pimv1.ReceiptKind_RECEIPT_KIND_READ:
		counts := make([]string, 0, len(r.Messages))
		for _, m := range r.Messages {
			counts = append(counts, fmt.Sprintf("#%d by %d", m.Seq, m.ReadCount))
		}
		_, err = fmt.Fprintf(w, "%s read: %s\n", r.Conv, strings.Join(counts, ", "))
	default:
		_, err = fmt.Fprintf(w, "%s receipt of an unknown kind (%s)\n", r.Conv, receiptKindName(r.Kind))
	}
	return err
}

// convLine is the JSON of one conversation-list entry.
type convLine struct {
	Conv             string        `json:"conv"`
	LastSeq          uint64        `json:"last_seq"`
	ReadSeq          uint64        `json:"read_seq"`
	Unread           uint64        `json:"unread"`
	Version          uint64        `json:"version"`
	Activity         uint64        `json:"activity"`
	JoinSeq          uint64        `json:"join_seq"`
	Left             bool          `json:"left"`
	PeerReadSeq      uint64        `json:"peer_read_seq"`
	PeerDeliveredSeq uint64        `json:"peer_delivered_seq"`
	LastMessage      *shortMessage `json:"last_message,omitempty"`
}

// shortMessage is the last message of a list entry: the fields of
// api.Message that say who wrote what and when (a binary body is left out:
// read it with the history).
type shortMessage struct {
	Seq          uint64   `json:"seq"`
	MsgID        string   `json:"msg_id"`
	Sender       string   `json:"sender"`
	SenderDevice string   `json:"sender_device"`
	Type         string   `json:"type"`
	Body         string   `json:"body,omitempty"`
	Members      []string `json:"members,omitempty"`
	ServerTime   int64    `json:"server_time"`
}

func convLineOf(c *pimv1.Conversation) convLine {
	v := convLine{
		Conv: c.Conv, LastSeq: c.LastSeq, ReadSeq: c.ReadSeq, Unread: c.Unread, Version: c.Version,
		Activity: c.Activity, JoinSeq: c.JoinSeq, Left: c.Left, PeerReadSeq: c.PeerReadSeq,
		PeerDeliveredSeq: c.PeerDeliveredSeq,
	}
	if m := c.LastMessage; m != nil {
		full := api.MessageView(m, 0)
		v.LastMessage = &shortMessage{
			Seq: full.Seq, MsgID: full.MsgID, Sender: full.Sender, SenderDevice: full.SenderDevice,
			Type: full.Type, Body: full.Body, Members: full.Members, ServerTime: full.ServerTime,
		}
	}
	return v
}

// convTable writes the human conversation list: a header, then one row per
// entry as it is added, aligned when flushed.
type convTable struct {
	tw   *tabwriter.Writer
	loc  *time.Location
	rows int
}

func newConvTable(w io.Writer, loc *time.Location) *convTable {
	return &convTable{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0), loc: loc}
}

func (t *convTable) add(c *pimv1.Conversation) error {
	if t.rows == 0 {
		if _, err := fmt.Fprintln(t.tw, "CONV\tUNREAD\tREAD\tLAST\tPEER\tLAST MESSAGE"); err != nil {
			return err
		}
	}
	t.rows++
	name := c.Conv
	if c.Left {
		name += " (left)"
	}
	_, err := fmt.Fprintf(t.tw, "%s\t%d\t%d\t%d\t%s\t%s\n", name, c.Unread, c.ReadSeq, c.LastSeq, peerState(c), t.preview(c.LastMessage))
	return err
}

func (t *convTable) flush() error { return t.tw.Flush() }

// peerState is what a 1:1 conversation's peer did with the user's messages.
func peerState(c *pimv1.Conversation) string {
	r, d := c.PeerReadSeq, c.PeerDeliveredSeq
	switch {
	case r > 0 && d > r:
		return fmt.Sprintf("read #%d, delivered #%d", r, d)
	case r > 0:
		return fmt.Sprintf("read #%d", r)
	case d > 0:
		return fmt.Sprintf("delivered #%d", d)
	}
	return "-"
}

func (t *convTable) preview(m *pimv1.Message) string {
	if m == nil {
		return "-"
	}
	text := strings.ReplaceAll(describe(m), "\t", " ")
	if utf8.RuneCountInString(text) > previewRunes {
		r := []rune(text)
		text = string(r[:previewRunes-1]) + "…"
	}
	ts := time.UnixMilli(m.ServerTime).In(t.loc).Format("2006-01-02 15:04")
	return fmt.Sprintf("%s #%d %s: %s", ts, m.Seq, m.Sender, text)
}

// formatReceipts writes who read a message.
func formatReceipts(w io.Writer, r api.Receipts, asJSON bool) error {
	if asJSON {
		return writeJSONLine(w, r)
	}
	if r.ReadCount == 0 && len(r.Readers) == 0 {
		_, err := fmt.Fprintf(w, "%s #%d: read by nobody yet\n", r.Conv, r.Seq)
		return err
	}
	if _, err := fmt.Fprintf(w, "%s #%d: read by %d\n", r.Conv, r.Seq, r.ReadCount); err != nil {
		return err
	}
	for _, u := range r.Readers {
		if _, err := fmt.Fprintf(w, "  %s\n", u); err != nil {
			return err
		}
	}
	return nil
}
