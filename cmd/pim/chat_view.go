package main

// The terminal UI of `pim chat`: a bubbletea model over chatState. It
// turns keys into edits of the input line and calls on the state, and
// draws the screen. Invariants:
//   - Update never blocks and never calls the SDK: effects go to run, which
//     returns the command that carries them out (a recorder in tests).
//   - View is a pure function of the model: every row fits the width, and
//     there are exactly height rows.

import (
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	pim "github.com/pim-project/pim/sdk/go"
)

// Send-state and receipt markers.
const (
	markQueued    = "◷"
	markSending   = "⇡"
	markSent      = "✓"
	markDelivered = "✓✓"
	markRead      = "✓✓ read"
	markFailed    = "✗"
)

const chatLegend = markQueued + " queued  " + markSending + " sending  " + markSent + " sent  " +
	markDelivered + " delivered  " + markRead + "  " + markFailed + " failed"

// Messages the driver sends the UI.
type (
	eventMsg struct{ ev pim.Event }
)

type chatUI struct {
	s       *chatState
	run     func(effect any) tea.Cmd
	initial []any // effects to carry out at start

	input  []rune
	cursor int // in runes
	scroll int // message rows scrolled back from the bottom
	width  int
	height int
}

func newChatUI(s *chatState, run func(any) tea.Cmd) *chatUI {
	return &chatUI{s: s, run: run, width: 80, height: 24}
}

func (u *chatUI) Init() tea.Cmd { return u.cmds(append(u.initial, u.s.autoMark()...)) }

func (u *chatUI) cmds(effs []any) tea.Cmd {
	var cs []tea.Cmd
	for _, e := range effs {
		if c := u.run(e); c != nil {
			cs = append(cs, c)
		}
	}
	return tea.Batch(cs...)
}

func (u *chatUI) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch m := msg.(type) {
	case tea.WindowSizeMsg:
		u.width, u.height = m.Width, m.Height
	case tea.KeyMsg:
		return u, u.key(m)
	case eventMsg:
		return u, u.cmds(u.s.apply(m.ev))
	case sendResult, loadResult, opResult, clockInfo:
		return u, u.cmds(u.s.result(m))
	}
	return u, nil
}

func (u *chatUI) key(k tea.KeyMsg) tea.Cmd {
	switch k.Type {
	case tea.KeyCtrlC, tea.KeyCtrlD:
		return u.run(effQuit{})
	case tea.KeyEnter:
		line := string(u.input)
		u.input, u.cursor, u.scroll = nil, 0, 0
		return u.cmds(u.s.submit(line))
	case tea.KeyTab, tea.KeyDown, tea.KeyCtrlN:
		u.scroll = 0
		return u.cmds(u.s.switchConv(1))
	case tea.KeyShiftTab, tea.KeyUp, tea.KeyCtrlP:
		u.scroll = 0
		return u.cmds(u.s.switchConv(-1))
	case tea.KeyPgUp:
		u.scroll = min(u.scroll+max(u.bodyHeight()-1, 1), u.maxScroll())
	case tea.KeyPgDown:
		u.scroll = max(u.scroll-max(u.bodyHeight()-1, 1), 0)
	case tea.KeyLeft, tea.KeyCtrlB:
		u.cursor = max(u.cursor-1, 0)
	case tea.KeyRight, tea.KeyCtrlF:
		u.cursor = min(u.cursor+1, len(u.input))
	case tea.KeyHome, tea.KeyCtrlA:
		u.cursor = 0
	case tea.KeyEnd, tea.KeyCtrlE:
		u.cursor = len(u.input)
	case tea.KeyBackspace:
		if u.cursor > 0 {
			u.input = append(u.input[:u.cursor-1], u.input[u.cursor:]...)
			u.cursor--
		}
	case tea.KeyDelete:
		if u.cursor < len(u.input) {
			u.input = append(u.input[:u.cursor], u.input[u.cursor+1:]...)
		}
	case tea.KeyCtrlU:
		u.input, u.cursor = u.input[u.cursor:], 0
	case tea.KeyCtrlK:
		u.input = u.input[:u.cursor]
	case tea.KeyEsc:
		u.s.notice = ""
	case tea.KeyRunes, tea.KeySpace:
		var rs []rune
		for _, r := range k.Runes {
			if r == '\n' || r == '\r' || r == '\t' {
				r = ' ' // a pasted newline does not send
			}
			if r >= ' ' {
				rs = append(rs, r)
			}
		}
		u.input = append(u.input[:u.cursor], append(rs, u.input[u.cursor:]...)...)
		u.cursor += len(rs)
	}
	return nil
}

// Layout: a header row, the body (conversation list | messages), the
// status row and the input row.
func (u *chatUI) bodyHeight() int { return max(u.height-3, 1) }

func (u *chatUI) listWidth() int {
	if u.width < 48 {
		return 0 // too narrow: messages only (the header names the conversation)
	}
	return min(max(u.width/4, 14), 28)
}

func (u *chatUI) View() string {
	w, bh := max(u.width, 20), u.bodyHeight()
	rows := make([]string, 0, bh+3)

	title := fmt.Sprintf(" pim chat · %s/%s", u.s.me, u.s.device)
	if u.s.cur != "" {
		title += " · " + u.s.title(u.s.cur)
	}
	rows = append(rows, bold(fit(spread(title, chatLegend+" ", w), w)))

	lw := u.listWidth()
	list := u.listRows(lw, bh)
	msgs := u.messageRows(u.msgWidth(), bh)
	for i := range bh {
		if lw > 0 {
			rows = append(rows, pad(list[i], lw)+"│"+msgs[i])
		} else {
			rows = append(rows, msgs[i])
		}
	}
	rows = append(rows, reverse(pad(fit(u.statusText(), w), w)))
	rows = append(rows, u.inputRow(w))
	return strings.Join(rows, "\n")
}

// listRows is the conversation list: title and unread count, the current
// one highlighted.
func (u *chatUI) listRows(lw, bh int) []string {
	rows := make([]string, bh)
	if lw == 0 {
		return rows
	}
	list := u.s.convList()
	start := 0
	for i, c := range list {
		if c.id == u.s.cur && i >= bh {
			start = i - bh + 1
		}
	}
	for i := 0; i < bh && start+i < len(list); i++ {
		c := list[start+i]
		badge := ""
		if n := c.unread(); n > 0 {
			badge = fmt.Sprintf(" (%d)", n)
		}
		name := ansi.Truncate(u.s.title(c.id), lw-1-ansi.StringWidth(badge), "…")
		row := pad(" "+name, lw-ansi.StringWidth(badge)) + badge
		if c.id == u.s.cur {
			row = reverse(row)
		} else if badge != "" {
			row = bold(row)
		}
		rows[i] = row
	}
	return rows
}

// msgWidth is the width of the message pane.
func (u *chatUI) msgWidth() int {
	if lw := u.listWidth(); lw > 0 {
		return max(u.width, 20) - lw - 1
	}
	return max(u.width, 20)
}

// allRows is the current conversation (or a hint), wrapped to width.
func (u *chatUI) allRows(width int) []string {
	c := u.s.convs[u.s.cur]
	switch {
	case u.s.cur == "":
		return []string{
			" No conversation open.",
			" /to USER opens a 1:1 chat, /group G a group, /create G USER... creates one.",
			" Tab or Up/Down switch conversations, /quit (or Ctrl-C) exits.",
		}
	case c == nil || len(c.lines) == 0:
		return []string{" No messages yet with " + u.s.title(u.s.cur) + ": type one and press Enter."}
	}
	var all []string
	const indent = "      " // continuation rows start under the text, after the time
	for _, l := range c.lines {
		text := u.lineText(c, l)
		if ansi.StringWidth(text) <= width-1 {
			all = append(all, " "+text)
			continue
		}
		first, rest, _ := strings.Cut(ansi.Wrap(text, max(width-1, 8), ""), "\n")
		all = append(all, " "+first)
		if rest != "" {
			rest = strings.ReplaceAll(rest, "\n", " ")
			for _, r := range strings.Split(ansi.Wrap(rest, max(width-1-len(indent), 8), ""), "\n") {
				all = append(all, " "+indent+r)
			}
		}
	}
	return all
}

// maxScroll is how far back the current conversation can scroll.
func (u *chatUI) maxScroll() int {
	return max(len(u.allRows(u.msgWidth()))-u.bodyHeight(), 0)
}

// messageRows is the current conversation, its newest line at the bottom
// (minus the scroll).
func (u *chatUI) messageRows(width, bh int) []string {
	all := u.allRows(width)
	scroll := min(u.scroll, max(len(all)-bh, 0))
	end := len(all) - scroll
	start := max(end-bh, 0)
	rows := make([]string, bh)
	view := all[start:end]
	copy(rows[bh-len(view):], view) // bottom-aligned
	if scroll > 0 && bh > 1 {
		if start > 0 {
			rows[0] = reverse(fmt.Sprintf(" ↑ %d more (PgUp/PgDn) ", start))
		}
		rows[bh-1] = reverse(fmt.Sprintf(" ↓ %d newer ", scroll))
	}
	for i := range rows {
		rows[i] = fit(rows[i], width)
	}
	return rows
}

// lineText is one message: time, sender, text and, for this device's
// messages, the send-state marker.
func (u *chatUI) lineText(c *convState, l *chatLine) string {
	ts := "     "
	if !l.time.IsZero() {
		ts = l.time.In(u.s.loc).Format("15:04")
	}
	who := l.sender
	if l.own {
		who = "me"
		if l.device != u.s.device && l.device != "" {
			who = "me (" + l.device + ")"
		}
	}
	s := fmt.Sprintf("%s %s: %s", ts, who, l.text)
	switch l.state {
	case stTyped, stQueued:
		s += " " + markQueued
	case stSending:
		s += " " + markSending
	case stSent:
		s += " " + receiptMark(c, l, markSent)
	case stReceived:
		if m := receiptMark(c, l, ""); l.own && m != "" {
			s += " " + m // sent from another device of mine
		}
	case stFailed:
		s += " " + markFailed + " failed: " + l.err + " (/retry)"
	}
	return s
}

// receiptMark is what receipts say about one of my stored messages: read
// or delivered (1:1), the read count (groups), else dflt.
func receiptMark(c *convState, l *chatLine, dflt string) string {
	switch {
	case l.seq == 0:
		return dflt
	case strings.HasPrefix(c.id, "g:"):
		if n := c.readCounts[l.seq]; n > 0 {
			return fmt.Sprintf("%s read by %d", markSent, n)
		}
	case l.seq <= c.peerRead:
		return markRead
	case l.seq <= c.peerDelivered:
		return markDelivered
	}
	return dflt
}

func (u *chatUI) statusText() string {
	s := u.s
	var (
		parts []string
		why   string // why the connection is down: last, being long
	)
	switch s.conn {
	case pim.Connected:
		st := "● connected " + s.connAddr
		if s.caughtUp {
			st += ", up to date"
		} else {
			st += ", catching up"
		}
		parts = append(parts, st)
	case pim.Connecting:
		parts = append(parts, "○ connecting "+s.connAddr)
	case pim.Disconnected:
		st := "○ offline"
		if !s.retryAt.IsZero() && !s.clock.now.IsZero() {
			st += fmt.Sprintf(", retry in %s", max(s.retryAt.Sub(s.clock.now), 0).Round(100*time.Millisecond))
		}
		parts = append(parts, st)
		if s.connErr != nil {
			why = errText(s.connErr)
		}
	case pim.Stopped:
		parts = append(parts, "✗ stopped")
		if s.connErr != nil {
			why = errText(s.connErr)
		}
	default:
		parts = append(parts, "○ starting")
	}
	if s.clock.ok {
		parts = append(parts, fmt.Sprintf("clock %s ±%s", signedDur(s.clock.offset), shortDur(s.clock.bound)))
	}
	pending, failed := s.pendingSends()
	if pending > 0 {
		parts = append(parts, fmt.Sprintf("%d unsent", pending))
	}
	if failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", failed))
	}
	if s.notice != "" {
		parts = append(parts, s.notice)
	}
	if why != "" {
		parts = append(parts, why)
	}
	return " " + strings.Join(parts, " · ")
}

func (u *chatUI) inputRow(w int) string {
	prompt := "> "
	avail := max(w-ansi.StringWidth(prompt)-1, 1)
	in := u.input
	off := 0
	if u.cursor > avail {
		off = u.cursor - avail // keep the cursor in view
	}
	before := string(in[off:u.cursor])
	at, after := " ", ""
	if u.cursor < len(in) {
		at, after = string(in[u.cursor]), string(in[u.cursor+1:])
	}
	return fit(prompt+before+reverse(at)+after, w)
}

// signedDur shows a clock offset with its sign.
func signedDur(d time.Duration) string {
	if d < 0 {
		return "-" + shortDur(-d)
	}
	return "+" + shortDur(d)
}

func shortDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}

func bold(s string) string    { return "\x1b[1m" + s + "\x1b[0m" }
func reverse(s string) string { return "\x1b[7m" + s + "\x1b[0m" }

// fit cuts s to width columns.
func fit(s string, width int) string { return ansi.Truncate(s, width, "…") }

// pad fills s with spaces to width columns.
func pad(s string, width int) string {
	if n := width - ansi.StringWidth(s); n > 0 {
		return s + strings.Repeat(" ", n)
	}
	return s
}

// spread puts left at the start and right at the end of width columns
// (right is dropped when both do not fit).
func spread(left, right string, width int) string {
	gap := width - ansi.StringWidth(left) - ansi.StringWidth(right)
	if gap < 2 {
		return left
	}
	return left + strings.Repeat(" ", gap) + right
}
