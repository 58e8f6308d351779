package recorder

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"strings"
	"testing"
)

func TestNewCodedBody(t *testing.T) {
	doc := []byte(`{"card":"4242424242424242","note":"` + strings.Repeat("x", 200) + `"}`)
	var gz, df bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(doc)
	zw.Close()
	dw := zlib.NewWriter(&df)
	dw.Write(doc)
	dw.Close()
	whole := int64(len(doc))
	tests := []struct {
		name      string
		p         []byte
		size      int64
		codings   []string
		limit     int64
		wantText  string
		wantSize  int64
		wantTrunc bool
		wantCode  string
	}{
		{"identity", doc, whole, nil, 1 << 20, string(doc), whole, false, ""},
		{"identity named", doc, whole, []string{"identity"}, 1 << 20, string(doc), whole, false, ""},
		{"gzip decoded", gz.Bytes(), int64(gz.Len()), []string{"gzip"}, 1 << 20, string(doc), whole, false, "gzip"},
		{"gzip any case, listed", gz.Bytes(), int64(gz.Len()), []string{"identity, GZIP"}, 1 << 20, string(doc), whole, false, "gzip"},
		{"deflate decoded", df.Bytes(), int64(df.Len()), []string{"deflate"}, 1 << 20, string(doc), whole, false, "deflate"},
		{"decoded beyond the limit", gz.Bytes(), int64(gz.Len()), []string{"gzip"}, 20, string(doc[:20]), 20, true, "gzip"},
		{"captured prefix of a longer body", gz.Bytes()[:gz.Len()/2], int64(gz.Len()), []string{"gzip"}, 1 << 20, "", -1, true, "gzip"},
		{"brotli not kept", []byte("\x1b\x00secret"), 8, []string{"br"}, 1 << 20, "", 8, true, "br"},
		{"stacked codings not kept", gz.Bytes(), int64(gz.Len()), []string{"gzip", "gzip"}, 1 << 20, "", int64(gz.Len()), true, "gzip,gzip"},
		{"gzip that is not", []byte("not gzip at all"), 15, []string{"gzip"}, 1 << 20, "", 15, true, "gzip"},
		{"empty coded body", nil, 0, []string{"gzip"}, 1 << 20, "", 0, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewCodedBody(tt.p, tt.size, tt.codings, tt.limit)
			if tt.wantSize >= 0 && (b.Text != tt.wantText || b.Size != tt.wantSize) {
				t.Errorf("body = %.40q size %d, want %.40q size %d", b.Text, b.Size, tt.wantText, tt.wantSize)
			}
			if tt.wantSize < 0 && !strings.HasPrefix(string(doc), b.Text) {
				t.Errorf("partly decoded body %.40q is not a prefix of the document", b.Text)
			}
			if b.Truncated != tt.wantTrunc || b.Coding != tt.wantCode {
				t.Errorf("truncated, coding = %v, %q; want %v, %q", b.Truncated, b.Coding, tt.wantTrunc, tt.wantCode)
			}
		})
	}
}
