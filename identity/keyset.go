package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// maxJWKSBytes bounds a key-set document.
const maxJWKSBytes = 1 << 20

// keySet is the oidc.KeySet of one issuer. go-oidc's RemoteKeySet caches keys forever
// and refetches on every unknown kid, so N forged tokens make N JWKS requests; this
// one keeps its keys in an atomic snapshot, lets unknown kids cause at most one
// fetch per minRefetch, is refreshed periodically by its issuer's goroutine, and keeps
// the last good keys when a fetch fails.
type keySet struct {
	issuer string
	client *http.Client
	// base is the Verifier's lifetime context. Fetches are shared by many requests
	// (singleflight), so none of their contexts may cancel one.
	base       context.Context
	now        func() time.Time
	minRefetch time.Duration
	onRefresh  func(issuer string, err error)
	log        *slog.Logger

	url       atomic.Pointer[string]      // JWKS URL, set by discovery or config
	snap      atomic.Pointer[keySnapshot] // nil until the first successful fetch
	gen       atomic.Uint64               // incremented when a fetch drops or replaces a key
	lastFetch atomic.Int64                // Unix nanoseconds (by now) of the last fetch attempt
	flight    singleflight.Group
}

var _ oidc.KeySet = (*keySet)(nil)

// keySnapshot is an immutable set of verification keys.
type keySnapshot struct {
	keys []verificationKey
}

type verificationKey struct {
	kid   string
	alg   string // the JWK's alg, "" when it names none
	key   crypto.PublicKey
	thumb string // RFC 7638 thumbprint: identifies the key material
}

// verdict is the outcome of checking a token against a snapshot.
type verdict int

const (
	noKey    verdict = iota // no key with the token's kid (or, kid-less, of its alg)
	badSig                  // keys were tried and none verified
	verified                // a key verified the signature
)

// VerifySignature implements oidc.KeySet. Its verdict also goes to the verifyCall in
// ctx, so that Verify can name the reason without reading go-oidc's error text.
func (ks *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	call, _ := ctx.Value(verifyCallKey{}).(*verifyCall)
	var jws *jose.JSONWebSignature
	if call != nil && call.raw == jwt {
		jws = call.jws
	} else {
		var err error
		// go-oidc has already checked the algorithm against the issuer's list.
		if jws, err = jose.ParseSignedCompact(jwt, supportedAlgs); err != nil || len(jws.Signatures) != 1 {
			return nil, errMalformed
		}
	}
	payload, e := ks.verify(ctx, jws)
	if e != nil {
		if call != nil {
			call.err = e
		}
		return nil, e
	}
	return payload, nil
}

// verify checks jws against the current keys. An unknown kid, or a kid-less token that
// no key verifies, may refetch the key set once (rate-limited) and try again. A
// known kid whose key does not verify is a bad signature without any refetch.
func (ks *keySet) verify(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, *Error) {
	h := jws.Signatures[0].Header
	payload, res := ks.snap.Load().verify(jws, h.KeyID, string(h.Algorithm))
	switch {
	case res == verified:
		return payload, nil
	case res == badSig && h.KeyID != "":
		return nil, errBadSignature
	}
	ks.refetch(ctx)
	payload, res = ks.snap.Load().verify(jws, h.KeyID, string(h.Algorithm))
	switch res {
	case verified:
		return payload, nil
	case badSig:
		return nil, errBadSignature
	}
	return nil, errUnknownKey
}

// verify tries the keys named by kid, or, when kid is empty, every key usable with alg.
func (s *keySnapshot) verify(jws *jose.JSONWebSignature, kid, alg string) ([]byte, verdict) {
	res := noKey
	if s == nil {
		return nil, res
	}
	for i := range s.keys {
		k := &s.keys[i]
		if kid != "" {
			if k.kid != kid {
				continue
			}
			res = badSig // the kid is known: whatever follows is not a missing key
		} else {
			if !k.fits(alg) {
				continue
			}
			res = badSig
		}
		if !k.fits(alg) {
			continue
		}
		if payload, err := jws.Verify(k.key); err == nil {
			return payload, verified
		}
	}
	return nil, res
}

// fits reports whether k may verify a signature made with alg.
func (k *verificationKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch pub := k.key.(type) {
	case *rsa.PublicKey:
		switch jose.SignatureAlgorithm(alg) {
		case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
			return true
		}
	case *ecdsa.PublicKey:
		switch jose.SignatureAlgorithm(alg) {
		case jose.ES256:
			return pub.Curve == elliptic.P256()
		case jose.ES384:
			return pub.Curve == elliptic.P384()
		case jose.ES512:
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return jose.SignatureAlgorithm(alg) == jose.EdDSA
	}
	return false
}

// refetch fetches the key set unless a fetch happened within minRefetch, sharing one
// fetch between concurrent callers. It returns when that fetch is done or ctx is.
func (ks *keySet) refetch(ctx context.Context) {
	if ks.fetchedRecently() {
		return
	}
	ch := ks.flight.DoChan("jwks", func() (any, error) {
		// A caller that passed the check above just as another fetch finished
		// must not start a second one.
		if ks.fetchedRecently() {
			return nil, nil
		}
		return nil, ks.fetch()
	})
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// refresh fetches the key set regardless of the refetch limit (periodic refresh and
// start-up), sharing a fetch already in flight.
func (ks *keySet) refresh() error {
	_, err, _ := ks.flight.Do("jwks", func() (any, error) { return nil, ks.fetch() })
	return err
}

func (ks *keySet) fetchedRecently() bool {
	last := ks.lastFetch.Load()
	return last != 0 && ks.now().UnixNano()-last < int64(ks.minRefetch)
}

// fetch runs one fetch attempt and reports it. Only flight callers run it, so fetches
// (and the snapshot swaps they make) never overlap.
func (ks *keySet) fetch() error {
	ks.lastFetch.Store(ks.now().UnixNano())
	n, removed, err := ks.load()
	if ks.base.Err() != nil {
		return err // shutting down: not an IdP failure worth reporting
	}
	if err != nil {
		ks.log.Warn("jwks refresh failed, keeping the last good keys", "err", err)
	} else if removed {
		ks.log.Info("jwks keys removed or replaced, cached tokens of this issuer dropped", "keys", n)
	}
	if ks.onRefresh != nil {
		ks.onRefresh(ks.issuer, err)
	}
	return err
}

// load fetches and installs the key set. It reports the number of keys and whether
// a key of the previous set is gone (or its kid now names other key material).
func (ks *keySet) load() (n int, removed bool, err error) {
	u := ks.url.Load()
	if u == nil {
		return 0, false, errors.New("jwks: no URL")
	}
	ctx, cancel := context.WithTimeout(ks.base, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *u, nil)
	if err != nil {
		return 0, false, fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := ks.client.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("jwks %s: status %d", *u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return 0, false, fmt.Errorf("jwks %s: %w", *u, err)
	}
	if len(body) > maxJWKSBytes {
		return 0, false, fmt.Errorf("jwks %s: larger than %d bytes", *u, maxJWKSBytes)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return 0, false, fmt.Errorf("jwks %s: %w", *u, err)
	}
	next := &keySnapshot{keys: keys}
	prev := ks.snap.Swap(next)
	// The generation moves after the new keys are visible: a Verify that read the old
	// generation may have used a dropped key, and its cache entry will not be served.
	if prev.dropsFrom(next) {
		ks.gen.Add(1)
		return len(keys), true, nil
	}
	return len(keys), false, nil
}

// dropsFrom reports whether some key of s is missing from next.
func (s *keySnapshot) dropsFrom(next *keySnapshot) bool {
	if s == nil {
		return false
	}
outer:
	for _, k := range s.keys {
		for _, n := range next.keys {
			if k.kid == n.kid && k.thumb == n.thumb {
				continue outer
			}
		}
		return true
	}
	return false
}

// parseJWKS reads the public signing keys of a JWK Set. Keys it cannot use (other key
// types, encryption keys, symmetric keys, keys with private parts) are skipped, as
// RFC 7517 §5 asks; a set with no usable key is an error, so the last good keys stay.
func parseJWKS(body []byte) ([]verificationKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var keys []verificationKey
	for _, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			continue
		}
		if (jwk.Use != "" && jwk.Use != "sig") || !jwk.IsPublic() || !jwk.Valid() {
			continue
		}
		switch jwk.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			continue
		}
		if jwk.Algorithm != "" && !slices.Contains(supportedAlgs, jose.SignatureAlgorithm(jwk.Algorithm)) {
			continue
		}
		thumb, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			continue
		}
		keys = append(keys, verificationKey{kid: jwk.KeyID, alg: jwk.Algorithm, key: jwk.Key, thumb: string(thumb)})
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signing keys")
	}
	return keys, nil
}
