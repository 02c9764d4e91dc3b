package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// writePair writes a fresh self-signed certificate and its key as PEM files.
func writePair(t *testing.T, dir string) (certFile, keyFile string, der []byte) {
	t.Helper()
	cert, err := SelfSigned("localhost")
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert.Certificate[0]
}

func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, first := writePair(t, dir)
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := r.GetCertificate(&tls.ClientHelloInfo{})
	if string(got.Certificate[0]) != string(first) {
		t.Fatal("not the certificate from the files")
	}
	_, _, second := writePair(t, dir)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if string(r.Certificate().Certificate[0]) != string(second) {
		t.Fatal("Reload kept the old certificate")
	}
	// a broken file is reported and the certificate in use kept
	os.WriteFile(keyFile, []byte("not a key"), 0o600)
	if err := r.Reload(); err == nil {
		t.Fatal("Reload accepted a broken key")
	}
	if string(r.Certificate().Certificate[0]) != string(second) {
		t.Fatal("a failed Reload replaced the certificate")
	}
	if _, err := NewCertReloader(filepath.Join(dir, "missing.pem"), keyFile); err == nil {
		t.Fatal("NewCertReloader accepted a missing file")
	}
}
