package identity

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyholehq/keyhole/config"
)

// Defaults of Options.
const (
	DefaultRefreshInterval    = 15 * time.Minute
	DefaultMinRefetchInterval = 10 * time.Second
	DefaultCacheSize          = 10000
	DefaultHTTPTimeout        = 10 * time.Second
)

const (
	// nbfLeeway is go-oidc's allowance for clock skew on nbf; the pre-check uses the
	// same value so that both agree on which tokens are not valid yet.
	nbfLeeway = 5 * time.Minute
	// maxTokenBytes bounds the work spent on a token before its signature is checked.
	maxTokenBytes = 64 << 10
	// fetchTimeout bounds one discovery or JWKS request even when Options.HTTPClient
	// has no timeout: a hung endpoint must not block every later refresh.
	fetchTimeout = 30 * time.Second
	// maxRetryBackoff caps the wait between start-up attempts while an issuer is down.
	maxRetryBackoff = time.Minute
)

// supportedAlgs are the asymmetric JWS algorithms an issuer may be configured with.
// Symmetric (HS*) and "none" are never accepted: a JWKS holds public keys only.
var supportedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Options tunes a Verifier. The zero value is ready to use.
type Options struct {
	// HTTPClient fetches discovery documents and key sets. Nil means a client with a
	// 10s timeout (never http.DefaultClient, which has none).
	HTTPClient *http.Client
	// Now is the clock for exp/nbf, the token cache and the refetch limit. Nil means time.Now.
	Now func() time.Time
	// RefreshInterval is how often every key set is refetched, so that removed keys
	// stop validating. Zero or less means 15m. It also caps the start-up retry backoff.
	RefreshInterval time.Duration
	// MinRefetchInterval is the least time between two JWKS fetches caused by unknown
	// kids, per issuer. Zero or less means 10s.
	MinRefetchInterval time.Duration
	// CacheSize bounds the verified-token cache. Zero means 10000; negative disables the cache.
	CacheSize int
	// OnRefresh, if set, is called after each attempt to obtain an issuer's key set
	// (discovery failures included) with its error, nil on success. It is called from
	// background and request goroutines and must be safe for concurrent use.
	OnRefresh func(issuer string, err error)
	// Logger receives background events (refresh failures, key changes). Nil discards them.
	Logger *slog.Logger
}

// Verifier verifies access tokens of a fixed set of issuers. It is safe for
// concurrent use. Create it with New and stop its background goroutines with Close.
type Verifier struct {
	issuers map[string]*issuer
	list    []*issuer
	cache   *tokenCache // nil when disabled
	now     func() time.Time
	// claims is the set of claims Principal.Claims keeps (SetClaims); nil keeps all.
	claims atomic.Pointer[claimSet]

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// issuer is one configured issuer with its key set and its go-oidc verifier, built once.
type issuer struct {
	name        string
	audiences   []string
	algs        []string
	groupsClaim string
	// clientIDClaims are the claims tried in order for Principal.ClientID.
	clientIDClaims []string
	maxAge         time.Duration // longest token lifetime accepted
	scopesClaim    string
	keys           *keySet
	verifier       *oidc.IDTokenVerifier

	ready   atomic.Bool
	readyCh chan struct{} // closed when ready becomes true
}

// New returns a Verifier for issuers. It does no network I/O: discovery and the first
// key-set fetch run in the background, retried with backoff until they succeed, so
// the gateway can start while an issuer is down. Until then Ready reports false and
// tokens of that issuer are refused with ReasonUnknownKey.
//
// ctx is the process context: the background work lives until ctx is done or Close is
// called. It must not be a request's context.
//
// Empty GroupsClaim, ScopesClaim and Algorithms take the config defaults. New returns
// an error if issuers is empty, or if an issuer has no URL, no audience or an empty
// one, is listed twice, or names an algorithm other than RS*, PS*, ES* or EdDSA.
func New(ctx context.Context, issuers []config.Issuer, opts Options) (*Verifier, error) {
	if len(issuers) == 0 {
		return nil, errors.New("identity: no issuers configured")
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.MinRefetchInterval <= 0 {
		opts.MinRefetchInterval = DefaultMinRefetchInterval
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}

	ctx, cancel := context.WithCancel(ctx)
	v := &Verifier{issuers: make(map[string]*issuer, len(issuers)), now: opts.Now, cancel: cancel}
	if opts.CacheSize > 0 {
		v.cache = newTokenCache(opts.CacheSize)
	}
	var errs []error
	for i, c := range issuers {
		is, err := newIssuer(ctx, c, opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("identity: issuers[%d]: %w", i, err))
			continue
		}
		if _, dup := v.issuers[is.name]; dup {
			errs = append(errs, fmt.Errorf("identity: issuers[%d]: issuer %q listed twice", i, is.name))
			continue
		}
		v.issuers[is.name] = is
		v.list = append(v.list, is)
	}
	if err := errors.Join(errs...); err != nil {
		cancel()
		return nil, err
	}
	for _, is := range v.list {
		v.wg.Go(func() { is.run(ctx, opts) })
	}
	return v, nil
}

func newIssuer(ctx context.Context, c config.Issuer, opts Options) (*issuer, error) {
	if c.Issuer == "" {
		return nil, errors.New("issuer URL is empty")
	}
	if len(c.Audiences) == 0 || slices.Contains(c.Audiences, "") {
		return nil, fmt.Errorf("issuer %q: audiences must be non-empty strings", c.Issuer)
	}
	is := &issuer{
		name:        c.Issuer,
		audiences:   slices.Clone(c.Audiences),
		algs:        slices.Clone(c.Algorithms),
		groupsClaim: c.GroupsClaim,
		scopesClaim: c.ScopesClaim,
		readyCh:     make(chan struct{}),
	}
	if is.groupsClaim == "" {
		is.groupsClaim = config.DefaultGroupsClaim
	}
	is.maxAge = time.Duration(c.MaxTokenAge)
	if is.maxAge <= 0 {
		is.maxAge = config.DefaultMaxTokenAge
	}
	is.clientIDClaims = defaultClientIDClaims
	if c.ClientIDClaim != "" {
		is.clientIDClaims = []string{c.ClientIDClaim}
	}
	if is.scopesClaim == "" {
		is.scopesClaim = config.DefaultScopesClaim
	}
	if len(is.algs) == 0 {
		is.algs = slices.Clone(config.DefaultAlgorithms)
	}
	for _, a := range is.algs {
		if !slices.Contains(supportedAlgs, jose.SignatureAlgorithm(a)) {
			return nil, fmt.Errorf("issuer %q: algorithm %q is not supported", c.Issuer, a)
		}
	}
	is.keys = &keySet{
		issuer:     c.Issuer,
		client:     opts.HTTPClient,
		base:       ctx,
		now:        opts.Now,
		minRefetch: opts.MinRefetchInterval,
		onRefresh:  opts.OnRefresh,
		log:        opts.Logger.With("issuer", c.Issuer),
	}
	if c.JWKSURL != "" {
		u := c.JWKSURL
		is.keys.url.Store(&u)
	}
	// One verifier per issuer for the Verifier's lifetime. The audience is checked
	// here, not by go-oidc, because an issuer may accept several (go-oidc takes one).
	is.verifier = oidc.NewVerifier(c.Issuer, is.keys, &oidc.Config{
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: is.algs,
		Now:                  opts.Now,
	})
	return is, nil
}

// run discovers the issuer and fetches its keys, retrying with exponential backoff
// until both succeed, then refreshes the keys every RefreshInterval until ctx is done.
func (is *issuer) run(ctx context.Context, opts Options) {
	backoff := min(time.Second, opts.RefreshInterval)
	maxBackoff := min(maxRetryBackoff, opts.RefreshInterval)
	for {
		err := is.start(ctx, opts.HTTPClient)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		// Jitter spreads the retries of several replicas after an IdP outage.
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
	is.ready.Store(true)
	close(is.readyCh)
	is.keys.log.Info("issuer ready")

	t := time.NewTicker(opts.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			is.keys.refresh()
		}
	}
}

// start runs discovery (unless the JWKS URL is configured or already known) and the
// first key-set fetch.
func (is *issuer) start(ctx context.Context, client *http.Client) error {
	if is.keys.url.Load() == nil {
		u, err := discover(ctx, client, is.name)
		if err != nil {
			if ctx.Err() == nil {
				is.keys.log.Warn("oidc discovery failed", "err", err)
				if is.keys.onRefresh != nil {
					is.keys.onRefresh(is.name, err)
				}
			}
			return err
		}
		is.keys.url.Store(&u)
	}
	return is.keys.refresh()
}

// discover returns the jwks_uri of issuerURL's OIDC discovery document. go-oidc checks
// that the document names the same issuer.
func discover(ctx context.Context, client *http.Client, issuerURL string) (string, error) {
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, client), fetchTimeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, issuerURL)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var meta struct {
		JWKSURL string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	if meta.JWKSURL == "" {
		return "", errors.New("discovery: document has no jwks_uri")
	}
	return meta.JWKSURL, nil
}

// Ready reports whether every issuer has been discovered and has fetched a key set
// at least once.
func (v *Verifier) Ready() bool {
	for _, is := range v.list {
		if !is.ready.Load() {
			return false
		}
	}
	return true
}

// WaitReady blocks until Ready would report true, or returns ctx's error.
func (v *Verifier) WaitReady(ctx context.Context) error {
	for _, is := range v.list {
		select {
		case <-is.readyCh:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close stops the background discovery and refresh goroutines and waits for them.
// Verify keeps working with the keys already fetched. Close is idempotent.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		v.cancel()
		v.wg.Wait()
	})
}

// Refusals. Their messages never include the token or any of its content. They are
// shared templates: exported functions return copies, so callers may modify theirs.
var (
	errNoToken        = &Error{Reason: ReasonMissing, Msg: "missing bearer token"}
	errMalformed      = &Error{Reason: ReasonMalformed, Msg: "token is not a well-formed JWT"}
	errNoSubject      = &Error{Reason: ReasonMalformed, Msg: "token has no subject"}
	errUnverifiable   = &Error{Reason: ReasonMalformed, Msg: "token claims could not be verified"}
	errUnknownIssuer  = &Error{Reason: ReasonBadIssuer, Msg: "token issuer is not trusted"}
	errAlgorithm      = &Error{Reason: ReasonBadSignature, Msg: "token signature algorithm is not accepted"}
	errBadSignature   = &Error{Reason: ReasonBadSignature, Msg: "token signature is invalid"}
	errNoExpiry       = &Error{Reason: ReasonExpired, Msg: "token has no expiry"}
	errExpired        = &Error{Reason: ReasonExpired, Msg: "token expired"}
	errNotYetValid    = &Error{Reason: ReasonExpired, Msg: "token is outside its validity window"}
	errIssuedInFuture = &Error{Reason: ReasonExpired, Msg: "token is issued in the future (iat)"}
	errTooLongLived   = &Error{Reason: ReasonExpired, Msg: "token lives longer than the issuer's max_token_age"}
	errAudience       = &Error{Reason: ReasonBadAudience, Msg: "token audience is not accepted"}
	errUnknownKey     = &Error{Reason: ReasonUnknownKey, Msg: "token is signed by a key this issuer does not publish"}
	errIssuerNotReady = &Error{Reason: ReasonUnknownKey, Msg: "issuer keys are not available yet"}
)

// Verify checks raw, a compact JWS access token, and returns its Principal. The
// returned Principal may be shared with other callers: do not modify it.
//
// A refusal is an *Error whose Reason is derived from typed facts, never from error
// text. Checks run in this order, the first failure naming the reason:
//   - structure, JSON payload → malformed; alg not RS*/PS*/ES*/EdDSA → bad_signature;
//   - iss not configured (exact match) → bad_issuer;
//   - alg outside the issuer's algorithms → bad_signature;
//   - exp missing or past → expired; nbf more than go-oidc's 5-minute leeway in the
//     future ("outside its validity window") → expired; exp/nbf not numbers → malformed;
//   - aud (string or array) holding none of the issuer's audiences (nor the one of
//     WithAudience) → bad_audience;
//   - no sub → malformed; issuer whose keys were never fetched → unknown_key;
//   - go-oidc with the issuer's key set. go-oidc wraps KeySet errors with %v, so the
//     key set also records its verdict (unknown_key: kid absent even after a refetch;
//     bad_signature: a key with that kid, or any key for a kid-less token, was tried
//     and failed) in a per-call value of the context; go-oidc's *TokenExpiredError →
//     expired; any other go-oidc error (claims of the wrong type) → malformed.
//
// The checks before go-oidc read the signed payload before its signature is known to
// hold: they can only refuse a token, never accept one.
//
// A token seen before and still valid is answered from the cache without any
// cryptography. ctx bounds only the wait for a JWKS refetch caused by this token.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Principal, error) {
	if raw == "" {
		return nil, errNoToken.copy()
	}
	if len(raw) > maxTokenBytes {
		return nil, errMalformed.copy()
	}
	now := v.now()
	cs := v.claims.Load()
	var key [32]byte
	if v.cache != nil {
		// The unsafe view avoids copying the token to hash it; Sum256 neither keeps
		// nor modifies its input.
		key = sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
		if p := v.cache.get(&key, now.UnixNano(), cs); p != nil {
			return p, nil
		}
	}
	p, ks, gen, e := v.verify(ctx, raw, now)
	if e != nil {
		return nil, e.copy()
	}
	p.Claims = cs.keep(p.Claims)
	if v.cache != nil && p.Resource == "" {
		v.cache.put(&key, cacheEntry{p: p, exp: p.Expiry.UnixNano(), keys: ks, gen: gen, claims: cs}, now.UnixNano())
	}
	return p, nil
}

// claimSet is a set of claim names Principal.Claims keeps. A nil *claimSet keeps all.
type claimSet struct{ names map[string]bool }

// keep returns the claims of c that s keeps: claims itself for a nil s, nil when none.
func (s *claimSet) keep(claims map[string]any) map[string]any {
	if s == nil {
		return claims
	}
	var out map[string]any
	for name := range s.names {
		if v, ok := claims[name]; ok {
			if out == nil {
				out = make(map[string]any, len(s.names))
			}
			out[name] = v
		}
	}
	return out
}

// SetClaims makes Principal.Claims hold only the named claims — those the route rules
// read (rules.Table.ClaimNames) — from now on: a verified-token cache entry then costs a
// few hundred bytes instead of the whole claim set. Cached principals made under another
// set are verified again. Until it is first called, every claim is kept.
func (v *Verifier) SetClaims(names []string) {
	s := &claimSet{names: make(map[string]bool, len(names))}
	for _, n := range names {
		s.names[n] = true
	}
	if cur := v.claims.Load(); cur != nil && maps.Equal(cur.names, s.names) {
		return // the same set: cached principals stay good
	}
	v.claims.Store(s)
}

// verifyCall carries one Verify call's parsed token to the key set and brings the key
// set's verdict back past go-oidc, which keeps only the text of KeySet errors.
type verifyCall struct {
	raw string
	jws *jose.JSONWebSignature
	err *Error
}

type verifyCallKey struct{}

// verify does the uncached work of Verify. It returns the key-set generation read
// before the signature check, so that a key removed meanwhile invalidates the entry.
func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Principal, *keySet, uint64, *Error) {
	jws, err := jose.ParseSignedCompact(raw, supportedAlgs)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, nil, 0, errAlgorithm
		}
		return nil, nil, 0, errMalformed
	}
	if len(jws.Signatures) != 1 {
		return nil, nil, 0, errMalformed
	}
	var claims map[string]any
	// The payload bytes are the signed bytes: once the signature holds, these claims are verified.
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil || claims == nil {
		return nil, nil, 0, errMalformed
	}
	iss, _ := claims["iss"].(string)
	is := v.issuers[iss]
	if is == nil {
		return nil, nil, 0, errUnknownIssuer
	}
	if !slices.Contains(is.algs, string(jws.Signatures[0].Header.Algorithm)) {
		return nil, nil, 0, errAlgorithm
	}
	exp, ok, bad := numericDate(claims["exp"])
	switch {
	case bad:
		return nil, nil, 0, errMalformed
	case !ok:
		return nil, nil, 0, errNoExpiry
	case exp.Before(now):
		return nil, nil, 0, errExpired
	}
	nbf, ok, bad := numericDate(claims["nbf"])
	switch {
	case bad:
		return nil, nil, 0, errMalformed
	case ok && now.Add(nbfLeeway).Before(nbf):
		return nil, nil, 0, errNotYetValid
	}
	// go-oidc ignores iat. A token issued in the future comes from a skewed or forged
	// clock, and one that lives longer than max_token_age is a credential nobody should
	// hold: both are refused, with the same leeway as nbf.
	iat, ok, bad := numericDate(claims["iat"])
	born := now
	switch {
	case bad:
		return nil, nil, 0, errMalformed
	case ok && now.Add(nbfLeeway).Before(iat):
		return nil, nil, 0, errIssuedInFuture
	case ok:
		born = iat
	}
	if exp.Sub(born) > is.maxAge {
		return nil, nil, 0, errTooLongLived
	}
	resource := ""
	if !audienceMatches(claims["aud"], is.audiences) {
		extra := audienceFrom(ctx)
		if extra == "" || !audienceMatches(claims["aud"], []string{extra}) {
			return nil, nil, 0, errAudience
		}
		resource = extra
	}
	if sub, _ := claims["sub"].(string); sub == "" {
		return nil, nil, 0, errNoSubject
	}
	if !is.ready.Load() {
		return nil, nil, 0, errIssuerNotReady
	}

	gen := is.keys.gen.Load()
	call := &verifyCall{raw: raw, jws: jws}
	if _, err := is.verifier.Verify(context.WithValue(ctx, verifyCallKey{}, call), raw); err != nil {
		if call.err != nil {
			return nil, nil, 0, call.err
		}
		if _, ok := errors.AsType[*oidc.TokenExpiredError](err); ok {
			return nil, nil, 0, errExpired
		}
		return nil, nil, 0, errUnverifiable
	}
	p := is.principal(claims, exp)
	p.Resource = resource
	return p, is.keys, gen, nil
}

// numericDate reads a JWT NumericDate the way go-oidc does (whole seconds, fraction
// dropped). ok is false when v is absent; bad is true when it is not a usable number.
func numericDate(v any) (t time.Time, ok, bad bool) {
	if v == nil {
		return time.Time{}, false, false
	}
	f, isNum := v.(float64)
	// 2^53: beyond it float64 seconds are no longer exact and int64 conversion may overflow.
	if !isNum || math.IsNaN(f) || math.Abs(f) > 1<<53 {
		return time.Time{}, false, true
	}
	return time.Unix(int64(f), 0), true, false
}

// audienceMatches reports whether aud (a string or an array of strings) holds one of want.
func audienceMatches(aud any, want []string) bool {
	switch a := aud.(type) {
	case string:
		return slices.Contains(want, a)
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok && slices.Contains(want, s) {
				return true
			}
		}
	}
	return false
}

// defaultClientIDClaims are where an issuer without client_id_claim keeps the client id:
// Okta's cid, OIDC's azp (Entra ID v2, Keycloak, Auth0), RFC 9068's client_id, and
// Entra ID v1's appid (v1 is what an Entra API gets unless its manifest asks for v2).
var defaultClientIDClaims = []string{"cid", "azp", "client_id", "appid"}

// principal builds the Principal of a verified token. claims becomes Principal.Claims.
func (is *issuer) principal(claims map[string]any, exp time.Time) *Principal {
	p := &Principal{Issuer: is.name, Claims: claims, Expiry: exp}
	p.Subject, _ = claims["sub"].(string)
	for _, c := range is.clientIDClaims {
		if id, _ := claims[c].(string); id != "" {
			p.ClientID = id
			break
		}
	}
	p.App = appToken(claims, p.Subject, p.ClientID)
	p.Groups = stringList(claims[is.groupsClaim], false)
	if v, ok := claims[is.scopesClaim]; ok {
		p.Scopes = stringList(v, true)
	} else if v, ok := claims["scope"]; ok {
		p.Scopes = stringList(v, true)
	}
	return p
}

// stringList reads a claim that is an array of strings or a single string (split on
// spaces when split is set, as OAuth's scope). Non-string elements are skipped.
func stringList(v any, split bool) []string {
	switch x := v.(type) {
	case string:
		if split {
			if f := strings.Fields(x); len(f) > 0 {
				return f
			}
			return nil
		}
		if x == "" {
			return nil
		}
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return nil
}
