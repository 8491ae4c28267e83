package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// writeTLS makes a CA and a server certificate for 127.0.0.1 signed by it.
func writeTLS(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "convoy test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "convoy bus"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	caCert, _ := x509.ParseCertificate(caDER)
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{ca, "CERTIFICATE", caDER}, {cert, "CERTIFICATE", srvDER}, {key, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// The whole flow with authentication and TLS on: credentials issued by
// convoy creds, a worker that holds only its host credential, an operator
// upgrading it, and clients without a credential or the CA refused.
func TestAuthAndTLSEndToEnd(t *testing.T) {
	t.Parallel()
	r := baseRig(t)
	ca, cert, key := writeTLS(t, r.dir)
	r.url = "tls://" + r.listen
	r.makeFleet([]string{"sorrow"}, sandbox.Options{})
	h := r.fleet.Hosts["sorrow"]

	creds := func(args ...string) string {
		t.Helper()
		f := filepath.Join(r.dir, args[1]+".nk")
		res := convoy(t, 10*time.Second, append([]string{"creds"}, append(args, "-o", f, "--data", r.data)...)...)
		wantExit(t, res, exitOK)
		return f
	}
	hostKey := creds("add-host", "sorrow")
	opKey := creds("add-operator", "alice")
	auditKey := creds("add-auditor", "audit")
	// Issuing the same credential twice, or overwriting a file, is refused.
	res := convoy(t, 10*time.Second, "creds", "add-host", "sorrow", "-o", filepath.Join(r.dir, "again.nk"), "--data", r.data)
	wantExit(t, res, exitUsage)
	res = convoy(t, 10*time.Second, "creds", "add-operator", "bob", "-o", opKey, "--data", r.data)
	wantExit(t, res, exitUsage)

	r.server = startProc(t, "server", "server", "--data", r.data, "--listen", r.listen, "--auth", "--tls-cert", cert, "--tls-key", key)
	eventually(t, 30*time.Second, "the server to listen", func() bool {
		return strings.Contains(r.server.stdout.String(), "credentials required") || r.server.exited()
	})
	t.Cleanup(func() {
		for _, w := range r.workers {
			w.stop(15, 10*time.Second)
		}
	})

	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "state_dir", "nkey = \""+hostKey+"\"\ntls_ca = \""+ca+"\"\nstate_dir", 1)
	if err := os.WriteFile(h.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.startWorker("sorrow")

	c := r.commit(configV1, "v1")
	op := []string{"--nats", r.url, "--nkey", opKey, "--tls-ca", ca}
	res = convoy(t, 60*time.Second, append(op, "upgrade", "sorrow", "--wait", "--timeout", "45s")...)
	wantExit(t, res, exitOK)
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
	res = convoy(t, 20*time.Second, "--nats", r.url, "--nkey", auditKey, "--tls-ca", ca, "history", "sorrow")
	wantExit(t, res, exitOK)
	if !strings.Contains(res.stdout, "upgrade.succeeded") {
		t.Fatalf("the auditor reads no history: %s", res)
	}
	// The auditor may not ask for upgrades.
	res = convoy(t, 30*time.Second, "--nats", r.url, "--nkey", auditKey, "--tls-ca", ca, "upgrade", "sorrow")
	if res.code == exitOK {
		t.Fatalf("the auditor requested an upgrade: %s", res)
	}
	// No credential, or no CA to verify the server: refused, exit 4.
	res = convoy(t, 30*time.Second, "--nats", r.url, "--tls-ca", ca, "status")
	wantExit(t, res, exitUnreachable)
	if !strings.Contains(res.stderr, "refused the credential") {
		t.Fatalf("no credential: %s", res)
	}
	res = convoy(t, 30*time.Second, "--nats", r.url, "--nkey", opKey, "status")
	wantExit(t, res, exitUnreachable)
	if !strings.Contains(res.stderr, "certificate") {
		t.Fatalf("no CA: %s", res)
	}
	noStackTrace(t, res)
}
