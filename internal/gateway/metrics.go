// Metrics of the gateway.
//
// Invariants: every collector exists even without a Registerer (so the code
// never checks for nil); label values are bounded (frame types of the
// protocol, error codes, admission reasons, coalesced operations), so the
// number of series is fixed. Gauges that read gateway state (GaugeFunc) only
// read atomics or take short locks.
package gateway

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pim-project/pim/internal/admission"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// bodyOneof is Frame's body oneof, to name frame types.
var bodyOneof = (&pimv1.Frame{}).ProtoReflect().Descriptor().Oneofs().ByName("body")

// Coalesced read operations (metric labels).
const opTimeline = "timeline"

type metrics struct {
	conns      prometheus.Gauge
	pushed     prometheus.Counter
	framesIn   map[protoreflect.FieldNumber]prometheus.Counter
	framesNone prometheus.Counter // frames without a known body
	errors     *prometheus.CounterVec
	accepted   prometheus.Counter
	gone       prometheus.Counter
	peak       *peakRate
	refusedBy  map[string]prometheus.Counter
	coalescedN map[string]prometheus.Counter
	draining   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, g *Gateway) *metrics {
	framesIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pim_frames_in_total", Help: "Frames received from clients, by type."}, []string{"type"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pim_admission_refused_total", Help: "Connections, logins and sends refused by admission control, by reason."}, []string{"reason"})
	coalesced := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pim_coalesced_reads_total", Help: "Reads answered by sharing an identical read in progress, by operation."}, []string{"op"})
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pim_connections", Help: "Open long connections (TCP, TLS and WebSocket)."}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_pushed_events_total", Help: "Timeline events pushed to devices."}),
		framesIn:   make(map[protoreflect.FieldNumber]prometheus.Counter),
		framesNone: framesIn.WithLabelValues("none"),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pim_errors_total", Help: "Error frames sent to clients, by code."}, []string{"code"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_accepted_connections_total", Help: "Connections admitted (past the accept-time limits)."}),
		gone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_accepted_gone_total", Help: "Connections dropped at accept because their client had closed them while they were queued."}),
		peak:       &peakRate{},
		refusedBy:  make(map[string]prometheus.Counter),
		coalescedN: map[string]prometheus.Counter{opTimeline: coalesced.WithLabelValues(opTimeline)},
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pim_draining", Help: "1 once the gateway drains (no new connections; GoAways spread over the drain window)."}),
	}
	for _, r := range admission.Reasons {
		m.refusedBy[r] = refused.WithLabelValues(r)
	}
	fields := bodyOneof.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		m.framesIn[fd.Number()] = framesIn.WithLabelValues(string(fd.Name()))
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.conns, m.pushed, framesIn, m.errors, m.accepted, m.gone, refused, coalesced, m.draining,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pim_accepted_peak_per_second", Help: "Most connections admitted within one second (100 ms-aligned windows) since start."},
			func() float64 { return float64(m.peak.max()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pim_buffered_bytes", Help: "Bytes of responses queued for all connections (bounded by --max-buffered-bytes)."},
			func() float64 { return float64(g.buffered.Load()) }))
	if a := g.admit; a != nil {
		cfg := a.Config()
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pim_admission_accept_rate", Help: "Configured new connections per second (0: unlimited)."},
				func() float64 { return cfg.Accept.Rate }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pim_admission_accept_burst", Help: "Configured burst of new connections."},
				func() float64 { return float64(cfg.Accept.Burst) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pim_admission_max_connections", Help: "Configured maximum of open connections (0: unlimited)."},
				func() float64 { return float64(cfg.MaxConns) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pim_send_inflight", Help: "Sends and group changes in the pipeline (received, not yet durably stored)."},
				func() float64 { n, _ := a.Pipeline(time.Now()); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pim_shedding", Help: "1 while the send pipeline sheds new work (latency over target)."},
				func() float64 {
					if _, s := a.Pipeline(time.Now()); s {
						return 1
					}
					return 0
				}),
		)
	}
	return m
}

func (m *metrics) frameIn(f *pimv1.Frame) {
	fd := f.ProtoReflect().WhichOneof(bodyOneof)
	if fd == nil {
		m.framesNone.Inc()
		return
	}
	if c := m.framesIn[fd.Number()]; c != nil {
		c.Inc()
	}
}

func (m *metrics) errorOut(code pimv1.ErrorCode) {
	m.errors.WithLabelValues(strings.ToLower(strings.TrimPrefix(code.String(), "ERROR_CODE_"))).Inc()
}

func (m *metrics) refused(reason string) {
	if c := m.refusedBy[reason]; c != nil {
		c.Inc()
	}
}

func (m *metrics) coalesced(op string) { m.coalescedN[op].Inc() }

// admitted counts one admitted connection.
func (m *metrics) admitted() {
	m.accepted.Inc()
	m.peak.add(time.Now())
}

// peakRate keeps the most events seen within any second, over 100 ms
// buckets (a window is 10 consecutive buckets). Safe for concurrent use.
type peakRate struct {
	mu      sync.Mutex
	buckets [10]int64
	cur     int64 // index (Unix time / 100 ms) of the newest bucket
	sum     int64 // events in the last 10 buckets
	peak    int64
}

func (p *peakRate) add(now time.Time) {
	i := now.UnixMilli() / 100
	p.mu.Lock()
	defer p.mu.Unlock()
	if i > p.cur {
		for k := p.cur + 1; k <= i && k <= p.cur+10; k++ {
			p.sum -= p.buckets[k%10]
			p.buckets[k%10] = 0
		}
		p.cur = i
	}
	p.buckets[p.cur%10]++
	p.sum++
	p.peak = max(p.peak, p.sum)
}

func (p *peakRate) max() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}
