package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	anytls "github.com/anytls-suite/anytls"
	"github.com/anytls-suite/anytls/internal/testnet"
	"github.com/anytls-suite/anytls/internal/tlsutil"
	"go.uber.org/goleak"
)

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// optionsFromFile loads the file at path and applies it to the default flags.
func optionsFromFile(t *testing.T, path string) (*fileConfig, options) {
	t.Helper()
	fc, err := loadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	fc.apply(&o, o.explicit)
	return fc, o
}

// Every field of the file reaches the options or the server config; paths
// are relative to the file.
func TestConfigFileFields(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "server.json")
	writeFile(t, path, `{
		"listen": "127.0.0.1:9443",
		"users": [{"name": "alice", "password": "a-secret"}, {"name": "bob", "password": "b-secret"}],
		"password": "p-secret",
		"cert": "tls/cert.pem", "key": "/abs/key.pem",
		"sni": "example.com", "public_host": "vpn.example.com",
		"fallback": "127.0.0.1:80", "padding_scheme": "scheme.txt", "log_level": "debug",
		"auth_timeout": "7s", "connect_timeout": "3s", "destination_timeout": "20s",
		"half_close_idle": "1m", "udp_idle_timeout": "90s", "drain_timeout": "45s",
		"session_idle_timeout": "10m", "write_timeout": "-1s",
		"max_sessions": 100, "max_sessions_per_user": 7, "max_streams_per_session": 64, "stream_buffer": 1048576, "session_buffer": 8388608,
		"local_destinations": "deny", "deny_private_destinations": true
	}`)
	fc, o := optionsFromFile(t, path)
	want := options{
		listen: "127.0.0.1:9443", certFile: filepath.Join(dir, "tls/cert.pem"), keyFile: "/abs/key.pem",
		sni: "example.com", publicHost: "vpn.example.com", fallback: "127.0.0.1:80",
		schemeFile: filepath.Join(dir, "scheme.txt"), logLevel: "debug", authTimeout: 7 * time.Second,
		drainTimeout: 45 * time.Second, maxSessions: 100, localDestinations: anytls.LocalDeny, denyPrivate: true,
	}
	o.explicit = nil
	if !reflect.DeepEqual(o, want) {
		t.Errorf("options\n got %+v\nwant %+v", o, want)
	}
	var cfg anytls.ServerConfig
	fc.serverFields(&cfg)
	if cfg.ConnectTimeout != 3*time.Second || cfg.DestinationTimeout != 20*time.Second || cfg.HalfCloseIdle != time.Minute ||
		cfg.UDPIdleTimeout != 90*time.Second || cfg.SessionIdleTimeout != 10*time.Minute || cfg.WriteTimeout != -time.Second ||
		cfg.MaxStreamsPerSession != 64 || cfg.MaxSessionsPerUser != 7 || cfg.StreamBuffer != 1<<20 || cfg.SessionBuffer != 8<<20 {
		t.Errorf("server fields %+v", cfg)
	}
	users, err := fc.users()
	if err != nil || len(users) != 3 || users[0] != (anytls.User{Name: "default", Password: "p-secret"}) || users[2].Name != "bob" {
		t.Errorf("users %+v, %v", users, err)
	}
}

func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"unknown field":  `{"listen": "127.0.0.1:1", "max_session": 3}`,
		"bad duration":   `{"auth_timeout": "10 seconds"}`,
		"number as time": `{"auth_timeout": 10}`,
		"negative time":  `{"drain_timeout": "-1s"}`,
		"bad policy":     `{"local_destinations": "maybe"}`,
		"unnamed user":   `{"users": [{"password": "x"}]}`,
		"same name":      `{"users": [{"name": "a", "password": "x"}, {"name": "a", "password": "y"}]}`,
		"two values":     `{} {}`,
		"not JSON":       `listen = 1`,
	} {
		path := filepath.Join(dir, "c.json")
		writeFile(t, path, text)
		if _, err := loadFile(path); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := loadFile(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file was accepted")
	}
}

// Flags given on the command line win over the file; the file fills the
// rest; -p replaces the file's users.
func TestFlagsWinOverFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "server.json")
	writeFile(t, path, `{"listen": "127.0.0.1:9443", "auth_timeout": "7s", "fallback": "127.0.0.1:80",
		"users": [{"name": "alice", "password": "a-secret"}]}`)
	o, err := parseFlags([]string{"-config", path, "-l", "127.0.0.1:7443", "-auth-timeout", "3s", "-p", "flag-secret"})
	if err != nil {
		t.Fatal(err)
	}
	fc, err := loadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fc.apply(&o, o.explicit)
	if o.listen != "127.0.0.1:7443" || o.authTimeout != 3*time.Second || o.fallback != "127.0.0.1:80" {
		t.Errorf("merged options %+v", o)
	}
	users, _ := usersOf(o, fc)
	if len(users) != 1 || users[0].Password != "flag-secret" {
		t.Errorf("users %+v, want the -p user only", users)
	}
	// flags alone still work, and a missing password is an error
	o, _ = parseFlags([]string{"-l", "127.0.0.1:7443"})
	if _, err := usersOf(o, nil); err == nil {
		t.Error("no password accepted")
	}
}

// logLines collects the program's stderr and lets a test wait for a line.
type logLines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() && os.Getenv("ANYTLS_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return l.buf.Write(p)
}

// wait blocks until the output contains text n times in all.
func (l *logLines) wait(t *testing.T, n int, text string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		got := strings.Count(l.buf.String(), text)
		ch := l.changed
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no %q in the output:\n%s", text, l.String())
		}
	}
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// certFiles writes a new self-signed certificate and key to dir and returns
// the certificate's pin.
func certFiles(t *testing.T, dir string) []byte {
	t.Helper()
	cert, err := tlsutil.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "cert.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})))
	writeFile(t, filepath.Join(dir, "key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})))
	pin, _ := tlsutil.ParsePin(tlsutil.Fingerprint(cert.Certificate[0]))
	return pin
}

func writeConfig(t *testing.T, path string, users map[string]string) {
	t.Helper()
	fc := map[string]any{
		"listen": "127.0.0.1:0", "cert": "cert.pem", "key": "key.pem",
		"auth_timeout": "1s", "drain_timeout": "20s", "log_level": "debug",
	}
	var list []fileUser
	for name, pw := range users {
		list = append(list, fileUser{Name: name, Password: pw})
	}
	fc["users"] = list
	b, _ := json.Marshal(fc)
	writeFile(t, path, string(b))
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v", got, err)
	}
}

// SIGHUP reloads users and certificate files without dropping a live
// session; SIGTERM drains: the live stream finishes, then the program ends.
func TestReloadAndDrain(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, ignore)
		}
	})
	dir := t.TempDir()
	config := filepath.Join(dir, "server.json")
	pinA := certFiles(t, dir)
	writeConfig(t, config, map[string]string{"alice": "alice-pw"})
	o, err := parseFlags([]string{"-config", config})
	if err != nil {
		t.Fatal(err)
	}
	out := newLogLines()
	signals := make(chan os.Signal, 2)
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(o, env{stderr: out, signals: signals, listening: func(a net.Addr) { addrc <- a }}) }()
	var addr string
	select {
	case a := <-addrc:
		addr = a.String()
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, out)
	}
	echo := testnet.Echo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := func(name, pw string, pin []byte) *anytls.Client {
		c, err := anytls.NewClient(anytls.ClientConfig{Server: addr, Password: pw, ServerName: "localhost", PinSHA256: pin})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice := client("alice", "alice-pw", pinA)
	live, err := alice.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, live, "alice before the reload")
	out.wait(t, 1, "user=alice")

	// new users and a new certificate, then SIGHUP
	pinB := certFiles(t, dir)
	writeConfig(t, config, map[string]string{"bob": "bob-pw"})
	signals <- syscall.SIGHUP
	out.wait(t, 1, "reload: certificate loaded")
	out.wait(t, 1, "reload: users loaded")

	echoOnce(t, live, "alice's live session survives the reload")
	bob, err := client("bob", "bob-pw", pinB).DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, bob, "bob after the reload")
	bob.Close()
	// alice cannot open a new session any more: new certificate, gone user
	if c, err := client("alice", "alice-pw", pinB).DialContext(ctx, "tcp", echo); err == nil {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if !errors.Is(err, anytls.ErrNoAnswer) {
			t.Errorf("removed user: %v, want no answer", err)
		}
		c.Close()
	}
	if _, err := client("old pin", "bob-pw", pinA).DialContext(ctx, "tcp", echo); err == nil {
		t.Error("the old certificate is still served")
	}

	// SIGTERM: the live stream goes on until it ends, then run returns
	signals <- syscall.SIGTERM
	out.wait(t, 1, "shutting down: draining")
	signals <- syscall.SIGHUP // no reload while draining, and no exit either
	out.wait(t, 1, "SIGHUP ignored: the server is draining")
	echoOnce(t, live, "alice while the server drains")
	live.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return after the drain:\n%s", out)
	}
	if !strings.Contains(out.String(), "shutdown complete") {
		t.Errorf("no clean end in the log:\n%s", out)
	}
	alice.Close()
}

// TestPrintedURIWorks: with "-l 127.0.0.1:0" and a self-signed certificate,
// the printed client URI names the port actually bound, and a client built
// from it (pin included) gets through.
func TestPrintedURIWorks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, ignore)
		}
	})
	o, err := parseFlags([]string{"-l", "127.0.0.1:0", "-p", "uri-pw"})
	if err != nil {
		t.Fatal(err)
	}
	out := newLogLines()
	signals := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- run(o, env{stderr: out, signals: signals, listening: func(net.Addr) {}}) }()
	out.wait(t, 1, "client URI: ")
	_, line, _ := strings.Cut(out.String(), "client URI: ")
	line, _, _ = strings.Cut(line, "\n")
	cfg, err := anytls.ParseURI(line)
	if err != nil {
		t.Fatalf("printed URI %q: %v", line, err)
	}
	if strings.HasSuffix(cfg.Server, ":0") {
		t.Fatalf("printed URI has port 0: %q", line)
	}
	c, err := anytls.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", testnet.Echo(t))
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, conn, "through the printed URI")
	conn.Close()
	c.Close()
	stopRun(t, signals, done, out)
}

// A zero duration in the file means the default, as the README says: a
// zero drain timeout must not turn a graceful shutdown into an abrupt one.
func TestConfigFileZeroMeansDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.json")
	writeFile(t, path, `{"password": "p", "drain_timeout": "0s", "auth_timeout": "0s"}`)
	_, o := optionsFromFile(t, path)
	if o.drainTimeout != anytls.DefaultDrainTimeout || o.authTimeout != anytls.DefaultAuthTimeout {
		t.Errorf("drain timeout %v, auth timeout %v; want the defaults %v, %v",
			o.drainTimeout, o.authTimeout, anytls.DefaultDrainTimeout, anytls.DefaultAuthTimeout)
	}
}

func TestNegativeDrainTimeoutRefused(t *testing.T) {
	o, err := parseFlags([]string{"-l", "127.0.0.1:0", "-p", "pw", "-drain-timeout", "-5s"})
	if err != nil {
		t.Fatal(err)
	}
	err = run(o, env{stderr: io.Discard, signals: make(chan os.Signal)})
	if err == nil || !strings.Contains(err.Error(), "-drain-timeout") {
		t.Fatalf("run = %v, want the negative drain timeout refused", err)
	}
}

// Without -config, SIGHUP still reads the -padding-scheme file again.
func TestReloadSchemeWithoutConfig(t *testing.T) {
	dir := t.TempDir()
	scheme := filepath.Join(dir, "scheme.txt")
	writeFile(t, scheme, "stop=2\n0=30-30\n1=100-200")
	o, err := parseFlags([]string{"-l", "127.0.0.1:0", "-p", "pw", "-padding-scheme", scheme})
	if err != nil {
		t.Fatal(err)
	}
	out := newLogLines()
	signals := make(chan os.Signal, 2)
	listening := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(o, env{stderr: out, signals: signals, listening: func(net.Addr) { listening <- struct{}{} }})
	}()
	select {
	case <-listening:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, out)
	}
	const next = "stop=3\n0=40-40\n1=100-200\n2=300-400"
	writeFile(t, scheme, next)
	signals <- syscall.SIGHUP
	out.wait(t, 1, fmt.Sprintf("padding_md5=%x", md5.Sum([]byte(next))))
	stopRun(t, signals, done, out)
}

// stopRun sends SIGTERM and waits for run to return without an error.
func stopRun(t *testing.T, signals chan<- os.Signal, done <-chan error, out *logLines) {
	t.Helper()
	signals <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return after SIGTERM:\n%s", out)
	}
}
