package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// The fault tests drive a real keyhole process (this test binary run as the command, see
// TestMain) over loopback and check what a user or an operator would see: answers, the
// store, and the process's goroutines, file descriptors and memory before and after.

// faultProc is a `keyhole serve` child process started by startFault.
type faultProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	Data   string          // data plane address
	Admin  string          // admin plane address
	Dir    string          // the config's directory: relative store paths land here
	Stderr *testkit.Buffer // the process's log
	exited chan struct{}
}

// startFault writes the config that cfg returns for the data and admin addresses it is
// given into a new directory, starts `keyhole serve` on it with env added to the test's
// environment, and waits until /readyz answers 200. The process is killed when the test
// ends if it is still running.
func startFault(t *testing.T, cfg func(data, admin string) string, env ...string) *faultProc {
	t.Helper()
	p := launchFault(t, cfg, env...)
	p.WaitReady()
	return p
}

// launchFault starts `keyhole serve` as startFault does, without waiting for it to be
// ready.
func launchFault(t *testing.T, cfg func(data, admin string) string, env ...string) *faultProc {
	t.Helper()
	p := &faultProc{t: t, Data: freeAddr(t), Admin: freeAddr(t), Dir: t.TempDir(), Stderr: &testkit.Buffer{}, exited: make(chan struct{})}
	path := filepath.Join(p.Dir, "keyhole.yaml")
	if err := os.WriteFile(path, []byte(cfg(p.Data, p.Admin)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0], "serve", "--config", path, "--watch-interval", "0")
	p.cmd.Env = append(append(os.Environ(), "KEYHOLE_TEST_AS_MAIN=1"), env...)
	p.cmd.Stderr = p.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// WaitReady waits until /readyz answers 200, failing the test after 15 s or when the
// process exits.
func (p *faultProc) WaitReady() {
	t := p.t
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if s, _ := get("http://"+p.Admin+"/readyz", ""); s == http.StatusOK {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("keyhole exited before it was ready; its log:\n%s", p.Stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyhole not ready after 15 s; its log:\n%s", p.Stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *faultProc) Kill() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatal(err)
	}
	<-p.exited
}

// procUsage is what a fault test compares before and after the fault.
type procUsage struct {
	Goroutines int   // go_goroutines from the process's /metrics
	FDs        int   // entries of /proc/PID/fd
	RSS        int64 // VmRSS in bytes
}

func (u procUsage) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %.1f MB RSS", u.Goroutines, u.FDs, float64(u.RSS)/(1<<20))
}

// Usage reads the process's goroutines, file descriptors and resident memory now.
func (p *faultProc) Usage() procUsage {
	p.t.Helper()
	var u procUsage
	pid := p.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		p.t.Fatalf("read fds: %v", err)
	}
	u.FDs = len(fds)
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		p.t.Fatalf("read status: %v", err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			u.RSS = kb << 10
		}
	}
	_, body := get("http://"+p.Admin+"/metrics", "")
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			u.Goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return u
}

// leakSlack is how far goroutines and file descriptors may stay above the baseline once a
// fault is over: idle keep-alive connections of the test's own clients and the runtime's
// helpers come and go, a leak per request or per connection does not.
const leakSlack = 12

// CheckSettled waits up to within for the process to come back to base (goroutines and
// fds within leakSlack, RSS within rssSlack bytes), logs before and after, and fails the
// test with both when it does not.
func (p *faultProc) CheckSettled(base procUsage, within time.Duration, rssSlack int64) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	var now procUsage
	for {
		now = p.Usage()
		if now.Goroutines <= base.Goroutines+leakSlack && now.FDs <= base.FDs+leakSlack && now.RSS <= base.RSS+rssSlack {
			break
		}
		if time.Now().After(deadline) {
			p.t.Errorf("leak: before the fault %v; %v after it (waited %v)", base, now, within)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Logf("before the fault %v; after it %v", base, now)
}
