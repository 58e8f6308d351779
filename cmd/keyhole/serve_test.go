package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and returns the file names.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyhole-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeTLSReadinessAndDrain runs the data plane over TLS, checks /readyz follows the
// issuer's keys, and that shutting down lets an in-flight request finish.
func TestServeTLSReadinessAndDrain(t *testing.T) {
	iss := testkit.NewIssuer(t)
	iss.FailDiscovery(testkit.Fail500)
	up := testkit.NewUpstream(t)
	release := make(chan struct{})
	up.Respond = func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, `{"slow":true}`)
	}
	certFile, keyFile, pool := writeCert(t)
	data, adm := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "keyhole.yaml")
	cfg := fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") +
		fmt.Sprintf("tls: { cert_file: %q, key_file: %q }\n", certFile, keyFile)
	os.WriteFile(path, []byte(cfg), 0o600)

	srv := runBackground(t, func(string) string { return "k" }, io.Discard, io.Discard, "serve", "--config", path)

	waitFor(t, "admin up", func() bool { s, _ := get("http://"+adm+"/healthz", ""); return s == 200 })
	if s, b := get("http://"+adm+"/readyz", ""); s != 503 || !strings.Contains(b, "not_ready") {
		t.Errorf("readyz while the issuer is down = %d %s, want 503 not_ready", s, b)
	}
	iss.FailDiscovery(testkit.Serve)
	waitFor(t, "readyz", func() bool { s, _ := get("http://"+adm+"/readyz", ""); return s == 200 })

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	req, _ := http.NewRequest("GET", "https://"+data+"/customers/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{status: resp.StatusCode, body: string(b)}
	}()
	waitFor(t, "request in flight", func() bool { return len(up.Requests()) == 1 })
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop() }() // shut down while the request is held by the upstream
	time.Sleep(100 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", data, time.Second); err == nil {
		t.Error("data plane still accepts connections after shutdown began")
	}
	close(release)
	r := <-res
	if r.err != nil || r.status != 200 || r.body != `{"slow":true}` {
		t.Errorf("in-flight request during shutdown = %d %q %v, want 200 with the upstream's body", r.status, r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serve returned %v", err)
	}
}
