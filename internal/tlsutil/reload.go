package tlsutil

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"
)

// CertReloader serves a certificate loaded from PEM files, and loads them
// again on Reload, so that a renewed certificate is used by new handshakes
// without a restart. Connections already established keep theirs.
type CertReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// NewCertReloader loads the certificate (chain) and key from their files.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On error the certificate in use is kept.
func (r *CertReloader) Reload() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("loading certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	if len(cert.Certificate) == 0 {
		return errors.New("certificate file holds no certificate")
	}
	r.cert.Store(&cert)
	return nil
}

// Certificate returns the certificate in use.
func (r *CertReloader) Certificate() *tls.Certificate { return r.cert.Load() }

// GetCertificate returns the certificate in use; it fits
// tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}
