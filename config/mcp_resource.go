package config

import (
	"net"
	"net/url"
	"strings"
)

// mcpResource checks mcp.resource of route r at p (the route's path): the public URL
// OAuth clients know the MCP server by (RFC 9728 metadata, RFC 8707 audience). Its path
// is the route's exact match.path, so that the metadata URL a client derives from it
// (/.well-known/oauth-protected-resource + path) and the request path it sends name the
// same route; two routes cannot claim one resource.
func (v *validator) mcpResource(p string, r *Route) {
	rp := p + ".mcp.resource"
	res := r.MCP.Resource
	u, err := url.Parse(res)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		v.errorf(rp, "resource must be an absolute URL such as https://keyhole.example.com/crm/mcp, not %s", v.show(rp, res))
		return
	case u.Scheme != "https" && !(u.Scheme == "http" && loopbackHost(u.Hostname())):
		v.errorf(rp, "resource must be an https URL (http only on a loopback host), not %s", v.show(rp, res))
		return
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(res, "#"):
		v.errorf(rp, "resource must not carry user info, a query or a fragment (RFC 9728)")
		return
	}
	switch {
	case strings.ContainsAny(r.Match.Path, "{*"):
		v.errorf(rp, "a route with resource must match one exact path, not the pattern %s", v.show(p+".match.path", r.Match.Path))
	case u.EscapedPath() != r.Match.Path:
		v.errorf(rp, "the path of resource (%s) must be the route's match.path %s", v.show(rp, u.EscapedPath()), v.show(p+".match.path", r.Match.Path))
	}
	for i := range v.cfg.Routes {
		o := &v.cfg.Routes[i]
		if o == r {
			break
		}
		if o.MCP != nil && o.MCP.Resource == res {
			v.errorf(rp, "resource %s is already the resource of route %s", v.show(rp, res), o.Name)
		}
	}
}

// loopbackHost reports whether host is localhost or a loopback IP address.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
