// Clock calibration (R9): the offset between the server's clock and the
// local one, from the round trips of Hello/Welcome and Ping/Pong.
//
// Invariants of this file:
//   - A sample is offset = server_time - (sent + rtt/2), error bound rtt/2
//     (the server read its clock somewhere inside the round trip).
//   - The estimate is the sample with the smallest RTT among the last n
//     kept (ties: the newest); samples with a negative RTT are ignored.
//   - With no sample the offset is 0 and ok is false.

package core

import "time"

type clock struct {
	n       int
	samples []ClockSample // oldest first, at most n
}

// add records a round trip sent at sent, answered at recv, carrying the
// server's clock serverMs (Unix ms). It reports whether the best sample
// changed.
func (c *clock) add(sent, recv time.Time, serverMs int64) bool {
	rtt := recv.Sub(sent)
	if rtt < 0 || serverMs == 0 {
		return false
	}
	mid := sent.Add(rtt / 2)
	s := ClockSample{
		Offset: time.UnixMilli(serverMs).Sub(mid),
		RTT:    rtt,
		At:     recv,
	}
	before, _ := c.best()
	c.samples = append(c.samples, s)
	if len(c.samples) > c.n {
		c.samples = c.samples[len(c.samples)-c.n:]
	}
	after, _ := c.best()
	return after != before
}

// best is the kept sample with the smallest RTT.
func (c *clock) best() (ClockSample, bool) {
	var b ClockSample
	ok := false
	for _, s := range c.samples {
		if !ok || s.RTT <= b.RTT {
			b, ok = s, true
		}
	}
	return b, ok
}
