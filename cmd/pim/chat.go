package main

// `pim chat`: an interactive terminal chat client on the Go SDK, and its
// line-oriented --plain mode for scripts and tests. Invariants:
//   - All SDK calls are made here (the state in chat_model.go only asks for
//     them), one at a time and in the order they were asked for, so the
//     messages typed in a conversation reach the outbox in that order.
//   - The SDK client is closed on every way out (/quit, Ctrl-C, SIGTERM, the
//     end of --plain input), after the UI stopped; what is unsent stays in
//     the outbox in --data and goes out at the next run.
//   - --plain writes one line per event, each starting with its kind (msg,
//     send, read, hidden, receipt, unread, conn, caught-up, info, error),
//     and at the end of its input waits up to --timeout for its messages to
//     be sent: exit status 0 only if all were.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/store"
	pim "github.com/pim-project/pim/sdk/go"
)

// chatHistory is how many messages are shown from the local store: of the
// whole timeline at start, and of a conversation when it is opened.
const chatHistory = 500

// chatBackoffCap is the longest wait between reconnection attempts.
const chatBackoffCap = 15 * time.Second

type chatFlags struct {
	conn  connFlags
	data  string
	to    string
	group string
	plain bool
}

func newChatCmd() *cobra.Command {
	var f chatFlags
	cmd := &cobra.Command{
		Use:   "chat [--to USER | --group G] [flags]",
		Short: "Chat interactively in the terminal (or line by line with --plain)",
		Long: "chat is a terminal chat client on the Go SDK: a conversation list with unread counts,\n" +
			"the open conversation with each of your messages' state (" + chatLegend + "),\n" +
			"the connection state and clock offset, and an input line. It works offline: what you\n" +
			"send waits in the local outbox (--data) and goes out when the server is reachable.\n\n" +
			"Keys: Enter sends, Tab/Shift-Tab or Up/Down switch conversations, PgUp/PgDn scroll,\n" +
			"Ctrl-C quits. Commands: /to USER, /group G, /create G USER..., /retry (failed\n" +
			"messages, same id), /discard (failed messages), /read, /reconnect, /quit. Viewing a\n" +
			"conversation marks it read.\n\n" +
			"--plain prints one line per event instead (msg, send, read, hidden, receipt, unread,\n" +
			"conn, caught-up, info, error) and sends each line of standard input to --to/--group\n" +
			"(commands work too); at the end of input it waits up to --timeout for its messages to\n" +
			"be sent, and exits 0 only if they were.",
		Example: "  pim chat --token $T --to bob\n" +
			"  pim chat --token $T --device laptop --group team --data ./alice-laptop\n" +
			"  echo 'build is green' | pim chat --plain --token $T --group team",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return runChat(cmd.Context(), &f, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		}),
	}
	f.conn.register(cmd.Flags())
	cmd.Flags().StringVar(&f.data, "data", "", "the SDK's local store: outbox, cursor, messages (default ~/.pim/USER-DEVICE)")
	cmd.Flags().StringVar(&f.to, "to", "", "open the 1:1 conversation with this user")
	cmd.Flags().StringVar(&f.group, "group", "", "open this group's conversation (\"g:x\" or \"x\")")
	cmd.Flags().BoolVar(&f.plain, "plain", false, "no full-screen UI: print events as lines, send lines of standard input")
	return cmd
}

// sdkOptions validates the flags and returns the SDK's options (DataDir
// included).
func (f *chatFlags) sdkOptions(stderr io.Writer, getenv func(string) string) (pim.Options, error) {
	if f.to != "" && f.group != "" {
		return pim.Options{}, usagef("give at most one of --to USER and --group G")
	}
	if f.to != "" && !store.ValidID(f.to) {
		return pim.Options{}, usagef("invalid --to %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", f.to)
	}
	if f.group != "" && !store.ValidID(strings.TrimPrefix(f.group, "g:")) {
		return pim.Options{}, usagef("invalid --group %q", f.group)
	}
	co, err := f.conn.options(stderr, getenv) // checks the connection flags, warns
	if err != nil {
		return pim.Options{}, err
	}
	t, err := f.conn.resolveTarget()
	if err != nil {
		return pim.Options{}, err
	}
	server := t.addr // a ws:// or wss:// URL as it is
	if !t.websocket {
		server = "tcp://" + t.addr
		if t.useTLS {
			server = "tls://" + t.addr
		}
	}
	user, err := tokenUser(co.Token)
	if err != nil {
		return pim.Options{}, usagef("%v", err)
	}
	dir := f.data
	if dir == "" {
		dir = defaultChatDir(user, f.conn.device)
	}
	return pim.Options{
		Servers: []string{server}, Token: co.Token, User: user, DeviceID: f.conn.device, DataDir: dir,
		TLS: pim.TLSOptions{Enable: f.conn.tls, PinSHA256: f.conn.pin, CAFile: f.conn.ca, Insecure: f.conn.insecure},
		// An interactive client in the foreground: retry sooner than the
		// SDK's mobile default (/reconnect dials at once).
		Tuning: pim.Tuning{ConnectTimeout: f.conn.timeout, Backoff: pim.BackoffConfig{Cap: chatBackoffCap}},
	}, nil
}

// tokenUser reads the user from a token without verifying it (the server
// does): the local store is per user.
func tokenUser(tok string) (string, error) {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil || !store.ValidID(claims.Subject) {
		return "", errors.New("the token names no user: mint one with `pim token --data DIR --user NAME`")
	}
	return claims.Subject, nil
}

// defaultChatDir is ~/.pim/USER-DEVICE, or ./pim-chat-USER-DEVICE without a
// home directory.
func defaultChatDir(user, device string) string {
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".pim", user+"-"+device)
	}
	return "pim-chat-" + user + "-" + device
}

// runChat runs `pim chat` with its flags.
func runChat(ctx context.Context, f *chatFlags, in io.Reader, out, errOut io.Writer) (err error) {
	opts, err := f.sdkOptions(errOut, os.Getenv)
	if err != nil {
		return err
	}
	cl, err := pim.Connect(ctx, opts)
	if err != nil {
		return failed("open "+opts.DataDir, err)
	}
	defer func() {
		if cerr := cl.Close(); cerr != nil && err == nil {
			err = failed("close "+opts.DataDir, cerr)
		}
	}()
	s := newChatState(opts.User, opts.DeviceID, time.Local)
	delivered := cl.Delivered()
	entries, err := cl.Timeline(delivered-min(delivered, chatHistory), chatHistory)
	if err != nil {
		return failed("read "+opts.DataDir, err)
	}
	pending, err := cl.Pending(ctx)
	if err != nil {
		return failed("read "+opts.DataDir, err)
	}
	s.seed(entries, delivered)
	convs, err := cl.Conversations()
	if err != nil {
		return failed("read "+opts.DataDir, err)
	}
	s.seedList(convs)
	for _, o := range pending {
		s.seedPending(o.ClientMsgID(), o.Conv(), o.State(), o.Err())
	}
	x := &chatExec{ctx: ctx, cl: cl}
	s.clock = x.clock()
	var first []any
	switch {
	case f.to != "":
		first = s.open(pim.DirectConv(opts.User, f.to))
	case f.group != "":
		first = s.open("g:" + strings.TrimPrefix(f.group, "g:"))
	}
	if f.plain {
		return runPlain(ctx, s, x, first, in, out, f.conn.timeout, opts.DataDir)
	}
	err = runTUI(ctx, s, x, first, in, out)
	if p, failed := s.pendingSends(); err == nil && p+failed > 0 {
		fmt.Fprintf(errOut, "pim: %s in the outbox in %s (the next pim chat resumes it)\n", unsentSummary(p, failed), opts.DataDir)
	}
	return err
}

// chatExec carries out the state's effects with the SDK.
type chatExec struct {
	ctx context.Context
	cl  *pim.Client
}

// perform makes the SDK call of effect e and returns its result for
// chatState.result.
func (x *chatExec) perform(e any) any {
	switch e := e.(type) {
	case effSend:
		o, err := x.cl.Send(x.ctx, e.conv, e.text)
		r := sendResult{local: e.local, err: err}
		if err == nil {
			r.id = o.ClientMsgID()
		}
		return r
	case effRetry:
		return opResult{what: "retry", id: e.id, err: x.cl.RetryFailed(x.ctx, e.id)}
	case effMarkRead:
		cmd, err := x.cl.MarkRead(x.ctx, e.conv, e.seq)
		r := opResult{what: "mark read", err: err}
		if err == nil {
			r.read = cmd.ID()
		}
		return r
	case effCreate:
		_, err := x.cl.CreateGroup(x.ctx, e.group, e.members...)
		return opResult{what: "create " + e.group, err: err}
	case effDiscard:
		return opResult{what: "discard", err: x.cl.Discard(x.ctx, e.id)}
	case effReconnect:
		x.cl.NetworkChanged("") // the network the SDK starts on: resets the backoff
		return nil
	case effLoad:
		msgs, err := x.cl.Messages(e.conv, 0, chatHistory)
		return loadResult{conv: e.conv, msgs: msgs, err: err}
	}
	return nil
}

func (x *chatExec) clock() clockInfo {
	off, bound, ok := x.cl.ClockOffset()
	return clockInfo{now: time.Now(), offset: off, bound: bound, ok: ok}
}

// runPlain is --plain: events out as lines, lines in as messages or
// commands, until /quit, the context ends, or the input ends and the
// messages are sent (or drain passed).
func runPlain(ctx context.Context, s *chatState, x *chatExec, first []any, in io.Reader, out io.Writer, drain time.Duration, dir string) error {
	lines := make(chan string)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // ends at EOF or, once stop is closed, after its next line
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stop:
				return
			}
		}
	}()
	var werr error
	do := func(effs []any) (quit bool) {
		for len(effs) > 0 {
			e := effs[0]
			effs = effs[1:]
			if _, ok := e.(effQuit); ok {
				quit = true
				break
			}
			effs = append(effs, s.result(x.perform(e))...)
		}
		for _, l := range s.takeLog() {
			if _, err := fmt.Fprintln(out, l); err != nil && werr == nil {
				werr = fmt.Errorf("write output: %w", err)
			}
		}
		return quit || werr != nil
	}
	if do(first) {
		return werr
	}
	var (
		eof      bool
		deadline <-chan time.Time
	)
	events := x.cl.Events()
	for {
		if p, _ := s.pendingSends(); eof && p == 0 {
			break
		}
		select {
		case ev, ok := <-events:
			if !ok {
				return x.cl.Err()
			}
			if do(s.apply(ev)) {
				return werr
			}
		case l, ok := <-lines:
			if !ok {
				eof, lines, deadline = true, nil, time.After(drain)
				continue
			}
			s.clock = x.clock()
			if do(s.submit(l)) {
				return werr
			}
		case <-deadline:
			p, failed := s.pendingSends()
			return fmt.Errorf("not sent within --timeout %v: %s in the outbox in %s", drain, unsentSummary(p, failed), dir)
		case <-ctx.Done():
			return nil
		}
	}
	if _, failed := s.pendingSends(); failed > 0 {
		return fmt.Errorf("%s in the outbox in %s (pim chat, then /retry or /discard)", unsentSummary(0, failed), dir)
	}
	return werr
}

// unsentSummary says how many messages are unsent and failed.
func unsentSummary(pending, failed int) string {
	var parts []string
	if pending > 0 {
		parts = append(parts, fmt.Sprintf("%d unsent message(s)", pending))
	}
	if failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed message(s)", failed))
	}
	return strings.Join(parts, " and ") + " wait"
}

// runTUI is the full-screen UI, until /quit, Ctrl-C or the context ends.
func runTUI(ctx context.Context, s *chatState, x *chatExec, first []any, in io.Reader, out io.Writer) error {
	s.autoRead = true
	q := newSerialCmds()
	run := func(e any) tea.Cmd {
		if _, ok := e.(effQuit); ok {
			return tea.Quit
		}
		return q.wrap(func() tea.Msg { return x.perform(e) })
	}
	ui := newChatUI(s, run)
	ui.initial = first
	opts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithAltScreen()}
	if in != os.Stdin { // os.Stdin: bubbletea opens the terminal if it is redirected
		opts = append(opts, tea.WithInput(in))
	}
	if out != os.Stdout {
		opts = append(opts, tea.WithOutput(out))
	}
	p := tea.NewProgram(ui, opts...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // p.Send returns at once after Run ended
		defer wg.Done()
		for {
			select {
			case ev, ok := <-x.cl.Events():
				if !ok {
					p.Quit()
					return
				}
				p.Send(eventMsg{ev})
			case <-stop:
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			p.Send(x.clock())
			select {
			case <-t.C:
			case <-stop:
				return
			}
		}
	}()
	_, err := p.Run()
	close(stop)
	wg.Wait()
	if ctx.Err() != nil && errors.Is(err, tea.ErrProgramKilled) || errors.Is(err, tea.ErrInterrupted) {
		err = nil
	}
	if err == nil {
		err = x.cl.Err()
		if errors.Is(err, pim.ErrClosed) {
			err = nil
		}
	}
	return err
}

// serialCmds runs commands one at a time, in the order they were made
// (bubbletea runs each command in its own goroutine).
type serialCmds struct {
	mu           sync.Mutex
	cond         *sync.Cond
	issued, done uint64
}

func newSerialCmds() *serialCmds {
	q := &serialCmds{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *serialCmds) wrap(f func() tea.Msg) tea.Cmd {
	q.mu.Lock()
	n := q.issued
	q.issued++
	q.mu.Unlock()
	return func() tea.Msg {
		q.mu.Lock()
		for q.done != n {
			q.cond.Wait()
		}
		q.mu.Unlock()
		defer func() {
			q.mu.Lock()
			q.done++
			q.cond.Broadcast()
			q.mu.Unlock()
		}()
		return f()
	}
}
