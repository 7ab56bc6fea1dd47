// Metrics of the gateway.
//
// Invariants: every collector exists even without a Registerer (so the code
// never checks for nil); label values are bounded (frame types of the
// protocol, error codes), so the number of series is fixed.
package gateway

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/reflect/protoreflect"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// bodyOneof is Frame's body oneof, to name frame types.
var bodyOneof = (&pimv1.Frame{}).ProtoReflect().Descriptor().Oneofs().ByName("body")

type metrics struct {
	conns      prometheus.Gauge
	pushed     prometheus.Counter
	framesIn   map[protoreflect.FieldNumber]prometheus.Counter
	framesNone prometheus.Counter // frames without a known body
	errors     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	framesIn := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pim_frames_in_total", Help: "Frames received from clients, by type."}, []string{"type"})
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pim_connections", Help: "Open long connections (TCP, TLS and WebSocket)."}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_pushed_events_total", Help: "Timeline events pushed to devices."}),
		framesIn:   make(map[protoreflect.FieldNumber]prometheus.Counter),
		framesNone: framesIn.WithLabelValues("none"),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pim_errors_total", Help: "Error frames sent to clients, by code."}, []string{"code"}),
	}
	fields := bodyOneof.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		m.framesIn[fd.Number()] = framesIn.WithLabelValues(string(fd.Name()))
	}
	if reg != nil {
		reg.MustRegister(m.conns, m.pushed, framesIn, m.errors)
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
