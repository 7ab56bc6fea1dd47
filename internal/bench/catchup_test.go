package bench

// `pim bench catchup` against an in-process server, with a 1 s outage: the
// machinery (cut, return, backlog, timing, invariant check, report), not
// the figures.

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/server"
)

func TestRunCatchUp(t *testing.T) {
	for _, cut := range []string{CutDrop, CutBlackhole} {
		t.Run(cut, func(t *testing.T) {
			srv, dir := startServer(t, server.Config{})
			res, err := RunCatchUp(ctxT(t), target(t, srv, dir), CatchUpConfig{Outage: time.Second, Rate: 200, Senders: 2,
				Size: 64, Warmup: 300 * time.Millisecond, Cut: cut, NetworkChanged: true,
				Timeout: 30 * time.Second, DrainTimeout: 20 * time.Second}, []string{"x"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(res)
			t.Logf("%s", b)
			checkCommon(t, &res.Common, "catchup")
			if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 {
				t.Errorf("invariants: %+v", res.Invariants)
			}
			// About a second of messages at 200/s was missed and caught up.
			if res.Missed < 100 || res.CaughtUpMs <= 0 || res.CatchUpMsgsPerSec <= 0 {
				t.Errorf("missed %d, caught up after %v ms (%v msg/s)", res.Missed, res.CaughtUpMs, res.CatchUpMsgsPerSec)
			}
			if res.Acked == 0 || res.Delivered != res.Acked || res.SendErrors != 0 {
				t.Errorf("acked %d, delivered %d, send errors %d", res.Acked, res.Delivered, res.SendErrors)
			}
			switch cut {
			case CutDrop: // a new connection, and the SDK says caught up after the backlog
				if !res.Reconnected || !res.SDKCaughtUp || res.SDKCaughtUpMs < res.CaughtUpMs {
					t.Errorf("reconnected %v, SDK caught up %v after %v ms (backlog after %v ms)",
						res.Reconnected, res.SDKCaughtUp, res.SDKCaughtUpMs, res.CaughtUpMs)
				}
			case CutBlackhole: // the same connection resumes
				if res.Reconnected || res.OutageDials != 0 {
					t.Errorf("reconnected %v after %d dials: the connection should have survived", res.Reconnected, res.OutageDials)
				}
			}
			for _, k := range []string{`"missed"`, `"caught_up_ms"`, `"catch_up_msgs_per_sec"`, `"reconnect_ms"`, `"sdk_caught_up_ms"`, `"lost"`} {
				if !strings.Contains(string(b), k) {
					t.Errorf("json: no %s", k)
				}
			}
			if len(res.Rows()) == 0 {
				t.Error("no summary")
			}
		})
	}
}
