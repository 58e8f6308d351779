package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Tmpfs mounts a tmpfs of size bytes on a new directory and returns the directory; it
// is unmounted when the test ends. A small filesystem is how a test fills a disk, and
// remounting it read-only (Remount) is how it takes the writes away: as root, a chmod
// does neither. It skips the test, saying why, unless it runs as root and mount works
// (a container without CAP_SYS_ADMIN cannot mount).
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a full or read-only disk cannot be made otherwise)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount -t tmpfs: %v: %s (a full or read-only disk cannot be made here)", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Remount remounts the tmpfs at dir (from Tmpfs) read-only, or read-write again.
func Remount(t testing.TB, dir string, readOnly bool) {
	t.Helper()
	mode := "rw"
	if readOnly {
		mode = "ro"
	}
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, mode, err, out)
	}
}

// Fill writes a file into dir until the filesystem is full, and returns its path:
// removing it frees the space again.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "fill-*")
	if err != nil {
		t.Fatalf("fill %s: %v", dir, err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	// The last blocks: what a 64 KiB write could not take.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
	}
	return f.Name()
}
