package logbuf_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/logbuf"
)

// sink records each write it receives, as a terminal or a log collector would see them.
type sink struct {
	mu     sync.Mutex
	writes []string
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, string(p))
	return len(p), nil
}

func (s *sink) got() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes), strings.Join(s.writes, "")
}

// TestWriterBatches checks that many lines leave in few writes, whole and in order,
// and that Close delivers what is left.
func TestWriterBatches(t *testing.T) {
	out := &sink{}
	w := logbuf.New(out, 4096, time.Hour)
	var want strings.Builder
	for i := range 1000 {
		line := fmt.Sprintf(`{"msg":"request","n":%d}`+"\n", i)
		want.WriteString(line)
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n, text := out.got()
	if text != want.String() {
		t.Fatalf("lines arrived changed or out of order: got %d bytes, want %d", len(text), want.Len())
	}
	if n > want.Len()/4096+1 {
		t.Errorf("%d writes for %d bytes with a 4096-byte buffer", n, want.Len())
	}
	if _, err := w.Write([]byte("after close\n")); err != nil {
		t.Fatal(err)
	}
	if _, text := out.got(); !strings.HasSuffix(text, "after close\n") {
		t.Errorf("a write after Close was not passed through")
	}
}

// TestWriterConcurrentLinesWhole checks that concurrent writers' lines are never
// interleaved, including lines longer than the buffer.
func TestWriterConcurrentLinesWhole(t *testing.T) {
	out := &sink{}
	w := logbuf.New(out, 256, time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				pad := strings.Repeat(string(rune('a'+g)), (i%5)*100)
				w.Write([]byte(fmt.Sprintf("<%d %s %d>\n", g, pad, g)))
			}
		}()
	}
	wg.Wait()
	w.Close()
	_, text := out.got()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 8*200 {
		t.Fatalf("%d lines, want %d", len(lines), 8*200)
	}
	for _, l := range lines {
		var a, b int
		var pad string
		if _, err := fmt.Sscanf(strings.ReplaceAll(l, "  ", " - "), "<%d %s %d>", &a, &pad, &b); err != nil || a != b {
			t.Fatalf("line torn or mixed: %q", l)
		}
	}
}

// TestWriterFlushesOnItsOwn checks that a quiet process's lines still appear within
// the interval, without Flush or Close.
func TestWriterFlushesOnItsOwn(t *testing.T) {
	out := &sink{}
	w := logbuf.New(out, 4096, 20*time.Millisecond)
	defer w.Close()
	w.Write([]byte("one line\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, text := out.got(); text == "one line\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the buffered line was never written")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUrgent checks that a warning leaves at once, with the lines buffered before it,
// while an info line waits.
func TestUrgent(t *testing.T) {
	out := &sink{}
	w := logbuf.New(out, 4096, time.Hour)
	defer w.Close()
	log := slog.New(logbuf.Urgent(slog.NewJSONHandler(w, nil), w, slog.LevelWarn)).With("component", "test")
	log.Info("request")
	if n, _ := out.got(); n != 0 {
		t.Fatalf("an info line was written at once (%d writes)", n)
	}
	log.WithGroup("g").LogAttrs(context.Background(), slog.LevelWarn, "reload refused", slog.String("k", "v"))
	_, text := out.got()
	if !strings.Contains(text, `"msg":"request"`) || !strings.Contains(text, `"msg":"reload refused"`) || !strings.Contains(text, `"g":{"k":"v"}`) {
		t.Errorf("after a warning the output is %q, want both lines", text)
	}
}
