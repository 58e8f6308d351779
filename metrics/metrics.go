// Package metrics defines every Prometheus metric Keyhole exports, on an injected registry.
//
// Labels come from configuration names (routes, upstreams, issuers) and fixed vocabularies
// (decisions, reasons), never from raw request data, so cardinality stays bounded.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the collectors. Build it once with New; it is safe for concurrent use.
type Metrics struct {
	// Requests counts finished requests by route, method, status code and decision.
	Requests *prometheus.CounterVec
	// RequestDuration observes the whole request at the gateway, by route.
	RequestDuration *prometheus.HistogramVec
	// InFlight is the number of data-plane requests being served.
	InFlight prometheus.Gauge
	// UpstreamDuration observes the time from forwarding to the upstream's response headers.
	UpstreamDuration *prometheus.HistogramVec
	// UpstreamErrors counts failed upstream exchanges by upstream and kind (timeout,
	// connect, protocol, canceled; truncated and stalled for a response body that ended
	// early or stopped coming after its headers).
	UpstreamErrors *prometheus.CounterVec
	// AuthFailures counts refused tokens by reason.
	AuthFailures *prometheus.CounterVec
	// JWKSRefresh counts JWKS fetches by issuer and result (success, error).
	JWKSRefresh *prometheus.CounterVec
	// MaskedValues counts masked response values by route and action (redact, remove,
	// hash, last4, detect).
	MaskedValues *prometheus.CounterVec
	// MaskFailures counts responses of masked routes refused or aborted because they could
	// not be masked, by route.
	MaskFailures *prometheus.CounterVec
	// CredentialEcho counts responses from which the gateway removed an upstream
	// credential that the upstream sent back (a debug endpoint echoing its request), by route.
	CredentialEcho *prometheus.CounterVec
	// ConfigReloads counts configuration reloads by result (success, error).
	ConfigReloads *prometheus.CounterVec
	// ConfigLastReloadSuccess is the Unix time of the last successful load or reload.
	ConfigLastReloadSuccess prometheus.Gauge
	// RecorderQueueDepth is the number of exchange record entries waiting to be written.
	RecorderQueueDepth prometheus.Gauge
	// RecorderWriteSeconds is the time of each group-commit transaction of the recorder.
	RecorderWriteSeconds prometheus.Histogram
	// RecorderErrors counts failed recorder transactions.
	RecorderErrors prometheus.Counter
	// RecorderDropped counts record entries that will never be written (queue full in
	// best-effort mode, store failure).
	RecorderDropped prometheus.Counter
	// ApprovalsPending is the number of approvals waiting for a decision.
	ApprovalsPending prometheus.Gauge
	// ApprovalsTotal counts approval events by route and outcome (requested, approved,
	// denied, expired, used, limited).
	ApprovalsTotal *prometheus.CounterVec
	// ApprovalWaitSeconds is the time from an approval's request to its decision.
	ApprovalWaitSeconds prometheus.Histogram
	// MaskedBytesHeld is the bytes of masked response bodies the gateway holds now
	// (limits.max_masked_bytes_held bounds it).
	MaskedBytesHeld prometheus.Gauge
	// ConnsRefused counts data-plane connections closed on accept because their peer
	// held limits.max_unauthenticated_conns_per_peer unauthenticated ones.
	ConnsRefused prometheus.Counter
	// MCPRequests counts requests of mcp routes by route, JSON-RPC method (the protocol's
	// methods, response, GET, DELETE, invalid, else other), tool (the deciding
	// mcp.tools entry's name, other for a tool no entry names, "" for other methods) and
	// decision.
	MCPRequests *prometheus.CounterVec
	// ExportLag is the age in seconds of the oldest completed exchange the push export
	// (recorder.export) has read and not yet delivered; 0 when it is caught up, when it
	// is off, or while another replica holds the export's lease.
	ExportLag prometheus.Gauge
	// ExportActive is 1 while this process holds the push export's lease and pushes.
	ExportActive prometheus.Gauge
	// ExportDelivered counts exchanges the export's endpoint acknowledged.
	ExportDelivered prometheus.Counter
	// ExportErrors counts failed export attempts by kind (http, network, store).
	ExportErrors *prometheus.CounterVec
}

// New creates the metrics and registers them, with the Go runtime and process collectors,
// on reg. It returns an error if any of them is already registered there.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_requests_total",
			Help: "Data-plane requests by route, method, status code and decision.",
		}, []string{"route", "method", "code", "decision"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyhole_request_duration_seconds",
			Help:    "Time to serve a data-plane request at the gateway, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_requests_in_flight",
			Help: "Data-plane requests being served.",
		}),
		UpstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyhole_upstream_duration_seconds",
			Help:    "Time from forwarding a request to the upstream's response headers, by upstream.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_upstream_errors_total",
			Help: "Failed upstream exchanges by upstream and kind (timeout, connect, protocol, canceled, truncated, stalled).",
		}, []string{"upstream", "kind"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_auth_failures_total",
			Help: "Refused bearer tokens by reason.",
		}, []string{"reason"}),
		JWKSRefresh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_jwks_refresh_total",
			Help: "JWKS fetches by issuer and result.",
		}, []string{"issuer", "result"}),
		MaskedValues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_masked_values_total",
			Help: "Masked response values by route and action.",
		}, []string{"route", "action"}),
		MaskFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_mask_failures_total",
			Help: "Responses of masked routes that could not be masked (refused with 502, or aborted mid-stream), by route.",
		}, []string{"route"}),
		CredentialEcho: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_credential_echo_total",
			Help: "Responses from which an upstream credential the upstream echoed was removed, by route.",
		}, []string{"route"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_config_reloads_total",
			Help: "Configuration reloads by result.",
		}, []string{"result"}),
		ConfigLastReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load or reload.",
		}),
		RecorderQueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_recorder_queue_depth",
			Help: "Exchange record entries waiting to be written.",
		}),
		RecorderWriteSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyhole_recorder_write_seconds",
			Help:    "Time of each recorder transaction (one group commit of many entries).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		RecorderErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyhole_recorder_errors_total",
			Help: "Recorder transactions that failed.",
		}),
		RecorderDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyhole_recorder_dropped_total",
			Help: "Exchange record entries lost: queue full in best-effort mode, or the store failed.",
		}),
		ApprovalsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_approvals_pending",
			Help: "Approvals waiting for a decision.",
		}),
		ApprovalsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_approvals_total",
			Help: "Approval events by route and outcome (requested, approved, denied, expired, used, limited).",
		}, []string{"route", "outcome"}),
		ApprovalWaitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyhole_approval_wait_seconds",
			Help:    "Time from an approval's request to its decision.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600},
		}),
		MaskedBytesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_masked_bytes_held",
			Help: "Bytes of masked response bodies held by the gateway now.",
		}),
		ConnsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyhole_connections_refused_total",
			Help: "Data-plane connections closed on accept: their peer held too many unauthenticated connections.",
		}),
		MCPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_mcp_requests_total",
			Help: "Requests of mcp routes by route, JSON-RPC method, tool (config names, other) and decision.",
		}, []string{"route", "method", "tool", "decision"}),
		ExportLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_export_lag_seconds",
			Help: "Age of the oldest completed exchange the push export has not yet delivered; 0 when caught up.",
		}),
		ExportActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_export_active",
			Help: "1 while this process holds the push export's lease and pushes, else 0.",
		}),
		ExportDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyhole_export_delivered_total",
			Help: "Exchanges the push export's endpoint acknowledged.",
		}),
		ExportErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_export_errors_total",
			Help: "Failed push export attempts by kind (http: an answer other than 2xx, network: no answer, store).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{
		m.Requests, m.RequestDuration, m.InFlight, m.UpstreamDuration, m.UpstreamErrors,
		m.AuthFailures, m.JWKSRefresh, m.MaskedValues, m.MaskFailures, m.CredentialEcho, m.ConfigReloads, m.ConfigLastReloadSuccess,
		m.RecorderQueueDepth, m.RecorderWriteSeconds, m.RecorderErrors, m.RecorderDropped,
		m.ApprovalsPending, m.ApprovalsTotal, m.ApprovalWaitSeconds, m.MaskedBytesHeld, m.ConnsRefused, m.MCPRequests,
		m.ExportLag, m.ExportActive, m.ExportDelivered, m.ExportErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{"success", "error"} {
		m.ConfigReloads.WithLabelValues(r)
	}
	for _, k := range []string{"http", "network", "store"} {
		m.ExportErrors.WithLabelValues(k)
	}
	return m, nil
}
