package bench

// `pim bench wire` against an in-process server, plaintext and TLS: the
// machinery (taps, phases, frame and record counts, the heartbeat's cost),
// not the figures.

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/server"
)

func TestRunWire(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  server.Config
	}{{"tcp", server.Config{}}, {"tls", server.Config{TLSSelfSigned: true}}} {
		t.Run(tc.name, func(t *testing.T) {
			srv, dir := startServer(t, tc.cfg)
			const size = 100
			res, err := RunWire(ctxT(t), target(t, srv, dir), WireConfig{Messages: 2, Burst: 8, Size: size,
				Gap: 600 * time.Millisecond, Idle: time.Second, PingEvery: 200 * time.Millisecond, Timeout: 20 * time.Second},
				[]string{"x"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(res)
			t.Logf("%s", b)
			checkCommon(t, &res.Common, "wire")
			if res.Sent != 10 || res.Delivered != 10 || res.Echoed != 10 || res.Lost+res.Duplicated+res.OutOfOrder != 0 {
				t.Errorf("sent %d, delivered %d, echoed %d, %+v", res.Sent, res.Delivered, res.Echoed, res.Invariants)
			}
			for _, p := range []*WirePhase{&res.Sparse, res.Burst} {
				if p == nil {
					t.Fatal("no burst phase")
				}
				sum := p.SenderUp.Bytes + p.SenderDown.Bytes + p.ReceiverUp.Bytes + p.ReceiverDown.Bytes
				// The body travels three times: SendReq, the Push to the
				// receiver, the echo to the sender's own device.
				if p.BytesPerMsg < 3*size || p.BytesPerMsg-sum > 0.5 || sum-p.BytesPerMsg > 0.5 || p.SegmentsPerMsg <= 0 ||
					p.ReceiverDown.Bytes < size || p.SenderUp.Bytes < size || p.TCPIPPerMsgMax != 2*p.TCPIPPerMsgMin {
					t.Errorf("phase of %d: %+v", p.Messages, p)
				}
				if (p.TLSOverheadPerMsg > 0) != (tc.name == "tls") {
					t.Errorf("TLS overhead %v on %s", p.TLSOverheadPerMsg, tc.name)
				}
			}
			kinds := map[string]bool{}
			for _, u := range res.Sparse.Units {
				kinds[u.Device+"/"+u.Dir+"/"+u.Kind] = true
			}
			want := []string{"sender/up/send_req", "sender/down/send_ack", "sender/down/push", "receiver/down/push", "receiver/up/push_ack"}
			if tc.name == "tls" {
				want = []string{"sender/up/application_data", "receiver/down/application_data"}
			}
			for _, k := range want {
				if !kinds[k] {
					t.Errorf("no %s in %v", k, kinds)
				}
			}
			h := res.Heartbeat
			if h.Pings < 2 || h.PingBytes <= 0 || h.PongBytes <= 0 || h.ServerHBMs <= 0 || h.PingsHourForeground <= 0 ||
				h.BytesHourForeground != roundTo(h.PingsHourForeground*h.ExchangeBytes, 0) {
				t.Errorf("heartbeat: %+v", h)
			}
			if len(res.Rows()) == 0 {
				t.Error("no summary")
			}
		})
	}
}
