package identity_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/testkit"
)

// FuzzVerify checks that no input panics, that every refusal is an *identity.Error
// with a known Reason, and that no input other than the issuer's own token verifies.
func FuzzVerify(f *testing.F) {
	iss := testkit.NewIssuer(f)
	v := newVerifier(f, iss.Config(), identity.Options{})
	good := iss.Token(f, nil)
	for _, s := range []string{good, iss.NoneToken(f, nil), iss.HS256PublicKeyToken(f, nil), "", ".", "..", "a.b.c",
		"eyJhbGciOiJSUzI1NiJ9.e30.", strings.Replace(good, ".", "..", 1), good + "=", `{"payload":"e30"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := v.Verify(t.Context(), raw)
		if err == nil {
			if raw != good {
				t.Fatalf("Verify accepted a mutated token %q (principal %+v)", raw, p)
			}
			return
		}
		var e *identity.Error
		if !errors.As(err, &e) {
			t.Fatalf("Verify error %v (%T) is not an *identity.Error", err, err)
		}
		known := false
		for _, r := range identity.Reasons {
			known = known || r == e.Reason
		}
		if !known {
			t.Fatalf("Verify reason %q is not in identity.Reasons", e.Reason)
		}
	})
}
