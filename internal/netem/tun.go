package netem

// The packet delayer: every IP packet routed through a TUN device is read by
// us, held for the one-way delay and written back, so the kernel routes it
// on. Invariants: packets leave in the order they arrived and none before its
// arrival plus the delay in force then; a packet that finds the queue full
// is dropped (like a router's queue) and counted; after Close returns, the
// forwarder's goroutines have ended and the device is closed.

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// packetQueue is how many packets the delayer holds at most (at 1 s delay
// that is far more than the tests' traffic).
const packetQueue = 1 << 14

// maxPacket is the largest packet read from the device (its MTU is 1500).
const maxPacket = 1 << 16

// PacketDelay delays every packet of a packet device (a TUN device: each
// Read returns one packet, each Write injects one).
type PacketDelay struct {
	dev     io.ReadWriteCloser
	line    *delayLine
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	dropped atomic.Uint64
	passed  atomic.Uint64
}

// NewPacketDelay starts forwarding dev's packets back into it, each delayed
// by oneWay. It owns dev: Close closes it.
func NewPacketDelay(dev io.ReadWriteCloser, oneWay time.Duration) *PacketDelay {
	p := &PacketDelay{dev: dev, line: newDelayLine(packetQueue, oneWay), stop: make(chan struct{})}
	p.wg.Add(2)
	go p.read()
	go func() {
		defer p.wg.Done()
		p.line.run(p.stop, func(b []byte) error {
			p.dev.Write(b) // a packet the kernel refuses is lost, like on a wire
			p.passed.Add(1)
			return nil
		})
	}()
	return p
}

func (p *PacketDelay) read() {
	defer p.wg.Done()
	defer p.line.close()
	buf := make([]byte, maxPacket)
	for {
		n, err := p.dev.Read(buf)
		if err != nil {
			return
		}
		if !p.line.offer(append([]byte(nil), buf[:n]...)) {
			p.dropped.Add(1)
		}
	}
}

// SetDelay changes the one-way delay for packets that arrive from now on.
func (p *PacketDelay) SetDelay(oneWay time.Duration) { p.line.setDelay(oneWay) }

// Dropped is the number of packets dropped because the queue was full.
func (p *PacketDelay) Dropped() uint64 { return p.dropped.Load() }

// Passed is the number of packets forwarded.
func (p *PacketDelay) Passed() uint64 { return p.passed.Load() }

// Close stops forwarding (packets held are dropped) and closes the device.
func (p *PacketDelay) Close() error {
	var err error
	p.once.Do(func() {
		close(p.stop)
		err = p.dev.Close() // ends the blocked Read
	})
	p.wg.Wait()
	return err
}

// openTUN creates the TUN device name (no packet information header) in the
// current thread's network namespace. The device is attached before the file
// is handed to Go's poller: a TUN file polled before TUNSETIFF never wakes.
func openTUN(name string) (*os.File, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("netem: interface name %q too long", name)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("netem: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netem: %w", err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netem: TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil // non-blocking: Go polls it, Close ends a Read
}
