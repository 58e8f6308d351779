package masking

// Text appends to dst the plain text text (not JSON: a header value, an SSE event name)
// with every span the Masker's detectors find replaced by its token, such as [US_SSN],
// and returns it with the number of spans replaced. Field rules do not apply to text.
// Text is safe for concurrent use.
func (m *Masker) Text(dst, text []byte) ([]byte, int) {
	if m.detect == 0 {
		return append(dst, text...), 0
	}
	var d scratch
	fs := d.find(text, m.detect)
	at := 0
	for _, f := range fs {
		dst = append(append(dst, text[at:f.start]...), f.det.token()...)
		at = f.end
	}
	return append(dst, text[at:]...), len(fs)
}
