package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"

	"github.com/keyholehq/keyhole/config"
	"github.com/keyholehq/keyhole/masking"
	"github.com/keyholehq/keyhole/mcp"
)

// mcpMasks are the compiled maskers of one mcp route.
type mcpMasks struct {
	tools   []*masking.Masker // by mcp.tools index: the entry's mask and the route's detectors; nil without mask
	anyTool *masking.Masker   // every tool's mask and the detectors: answers whose tool is unknown
	detect  *masking.Masker   // the route's detectors alone; nil without detect
}

// compileMCPMasks compiles the tool masks and detectors of cfg.Routes[i], an mcp route.
func compileMCPMasks(cfg *config.Config, i int) (*mcpMasks, error) {
	r := &cfg.Routes[i]
	opts := masking.Options{}
	if cfg.Masking != nil {
		opts.HashKey = []byte(cfg.Masking.HashKey.Reveal())
	}
	mm := &mcpMasks{tools: make([]*masking.Masker, len(r.MCP.Tools))}
	var all []config.MaskRule
	for j, t := range r.MCP.Tools {
		if len(t.Mask) == 0 {
			continue
		}
		m, err := masking.New(t.Mask, r.Detect, opts)
		if err != nil {
			return nil, fmt.Errorf("route %q: mcp.tools[%d].mask: %w", r.Name, j, err)
		}
		mm.tools[j] = m
		all = append(all, t.Mask...)
	}
	var err error
	if len(all) > 0 {
		if mm.anyTool, err = masking.New(all, r.Detect, opts); err != nil {
			return nil, fmt.Errorf("route %q: mcp.tools mask: %w", r.Name, err)
		}
	}
	if len(r.Detect) > 0 {
		if mm.detect, err = masking.New(nil, r.Detect, opts); err != nil {
			return nil, fmt.Errorf("route %q: detect: %w", r.Name, err)
		}
	}
	return mm, nil
}

// checkToolMasks compiles the tool masks of cfg.Routes[i] for CheckMasks, returning each
// refused rule at its path (routes[i].mcp.tools[j].mask[k].field).
func checkToolMasks(cfg *config.Config, i int) []error {
	var errs []error
	for j, t := range cfg.Routes[i].MCP.Tools {
		if len(t.Mask) == 0 {
			continue
		}
		_, err := masking.New(t.Mask, nil, masking.Options{HashKey: []byte("checking-the-rules-only")})
		var leaves []error
		if jn, ok := err.(interface{ Unwrap() []error }); ok {
			leaves = jn.Unwrap()
		} else if err != nil {
			leaves = []error{err}
		}
		for _, e := range leaves {
			var re *masking.RuleError
			p := fmt.Sprintf("routes[%d].mcp.tools[%d].mask", i, j)
			if errors.As(e, &re) {
				errs = append(errs, cfg.Errorf(fmt.Sprintf("%s[%d].field", p, re.Index), "%s", re.Msg))
			} else {
				errs = append(errs, cfg.Errorf(p, "%v", e))
			}
		}
	}
	return errs
}

// mcpMask is the masking of one request on an mcp route.
type mcpMask struct {
	fields *masking.Masker // the tool's rules and the detectors; nil: the detectors alone
	detect *masking.Masker // nil without detect
	call   bool            // answers are (or may be) tools/call answers: masked part by part
}

// maskMCP sets the masking of an allowed request on an mcp route: a tools/call answer gets
// the called tool's mask on structuredContent and on the JSON of its content texts, and
// the route's detectors on the rest; a GET stream, which may replay a tools/call answer
// after a reconnection (Last-Event-ID) without saying of which tool, gets every tool's mask
// on answers; anything else gets the detectors. m is nil for GET and DELETE.
func (g *Gateway) maskMCP(w http.ResponseWriter, r *http.Request, info *reqInfo, mr *mcpRoute, m *mcp.Message, d mcp.Decision) {
	mm := &mcpMask{detect: mr.masks.detect}
	switch {
	case m == nil:
		mm.fields, mm.call = mr.masks.anyTool, mr.masks.anyTool != nil
	case m.Method == mcp.MethodToolsCall:
		mm.call = true
		if d.Entry != "" && d.Index >= 0 && d.Index < len(mr.masks.tools) {
			mm.fields = mr.masks.tools[d.Index]
		}
	}
	if mm.fields == nil && mm.detect == nil {
		return
	}
	pass := false
	if rm := info.mask; rm != nil {
		pass = rm.passNonJSON
	} else {
		// The route has no detect, so no route mask did this.
		for _, k := range maskRequestHeaders {
			r.Header.Del(k)
		}
		if sw, ok := w.(*statusWriter); ok {
			sw.drop1xx = true
		}
	}
	masker := mm.fields
	if masker == nil {
		masker = mm.detect
	}
	info.mask = &routeMask{masker: masker, passNonJSON: pass, limit: info.state.maxMCPList, mcp: mm}
}

// maskToolAnswer masks one JSON-RPC message of a tools/call answer (the body, or one SSE
// event's data) with mcp.MaskResult. A message that cannot be masked is replaced by a
// JSON-RPC error answering the request, counted as mask_failed, so the client reads why
// and never the answer; where the request's id is unknown (a GET stream) the response
// fails as any unmaskable response does.
func (g *Gateway) maskToolAnswer(info *reqInfo, text, doc []byte) ([]byte, error) {
	mm := info.mask.mcp
	if t := bytes.TrimLeft(text, " \t\r\n"); len(t) > 0 && t[0] != '{' && t[0] != '[' && t[0] != '"' &&
		info.mask.passNonJSON && !compressed(doc) {
		return doc, nil
	}
	var n masking.Counts
	add := func(c masking.Counts) {
		n.Redact += c.Redact
		n.Remove += c.Remove
		n.Hash += c.Hash
		n.Last4 += c.Last4
		n.Detected += c.Detected
	}
	fields := mm.fields
	if fields == nil {
		fields = mm.detect
	}
	rm := mcp.ResultMask{
		Strict: mm.fields != nil,
		Fields: func(doc []byte) ([]byte, error) {
			out, c, err := fields.Apply(nil, doc)
			add(c)
			return out, err
		},
		Text: func(text []byte) []byte {
			if mm.detect == nil {
				return text
			}
			out, found := mm.detect.Text(nil, text)
			n.Detected += found
			return out
		},
	}
	if mm.detect != nil {
		rm.Other = func(v []byte) ([]byte, error) {
			out, c, err := mm.detect.Apply(nil, v)
			if errors.Is(err, masking.ErrNotJSON) {
				return v, nil // a number or literal: nothing a detector reads
			}
			add(c)
			return out, err
		}
	}
	out, err := mcp.MaskResult(text, rm)
	if err == nil {
		g.countMasked(info.route.Name, n)
		return out, nil
	}
	msg := "the MCP server's tools/call answer could not be masked, so it was not passed on"
	if info.mcp == nil || info.mcp.id == nil {
		return nil, &maskError{msg: msg}
	}
	g.metrics.MaskFailures.WithLabelValues(info.route.Name).Inc()
	rf := &refusal{status: http.StatusBadGateway, code: "mask_failed", msg: msg, decision: labelError, cause: err}
	info.refusal, info.decision = rf, rf.decision
	return mcp.ErrorMessage(info.mcp.id, -32603, msg, keyholeError(rf, info.id)), nil
}
