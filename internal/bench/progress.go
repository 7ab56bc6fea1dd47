package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Progress shows a live status line: redrawn in place a few times a second
// when w is a terminal, otherwise printed as a plain line every Every.
type Progress struct {
	w     io.Writer
	tty   bool
	every time.Duration

	mu     sync.Mutex
	status func() string
	stop   chan struct{}
	done   chan struct{}
	shown  bool
}

// NewProgress returns a progress line on w (nil or io.Discard: silent).
// every is the interval of plain lines when w is not a terminal (0: 5s).
func NewProgress(w io.Writer, every time.Duration) *Progress {
	if every <= 0 {
		every = 5 * time.Second
	}
	p := &Progress{w: w, every: every}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// Set replaces the status function (called from the progress goroutine).
func (p *Progress) Set(status func() string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.status = status
	if p.stop == nil && p.w != nil && p.w != io.Discard {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.loop(p.stop, p.done)
	}
	p.mu.Unlock()
}

func (p *Progress) loop(stop, done chan struct{}) {
	defer close(done)
	interval := p.every
	if p.tty {
		interval = 250 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.draw()
		}
	}
}

func (p *Progress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == nil {
		return
	}
	s := p.status()
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", s)
		p.shown = true
	} else {
		fmt.Fprintln(p.w, s)
	}
}

// Logf prints a line above the progress line.
func (p *Progress) Logf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// Stop ends the progress line and clears it from a terminal.
func (p *Progress) Stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	stop, done := p.stop, p.done
	p.stop = nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
	p.status = nil
}

// count formats n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
