package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the harness started: a target or the backend.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *tailBuffer
}

// tailBuffer keeps the last 64 KiB written to it, for a process's failure message; it
// is safe for the copying goroutine exec starts and a reader at once.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 64<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-64<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// start runs name args... with its output kept for when it fails, in its own process
// group, killed should the harness die first.
func start(name string, args ...string) (*proc, error) {
	p := &proc{name: filepath.Base(name), cmd: exec.Command(name, args...), log: &tailBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// stop ends the process and everything it started.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// pids returns the process and its children (nginx's workers).
func (p *proc) pids() []int {
	root := p.cmd.Process.Pid
	out := []int{root}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 4 && f[4] == strconv.Itoa(root) {
			out = append(out, pid)
		}
	}
	return out
}

// statFields returns the fields of /proc/pid/stat after the command name.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	// After the name come fields 3 (state), 4 (ppid), ... of proc(5); three blanks in
	// front make f[n] field n.
	return append([]string{"", "", ""}, strings.Fields(s[i+1:])...)
}

// cpuTicks is the user + system CPU time of the process and its children so far, in
// clock ticks.
func (p *proc) cpuTicks() int64 {
	var total int64
	for _, pid := range p.pids() {
		f := statFields(pid)
		if len(f) > 15 {
			u, _ := strconv.ParseInt(f[14], 10, 64) // utime
			s, _ := strconv.ParseInt(f[15], 10, 64) // stime
			total += u + s
		}
	}
	return total
}

// clockTick is USER_HZ, the unit of /proc/pid/stat times: 100 on Linux.
const clockTick = 100

// resetPeak resets the peak resident set size the kernel keeps (VmHWM).
func (p *proc) resetPeak() {
	for _, pid := range p.pids() {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}

// peakRSS is the peak resident set size since resetPeak, in bytes, summed over the
// process and its children.
func (p *proc) peakRSS() int64 {
	var total int64
	for _, pid := range p.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// freePort returns a loopback address nobody listens on now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// probeClient asks whether a process is up: one probe never outlasts 2 s.
var probeClient = &http.Client{Timeout: 2 * time.Second}

// waitHTTP waits until url answers with a status below 500, or the time is up.
func waitHTTP(p *proc, url string, header http.Header) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header = header
		resp, err := probeClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s did not come up at %s: %v\n%s", p.name, url, err, p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
