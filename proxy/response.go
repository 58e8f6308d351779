package proxy

import (
	"io"
	"net/http"
)

// trailerless is the body of a masked response. The transport fills resp.Trailer when
// its body reaches the end, after ModifyResponse ran and before ReverseProxy copies the
// trailers to the client; trailerless empties it again at that moment. A masked route
// sends no trailers: they are headers the masker never sees (issue 11).
type trailerless struct {
	io.ReadCloser
	resp *http.Response
}

func (t *trailerless) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err != nil {
		t.resp.Trailer = nil
	}
	return n, err
}
