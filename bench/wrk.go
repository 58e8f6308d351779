package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// load is one wrk run's description: where, how hard, and how each request is made.
type load struct {
	url         string // base URL of the target
	path        string // request path
	conns       int
	duration    time.Duration
	token       string // one bearer token for every request, or ""
	tokensFile  string // a file of tokens, one per line: every request takes the next
	forbidEvery int    // when > 0, every nth request goes to forbidPath instead
	forbidPath  string
	method      string            // "" is GET
	body        string            // sent with every request
	header      map[string]string // further headers of every request
	rate        int               // when > 0, an open loop of this many requests a second (vegeta), not wrk
}

// result is what one wrk run measured.
type result struct {
	Requests  int64   `json:"requests"`
	ReqPerSec float64 `json:"req_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P90ms     float64 `json:"p90_ms"`
	P99ms     float64 `json:"p99_ms"`
	// SentPerSec is the rate an open loop sent at (its schedule's, unless the generator
	// fell behind); ReqPerSec is then the rate of 2xx answers.
	SentPerSec  float64 `json:"sent_per_sec,omitempty"`
	Non2xx      int64   `json:"non_2xx"`
	Errors      int64   `json:"socket_errors"`
	CPUusPerReq float64 `json:"cpu_us_per_req"`
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	// TokensReused is set when a token-per-request run sent more requests than it had
	// tokens: some were then answered from the verified-token cache.
	TokensReused bool `json:"tokens_reused,omitempty"`
}

// runWrk drives l with wrk (one thread: the harness measures the target, not wrk) and
// parses its report. wrk stops by itself after l.duration; it is killed 30 s later, or
// when ctx ends, if it has not.
func runWrk(ctx context.Context, dir string, l load) (result, error) {
	script := filepath.Join(dir, "request.lua")
	if err := os.WriteFile(script, []byte(luaScript(l)), 0o600); err != nil {
		return result{}, err
	}
	args := []string{"-t1", fmt.Sprintf("-c%d", l.conns), fmt.Sprintf("-d%ds", int(l.duration.Seconds())),
		"--latency", "--timeout", "10s", "-s", script, l.url + l.path}
	ctx, cancel := context.WithTimeout(ctx, l.duration+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(string(out))
}

// luaScript builds the wrk script for l: the Authorization header, a token per request
// read from a file, the share of forbidden requests, and the method, body and further
// headers of every request.
func luaScript(l load) string {
	var b strings.Builder
	method := l.method
	if method == "" {
		method = "GET"
	}
	fmt.Fprintf(&b, "local path = %q\nlocal forbidEvery = %d\nlocal forbidPath = %q\nlocal n = 0\n", l.path, l.forbidEvery, l.forbidPath)
	fmt.Fprintf(&b, "local method = %q\nlocal body = %q\nlocal header = {}\n", method, l.body)
	for _, k := range slices.Sorted(maps.Keys(l.header)) {
		fmt.Fprintf(&b, "header[%q] = %q\n", k, l.header[k])
	}
	if l.tokensFile != "" {
		fmt.Fprintf(&b, "local tokens = {}\nfor line in io.lines(%q) do tokens[#tokens + 1] = line end\n", l.tokensFile)
	} else {
		fmt.Fprintf(&b, "local token = %q\n", l.token)
	}
	b.WriteString(`request = function()
  n = n + 1
  local p = path
  if forbidEvery > 0 and n % forbidEvery == 0 then p = forbidPath end
  local h = {}
  for k, v in pairs(header) do h[k] = v end
`)
	if l.tokensFile != "" {
		b.WriteString("  h[\"Authorization\"] = \"Bearer \" .. tokens[(n - 1) % #tokens + 1]\n")
	} else {
		b.WriteString("  if token ~= \"\" then h[\"Authorization\"] = \"Bearer \" .. token end\n")
	}
	b.WriteString("  if body ~= \"\" then return wrk.format(method, p, h, body) end\n  return wrk.format(method, p, h)\nend\n")
	return b.String()
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkRate     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkPercent  = regexp.MustCompile(`^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$`)
)

// parseWrk reads wrk's text report.
func parseWrk(out string) (result, error) {
	var r result
	m := wrkRequests.FindStringSubmatch(out)
	rate := wrkRate.FindStringSubmatch(out)
	if m == nil || rate == nil {
		return r, fmt.Errorf("wrk report not understood:\n%s", out)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.ReqPerSec, _ = strconv.ParseFloat(rate[1], 64)
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.Errors += n
		}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := wrkPercent.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		switch m[1] {
		case "50":
			r.P50ms = v
		case "90":
			r.P90ms = v
		default:
			r.P99ms = v
		}
	}
	return r, nil
}
