package logic

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sent          prometheus.Counter
	dups          prometheus.Counter
	sendSeconds   prometheus.Histogram
	convEntries   prometheus.Counter
	receiptFlush  prometheus.Counter
	receiptEvents prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_send_total", Help: "Send requests acknowledged (including duplicates)."}),
		dups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_send_duplicates_total", Help: "Sends answered with an earlier ack (client resends)."}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pim_send_seconds", Help: "Time from receiving a send to its durable ack.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		convEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_conversation_entries_sent_total", Help: "Conversation-list entries returned to clients."}),
		receiptFlush: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_read_receipt_flushes_total", Help: "Coalesced group read-receipt notifications (per conversation)."}),
		receiptEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pim_read_receipt_events_total", Help: "Group read-receipt events appended to senders' timelines."}),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.dups, m.sendSeconds, m.convEntries, m.receiptFlush, m.receiptEvents)
	}
	return m
}
