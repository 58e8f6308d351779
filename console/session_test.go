package console

import (
	"strings"
	"testing"
	"time"
)

// TestSessionTimeouts: a session ends idle after idle_timeout without use, and max_age
// after its login however busy it was.
func TestSessionTimeouts(t *testing.T) {
	login := time.Date(2026, 1, 2, 9, 0, 0, 0, time.UTC)
	idle, maxAge := 30*time.Minute, 12*time.Hour
	tests := []struct {
		name      string
		seen, now time.Time
		wantAlive bool
	}{
		{"just logged in", login, login, true},
		{"used 29m ago", login.Add(time.Hour), login.Add(time.Hour + 29*time.Minute), true},
		{"idle 30m", login.Add(time.Hour), login.Add(time.Hour + 30*time.Minute), false},
		{"busy, 11h59m after login", login.Add(11*time.Hour + 58*time.Minute), login.Add(11*time.Hour + 59*time.Minute), true},
		{"busy, 12h after login", login.Add(11*time.Hour + 59*time.Minute), login.Add(12 * time.Hour), false},
	}
	for _, tt := range tests {
		s := session{Issued: login.Unix(), Seen: tt.seen.Unix()}
		if got := s.live(tt.now, idle, maxAge); got != tt.wantAlive {
			t.Errorf("%s: live = %v, want %v", tt.name, got, tt.wantAlive)
		}
	}
}

// TestSeal: a sealed cookie opens only with the same key and cookie name, and not
// after any change; its content is not readable.
func TestSeal(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	s, _ := newSealer(key)
	other, _ := newSealer([]byte(strings.Repeat("o", 32)))
	v, err := s.seal(sessionCookie, session{Subject: "alice@example.com", CSRF: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(v, "alice") {
		t.Fatal("sealed value shows its content")
	}
	var got session
	if err := s.open(sessionCookie, v, &got); err != nil || got.Subject != "alice@example.com" {
		t.Fatalf("open = %+v, %v", got, err)
	}
	replica, _ := newSealer(key)
	if err := replica.open(sessionCookie, v, &got); err != nil {
		t.Errorf("a replica with the same key cannot open the cookie: %v", err)
	}
	flipped := []byte(v)
	flipped[10] ^= 4
	for name, try := range map[string]func() error{
		"other key":    func() error { return other.open(sessionCookie, v, &got) },
		"other cookie": func() error { return s.open(loginCookie, v, &got) },
		"flipped":      func() error { return s.open(sessionCookie, string(flipped), &got) },
		"cut":          func() error { return s.open(sessionCookie, v[:len(v)-2], &got) },
		"empty":        func() error { return s.open(sessionCookie, "", &got) },
	} {
		if try() == nil {
			t.Errorf("%s: opened", name)
		}
	}
}
