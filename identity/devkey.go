package identity

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// OpenDevIssuer returns a dev issuer for issuerURL that signs with the key kept in the
// file keyFile, so that tokens it minted stay valid, for their lifetime, across restarts
// (the demo keeps the file beside its store). It creates the file (mode 0600, a PKCS #8
// PEM block) with a new RSA-2048 key when there is none, and its missing parent
// directories (0700). It refuses a file that group or others may read or write, and one
// that holds no RSA private key. The kid is derived from the key, so it stays too.
func OpenDevIssuer(issuerURL, keyFile string) (*DevIssuer, error) {
	key, err := loadDevKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: key file %s: %w", keyFile, err)
	}
	return NewDevIssuerWithKey(issuerURL, key, devKeyID(key))
}

// DevSecret returns n bytes derived (HKDF-SHA-256) from the dev issuer's key kept in
// keyFile, for purpose, creating the key as OpenDevIssuer does when there is none. The
// demo derives its masking hash key and console session key this way, so hashed values
// stay joinable and console sessions survive a restart, with no second secret file.
func DevSecret(keyFile, purpose string, n int) ([]byte, error) {
	key, err := loadDevKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: key file %s: %w", keyFile, err)
	}
	return hkdf.Key(sha256.New, key.D.Bytes(), nil, "keyhole dev issuer: "+purpose, n)
}

// loadDevKey reads the key in path, or creates it there when the file does not exist.
func loadDevKey(path string) (*rsa.PrivateKey, error) {
	key, err := readDevKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if key, err = createDevKey(path); errors.Is(err, fs.ErrExist) {
		return readDevKey(path) // another process created it first
	}
	return key, err
}

func readDevKey(path string) (*rsa.PrivateKey, error) {
	// The mode is read from the file opened, not the path, so the check and the read
	// see one file.
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if mode := fi.Mode(); !mode.IsRegular() || mode.Perm()&0o077 != 0 {
		return nil, fmt.Errorf("mode %s: want a regular file only its owner may read (chmod 600)", mode)
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM PRIVATE KEY block (delete the file for a new key)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w (delete the file for a new key)", err)
	}
	key, ok := k.(*rsa.PrivateKey)
	if !ok || key.N.BitLen() < 2048 {
		return nil, errors.New("not an RSA key of 2048 bits or more (delete the file for a new key)")
	}
	return key, nil
}

// createDevKey writes a new key to path. The file appears whole or not at all: the key is
// written to a temporary file that is then linked to path, which fails with fs.ErrExist
// when path exists, so two processes starting at once end up with the same key.
func createDevKey(path string) (*rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".dev-issuer-*.key") // mode 0600
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return nil, err
	}
	return key, nil
}

// devKeyID derives a kid from key's public modulus and exponent.
func devKeyID(key *rsa.PrivateKey) string {
	h := sha256.New()
	h.Write(key.N.Bytes())
	fmt.Fprintf(h, "/%d", key.E)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}
