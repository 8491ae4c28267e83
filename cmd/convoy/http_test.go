package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus/bustest"
)

func TestHTTPRefusesBeyondLoopbackWithoutTLSAndToken(t *testing.T) {
	for _, tc := range []struct {
		cfg  httpConfig
		want []string // "" : valid
	}{
		{httpConfig{Addr: "127.0.0.1:9426"}, nil},
		{httpConfig{Addr: "localhost:9426"}, nil},
		{httpConfig{Addr: "[::1]:9426"}, nil},
		{httpConfig{Addr: "0.0.0.0:9426"}, []string{"beyond loopback: give --http-tls-cert", "beyond loopback: give --http-token-file"}},
		{httpConfig{Addr: ":9426"}, []string{"--http-tls-cert", "--http-token-file"}},
		{httpConfig{Addr: "10.0.0.1:9426", TLSCert: "c", TLSKey: "k"}, []string{"give --http-token-file"}},
		{httpConfig{Addr: "10.0.0.1:9426", TokenFile: "t"}, []string{"give --http-tls-cert"}},
		{httpConfig{Addr: "10.0.0.1:9426", TLSCert: "c", TLSKey: "k", TokenFile: "t"}, nil},
		{httpConfig{Addr: "127.0.0.1:9426", TLSCert: "c"}, []string{"go together"}},
		{httpConfig{Addr: "9426"}, []string{"want HOST:PORT"}},
	} {
		err := tc.cfg.Validate()
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%+v: %v", tc.cfg, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v: accepted", tc.cfg)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: %q does not say %q", tc.cfg, err, w)
			}
		}
	}
	// The listener refuses to start, with a usage error, and binds nothing.
	_, c := bustest.Start(t)
	_, err := newHTTPListener(t.Context(), httpConfig{Addr: "0.0.0.0:0"}, c, slog.New(slog.DiscardHandler))
	if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), "beyond loopback") {
		t.Fatalf("listening on 0.0.0.0 without TLS or a token: %v (exit %d)", err, exitCode(err))
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "convoy test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return cert, key, pool
}

func TestHTTPListenerTokenAndHealth(t *testing.T) {
	_, c := bustest.Start(t)
	dir := t.TempDir()
	cert, key, pool := selfSigned(t, dir)
	const token = "0123456789abcdef0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "convoy_up 1\n") })
	l, err := newHTTPListener(t.Context(), httpConfig{Addr: "127.0.0.1:0", TLSCert: cert, TLSKey: key, TokenFile: tokenFile, Metrics: metrics}, c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- l.Serve() }()
	t.Cleanup(func() {
		l.Shutdown()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	if !strings.HasPrefix(l.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s", l.URL())
	}
	client := &http.Client{
		// Bounds a broken listener's open /events stream, which would
		// otherwise hang the test.
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	do := func(path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", strings.TrimSuffix(l.URL(), "/")+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	for _, tc := range []struct {
		path string
		hdr  []string
		code int
		want string
	}{
		{"/", nil, 401, "Authorization: Bearer"},
		{"/", []string{"Authorization", "Bearer wrong-token-wrong-token!"}, 401, ""},
		{"/", []string{"Authorization", "Bearer " + token[:31]}, 401, ""},
		{"/", []string{"Authorization", "Bearer " + token}, 200, "<h1>Fleet</h1>"},
		{"/hosts/nobody", []string{"Authorization", "Bearer " + token}, 404, "No such host"},
		{"/metrics", nil, 401, ""},
		{"/metrics", []string{"Authorization", "Bearer " + token}, 200, "convoy_up 1"},
		{"/events", []string{"Cookie", tokenCookie + "=nope"}, 401, ""},
		{"/", []string{"Cookie", tokenCookie + "=" + token}, 200, "<h1>Fleet</h1>"},
		{"/?token=nope", nil, 401, ""},
		{"/healthz", nil, 200, `"bus":"connected"`},
	} {
		res, body := do(tc.path, tc.hdr...)
		if res.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s %v: %d %q; want %d with %q", tc.path, tc.hdr, res.StatusCode, body, tc.code, tc.want)
		}
	}
	// A browser opens ?token= once: it gets the cookie, and the address
	// without the token.
	res, _ := do("/hosts/x?a=1&token=" + token)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/hosts/x?a=1" {
		t.Fatalf("?token=: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	ck := res.Cookies()
	if len(ck) != 1 || ck[0].Name != tokenCookie || ck[0].Value != token || !ck[0].HttpOnly || !ck[0].Secure {
		t.Fatalf("?token= set %v", ck)
	}
	var h health
	_, body := do("/healthz")
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Status != "ok" || h.ProjectorLag == nil {
		t.Fatalf("/healthz: %s (%v)", body, err)
	}
}

func TestHealthzIsUnavailableWithoutTheBus(t *testing.T) {
	srv, _ := bustest.Start(t)
	c := bustest.Connect(t, srv.ClientURL())
	l, err := newHTTPListener(t.Context(), httpConfig{Addr: "127.0.0.1:0"}, c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.Serve() }()
	t.Cleanup(l.Shutdown)
	get := func() (int, string) {
		res, err := http.Get(l.URL() + "healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get(); code != 200 {
		t.Fatalf("with the bus: %d %s", code, body)
	}
	c.Close()
	if code, body := get(); code != 503 || !strings.Contains(body, `"bus":"unreachable"`) {
		t.Fatalf("without the bus: %d %s", code, body)
	}
}
