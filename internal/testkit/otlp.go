package testkit

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// OTLPReceiver is an OTLP/HTTP trace collector: it decodes every protobuf
// ExportTraceServiceRequest POSTed to /v1/traces and keeps its spans. It is safe for
// concurrent use; the server closes when the test ends.
type OTLPReceiver struct {
	*httptest.Server

	mu      sync.Mutex
	spans   []*tracepb.Span
	headers []http.Header
	bad     []string
}

// NewOTLPReceiver starts an OTLPReceiver on a loopback port. Its URL is the endpoint.
func NewOTLPReceiver(t testing.TB) *OTLPReceiver {
	t.Helper()
	o := &OTLPReceiver{}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(func() {
		o.Close()
		for _, b := range o.bad {
			t.Errorf("otlp receiver: %s", b)
		}
	})
	return o
}

func (o *OTLPReceiver) serve(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			o.fail(w, "gzip: "+err.Error())
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/v1/traces":
		o.fail(w, r.Method+" "+r.URL.Path+", want POST /v1/traces")
		return
	case r.Header.Get("Content-Type") != "application/x-protobuf":
		o.fail(w, "content type "+r.Header.Get("Content-Type"))
		return
	case err != nil:
		o.fail(w, "read: "+err.Error())
		return
	}
	if err := proto.Unmarshal(raw, &req); err != nil {
		o.fail(w, "decode: "+err.Error())
		return
	}
	o.mu.Lock()
	o.headers = append(o.headers, r.Header.Clone())
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (o *OTLPReceiver) fail(w http.ResponseWriter, msg string) {
	o.mu.Lock()
	o.bad = append(o.bad, msg)
	o.mu.Unlock()
	http.Error(w, msg, http.StatusBadRequest)
}

// Spans returns every span received so far, in arrival order.
func (o *OTLPReceiver) Spans() []*tracepb.Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*tracepb.Span(nil), o.spans...)
}

// Headers returns the headers of every export request received so far.
func (o *OTLPReceiver) Headers() []http.Header {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]http.Header(nil), o.headers...)
}
