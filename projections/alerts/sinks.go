package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/convoy-fleet/convoy/events"
)

// Sink delivers one alert, once per call. It exists so the Alerter can
// retry, bound and count every kind of delivery the same way; tests give
// their own.
type Sink interface {
	// Send tries once. An error wrapping ErrPermanent is not retried.
	Send(ctx context.Context, a Alert) error
}

// SinkFunc is a Sink as a func.
type SinkFunc func(ctx context.Context, a Alert) error

// Send calls f.
func (f SinkFunc) Send(ctx context.Context, a Alert) error { return f(ctx, a) }

// ErrPermanent is wrapped by a delivery error that retrying cannot fix (a
// 4xx answer other than 429).
var ErrPermanent = errors.New("permanent failure")

// SignatureHeader carries the webhook body's HMAC-SHA256, as
// "sha256=<hex>", when the sink has a secret_file.
const SignatureHeader = "X-Convoy-Signature"

// Sign returns the SignatureHeader value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// NewSink builds the sink a config describes, reading its secret files.
func NewSink(c SinkConfig, dashboardURL string, client *http.Client) (Sink, error) {
	if client == nil {
		client = &http.Client{}
	}
	read := func(path string) ([]byte, error) {
		if path == "" {
			return nil, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil, fmt.Errorf("sink %s: %s is empty", c.Name, path)
		}
		return b, nil
	}
	switch c.Type {
	case SinkWebhook:
		secret, err := read(c.SecretFile)
		if err != nil {
			return nil, err
		}
		return &webhook{url: c.URL, secret: secret, client: client}, nil
	case SinkNtfy:
		token, err := read(c.TokenFile)
		if err != nil {
			return nil, err
		}
		return &ntfy{url: c.URL, token: string(token), dashboard: strings.TrimRight(dashboardURL, "/"), client: client}, nil
	case SinkMatrix:
		token, err := read(c.TokenFile)
		if err != nil {
			return nil, err
		}
		return &matrix{homeserver: strings.TrimRight(c.Homeserver, "/"), room: c.Room, token: string(token), client: client}, nil
	case SinkCommand:
		return &command{argv: c.Command}, nil
	}
	return nil, fmt.Errorf("sink %s: unknown type %q", c.Name, c.Type)
}

// do sends req and classifies the answer: 2xx is done; 429, 5xx and
// transport errors (timeouts, refused connections) are worth a retry;
// any other status is ErrPermanent.
//
// Errors name the URL's scheme and host only: webhook and ntfy URLs often
// carry a secret in their path (a Slack-style hook, a private topic).
func do(client *http.Client, req *http.Request) error {
	where := req.Method + " " + req.URL.Scheme + "://" + req.URL.Host + "/…"
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("%s: %s: %s", where, resp.Status, bytes.TrimSpace(body))
	}
	return fmt.Errorf("%w: %s: %s: %s", ErrPermanent, where, resp.Status, bytes.TrimSpace(body))
}

// webhook POSTs the CloudEvent in structured mode.
type webhook struct {
	url    string
	secret []byte
	client *http.Client
}

func (w *webhook) Send(ctx context.Context, a Alert) error {
	body, err := events.Encode(a.Event)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("Idempotency-Key", a.ID)
	if len(w.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(w.secret, body))
	}
	return do(w.client, req)
}

// ntfy publishes the summary to a topic.
type ntfy struct {
	url, token, dashboard string
	client                *http.Client
}

// ntfyPriority maps severities to ntfy priorities (1 to 5).
var ntfyPriority = map[string]string{SeverityInfo: "3", SeverityWarning: "4", SeverityCritical: "5"}

// ntfyTag maps severities to an emoji tag.
var ntfyTag = map[string]string{SeverityInfo: "information_source", SeverityWarning: "warning", SeverityCritical: "rotating_light"}

func (n *ntfy) Send(ctx context.Context, a Alert) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, strings.NewReader(a.Summary))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	title := "convoy: " + string(a.Kind)
	if a.Host != "" {
		title = "convoy: " + a.Host + " " + string(a.Kind)
	}
	req.Header.Set("Title", title)
	req.Header.Set("Priority", ntfyPriority[a.Severity])
	tags := []string{ntfyTag[a.Severity], "convoy", strings.ReplaceAll(string(a.Kind), ".", "-")}
	if a.Host != "" {
		tags = append(tags, a.Host)
	}
	req.Header.Set("Tags", strings.Join(tags, ","))
	if n.dashboard != "" && a.Host != "" {
		req.Header.Set("Click", n.dashboard+"/hosts/"+a.Host)
	}
	if n.token != "" {
		req.Header.Set("Authorization", "Bearer "+n.token)
	}
	req.Header.Set("Idempotency-Key", a.ID)
	return do(n.client, req)
}

// matrix sends an m.room.message with the alert id as transaction id:
// the homeserver stores a retried PUT once.
type matrix struct {
	homeserver, room, token string
	client                  *http.Client
}

func (m *matrix) Send(ctx context.Context, a Alert) error {
	body, _ := json.Marshal(map[string]string{
		"msgtype": "m.text",
		"body":    fmt.Sprintf("[%s] %s", a.Severity, a.Summary),
	})
	u := m.homeserver + "/_matrix/client/v3/rooms/" + url.PathEscape(m.room) + "/send/m.room.message/" + url.PathEscape(a.ID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+m.token)
	return do(m.client, req)
}

// command runs an argv, without a shell, with the alert in CONVOY_*
// variables and the CloudEvent on stdin.
type command struct{ argv []string }

// Env returns the CONVOY_* variables the command sink sets.
func Env(a Alert) []string {
	return []string{
		"CONVOY_ALERT_ID=" + a.ID,
		"CONVOY_EVENT_TYPE=" + a.Event.Type,
		"CONVOY_KIND=" + string(a.Kind),
		"CONVOY_SEVERITY=" + a.Severity,
		"CONVOY_HOST=" + a.Host,
		"CONVOY_ROLLOUT_ID=" + a.Rollout,
		"CONVOY_UPGRADE_ID=" + a.UpgradeID,
		"CONVOY_REASON=" + a.Reason,
		"CONVOY_SUMMARY=" + a.Summary,
		"CONVOY_TIME=" + a.Time.UTC().Format(time.RFC3339Nano),
	}
}

func (c *command) Send(ctx context.Context, a Alert) error {
	body, err := events.Encode(a.Event)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	// Its own CONVOY_* only: not the alerter's (CONVOY_NATS_URL, CONVOY_NKEY).
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CONVOY_") }), Env(a)...)
	cmd.Stdin = bytes.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A timed-out command's whole process group is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("%w: %w", ErrPermanent, err)
		}
		return fmt.Errorf("%s: %w: %s", c.argv[0], err, firstLine(out.String()))
	}
	return nil
}

// deliver sends a to s, each attempt bounded by timeout, retrying with
// exponential backoff until retryFor has passed or the error is
// ErrPermanent. It returns the last error.
func deliver(ctx context.Context, s Sink, a Alert, timeout, retryFor time.Duration) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 10 * time.Second
	b.MaxElapsedTime = retryFor
	return backoff.Retry(func() error {
		actx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := s.Send(actx, a)
		if errors.Is(err, ErrPermanent) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
}
