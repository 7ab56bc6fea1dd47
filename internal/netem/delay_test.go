package netem

import (
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"
)

// The delay line keeps FIFO order and never releases early, also when the
// delay is shortened while items are held.
func TestDelayLineOrderAndDelay(t *testing.T) {
	const d = 30 * time.Millisecond
	l := newDelayLine(1024, d)
	type rel struct {
		n  uint32
		at time.Time
	}
	var got []rel
	done := make(chan error, 1)
	go func() {
		done <- l.run(make(chan struct{}), func(b []byte) error {
			got = append(got, rel{binary.BigEndian.Uint32(b), time.Now()})
			return nil
		})
	}()
	sent := make([]time.Time, 200)
	for i := range sent {
		if i == 100 {
			l.setDelay(0) // later items must still wait behind earlier ones
		}
		sent[i] = time.Now()
		if !l.offer(binary.BigEndian.AppendUint32(nil, uint32(i))) {
			t.Fatalf("item %d refused with room in the line", i)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	l.close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sent) {
		t.Fatalf("released %d items, want %d", len(got), len(sent))
	}
	for i, r := range got {
		if r.n != uint32(i) {
			t.Fatalf("position %d released item %d: order broken", i, r.n)
		}
		if i < 100 {
			if held := r.at.Sub(sent[i]); held < d {
				t.Fatalf("item %d held %v, want >= %v", i, held, d)
			}
		}
	}
}

// A full line refuses offers (packets) and blocks puts (streams) until stopped.
func TestDelayLineFull(t *testing.T) {
	l := newDelayLine(2, time.Hour)
	if !l.offer([]byte{1}) || !l.offer([]byte{2}) {
		t.Fatal("offers refused with room")
	}
	if l.offer([]byte{3}) {
		t.Fatal("offer accepted by a full line")
	}
	stop := make(chan struct{})
	res := make(chan bool)
	go func() { res <- l.put([]byte{4}, stop) }()
	close(stop)
	if <-res {
		t.Fatal("put into a full line succeeded")
	}
}

// fakeDev is a packet device in memory: Read returns what the test injects,
// Write records what the delayer forwards.
type fakeDev struct {
	in     chan []byte
	mu     sync.Mutex
	out    []stamped
	closed chan struct{}
	once   sync.Once
}

type stamped struct {
	b  []byte
	at time.Time
}

func (f *fakeDev) Read(b []byte) (int, error) {
	select {
	case p := <-f.in:
		return copy(b, p), nil
	case <-f.closed:
		return 0, io.EOF
	}
}

func (f *fakeDev) Write(b []byte) (int, error) {
	f.mu.Lock()
	f.out = append(f.out, stamped{append([]byte(nil), b...), time.Now()})
	f.mu.Unlock()
	return len(b), nil
}

func (f *fakeDev) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeDev) written() []stamped {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stamped(nil), f.out...)
}

// The packet delayer forwards every packet back into the device, in order,
// each after at least the one-way delay.
func TestPacketDelayForwards(t *testing.T) {
	const d = 40 * time.Millisecond
	dev := &fakeDev{in: make(chan []byte), closed: make(chan struct{})}
	p := NewPacketDelay(dev, d)
	const n = 100
	sent := make([]time.Time, n)
	for i := range n {
		sent[i] = time.Now()
		dev.in <- binary.BigEndian.AppendUint32(nil, uint32(i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(dev.written()) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	out := dev.written()
	if len(out) != n {
		t.Fatalf("forwarded %d packets, want %d", len(out), n)
	}
	for i, s := range out {
		if got := binary.BigEndian.Uint32(s.b); got != uint32(i) {
			t.Fatalf("position %d has packet %d: order broken", i, got)
		}
		if held := s.at.Sub(sent[i]); held < d {
			t.Fatalf("packet %d held %v, want >= %v", i, held, d)
		}
	}
	if p.Passed() != n || p.Dropped() != 0 {
		t.Fatalf("passed %d dropped %d, want %d and 0", p.Passed(), p.Dropped(), n)
	}
}
