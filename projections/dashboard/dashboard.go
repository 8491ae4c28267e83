package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// DefaultHostUpgrades is how many of a host's newest upgrades its page
// shows when Config.HostUpgrades is 0.
const DefaultHostUpgrades = 20

// Config configures a Dashboard.
type Config struct {
	// Conn is the bus connection the dashboard reads through.
	Conn *bus.Conn
	// Logger logs failed reads (the page shows a short error).
	Logger *slog.Logger
	// HostUpgrades bounds the upgrades a host page lists, newest first
	// (0: DefaultHostUpgrades).
	HostUpgrades int
	// LivenessEvery is how often an open fleet page is sent the rows of
	// workers that fell silent (no row is written when a lease expires)
	// and a keep-alive comment (0: DefaultLivenessEvery).
	LivenessEvery time.Duration
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("dashboard: no bus connection"))
	}
	if c.LivenessEvery < 0 {
		errs = append(errs, fmt.Errorf("dashboard: liveness interval %s: want 0 or more", c.LivenessEvery))
	}
	if c.HostUpgrades < 0 {
		errs = append(errs, fmt.Errorf("dashboard: host upgrades %d: want 0 or more", c.HostUpgrades))
	}
	return errors.Join(errs...)
}

// Dashboard is the dashboard's http.Handler.
type Dashboard struct {
	conn      *bus.Conn
	fleet     *projections.Fleet
	index     *upgradeindex.Index
	log       *slog.Logger
	upgrades  int
	liveEvery time.Duration
	pages     map[string]*template.Template
	mux       *http.ServeMux
}

// New opens the status view and the upgrade index and returns the
// handler.
func New(ctx context.Context, cfg Config) (*Dashboard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fleet, err := projections.OpenFleet(ctx, cfg.Conn)
	if err != nil {
		return nil, err
	}
	index, err := upgradeindex.Open(ctx, cfg.Conn)
	if err != nil {
		return nil, err
	}
	d := &Dashboard{
		conn: cfg.Conn, fleet: fleet, index: index,
		log: cfg.Logger, upgrades: cfg.HostUpgrades, liveEvery: cmp.Or(cfg.LivenessEvery, DefaultLivenessEvery),
		pages: map[string]*template.Template{},
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.upgrades == 0 {
		d.upgrades = DefaultHostUpgrades
	}
	for _, p := range []string{"fleet", "host", "upgrade", "rollout", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", p, err)
		}
		d.pages[p] = t
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", d.fleetPage)
	m.HandleFunc("GET /events", d.events)
	m.HandleFunc("GET /hosts/{name}", d.hostPage)
	m.HandleFunc("GET /upgrades/{id}", d.upgradePage)
	m.HandleFunc("GET /rollouts/{id}", d.rolloutPage)
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, http.StatusNotFound, "No such page", "The dashboard has no page at this address.")
	})
	d.mux = m
	return d, nil
}

// csp allows the dashboard's own style and script and nothing else: no
// inline script, no other origin.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ServeHTTP serves the dashboard's pages.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	d.mux.ServeHTTP(w, r)
}

// page is what the layout needs of every page.
type page struct {
	Title string
	Now   time.Time
	Data  any
}

// render writes page p with code, or a plain 500 when it fails before
// anything was written.
func (d *Dashboard) render(w http.ResponseWriter, code int, p string, title string, data any) {
	var buf bytes.Buffer
	if err := d.pages[p].Execute(&buf, page{Title: title, Now: time.Now(), Data: data}); err != nil {
		d.log.Error("dashboard: render", "page", p, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

type failure struct{ Heading, Message string }

// fail renders the error page.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, code int, heading, msg string) {
	d.render(w, code, "error", heading, failure{heading, msg})
}

// readFailed logs err and renders a 503: the bus did not answer.
func (d *Dashboard) readFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	d.log.Error("dashboard: read", "what", what, "path", r.URL.Path, "err", err)
	d.fail(w, r, http.StatusServiceUnavailable, "The bus did not answer",
		fmt.Sprintf("Reading %s failed: %v. Reload to try again.", what, err))
}

type fleetData struct {
	Rows     []row
	Rollouts []rolloutSummary
	Lag      uint64
}

func (d *Dashboard) fleetPage(w http.ResponseWriter, r *http.Request) {
	sts, err := d.fleet.All(r.Context())
	if err != nil {
		d.readFailed(w, r, "the fleet status", err)
		return
	}
	data := fleetData{Rows: make([]row, len(sts))}
	for i, s := range sts {
		data.Rows[i] = newRow(s)
	}
	data.Lag, _ = d.fleet.Lag(r.Context())
	rs, err := rollout.List(r.Context(), d.conn)
	if err != nil {
		d.readFailed(w, r, "the rollouts", err)
		return
	}
	data.Rollouts = summarize(rs)
	d.render(w, http.StatusOK, "fleet", "Fleet", data)
}

// rowEvent is the data of a "row" server-sent event: the host and its
// table row, rendered and escaped by the same template as the page's.
type rowEvent struct {
	Host  string `json:"host"`
	State string `json:"state"`
	HTML  string `json:"html"`
}

// events streams a "row" event for each host now, then one for each
// write of a host's row, until the client goes away or the server shuts
// down (the request's context).
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a proxy in front must not buffer the stream
	w.WriteHeader(http.StatusOK)
	// No write deadline: the stream is meant to stay open.
	_ = rc.SetWriteDeadline(time.Time{})
	if _, err := fmt.Fprint(w, "retry: 2000\n: convoy fleet status\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	t := d.pages["fleet"].Lookup("row")
	var (
		mu     sync.Mutex // one writer at a time: the watch and the liveness pass
		buf    bytes.Buffer
		worker = map[string]string{} // each host's worker as last sent
	)
	send := func(s projections.Status) error {
		mu.Lock()
		defer mu.Unlock()
		buf.Reset()
		if err := t.Execute(&buf, newRow(s)); err != nil {
			return err
		}
		data, err := json.Marshal(rowEvent{Host: s.Host, State: s.State, HTML: buf.String()})
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: row\ndata: %s\n\n", data); err != nil {
			return bus.ErrStop // the client went away
		}
		if err := rc.Flush(); err != nil {
			return bus.ErrStop
		}
		worker[s.Host] = s.Worker
		return nil
	}
	ctx, cancel := context.WithCancel(r.Context())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // the liveness pass ends with the watch
	wg.Go(func() {
		defer cancel()
		d.liveness(ctx, send, func(host string) string {
			mu.Lock()
			defer mu.Unlock()
			return worker[host]
		}, func() error {
			mu.Lock()
			defer mu.Unlock()
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return err
			}
			return rc.Flush()
		})
	})
	err := d.fleet.Watch(ctx, send)
	if err != nil && ctx.Err() == nil {
		d.log.Error("dashboard: event stream", "err", err)
	}
}

// DefaultLivenessEvery is how often an open fleet page is told of
// workers that fell silent and sent a keep-alive comment, so that a proxy
// does not close an idle stream.
const DefaultLivenessEvery = 10 * time.Second

// liveness sends, every d.liveEvery until ctx ends, the rows whose
// worker liveness differs from what was sent (sent), and a keep-alive
// comment. It returns when the client goes away.
func (d *Dashboard) liveness(ctx context.Context, send func(projections.Status) error, sent func(host string) string, keepAlive func() error) {
	t := time.NewTicker(d.liveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if keepAlive() != nil {
			return
		}
		sts, err := d.fleet.All(ctx)
		if err != nil {
			continue // the watch reports a bus that is gone
		}
		for _, s := range sts {
			if s.Worker != sent(s.Host) {
				if send(s) != nil {
					return
				}
			}
		}
	}
}

func (d *Dashboard) hostPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := events.ValidateHost(name); err != nil {
		d.fail(w, r, http.StatusNotFound, "No such host", fmt.Sprintf("%v.", err))
		return
	}
	s, err := d.fleet.Host(r.Context(), name)
	if errors.Is(err, projections.ErrUnknownHost) {
		d.fail(w, r, http.StatusNotFound, "No such host",
			fmt.Sprintf("The fleet has no host %q: no worker or request for it is on the bus yet.", name))
		return
	}
	if err != nil {
		d.readFailed(w, r, "the host's status", err)
		return
	}
	h := hostData{Row: newRow(s), Status: s}
	fold := newFolder()
	err = d.fleet.History(r.Context(), projections.Query{Host: name}, func(st bus.Stored) error {
		if st.Err == nil && st.Event.UpgradeID == "" && !st.Event.Kind().IsRequest() {
			h.Other = append(h.Other, newFactView(st))
			return nil
		}
		fold.add(st)
		return nil
	})
	if err != nil {
		d.readFailed(w, r, "the host's history", err)
		return
	}
	h.Upgrades = fold.list()
	slices.Reverse(h.Upgrades) // newest first
	if len(h.Upgrades) > d.upgrades {
		h.More = len(h.Upgrades) - d.upgrades
		h.Upgrades = h.Upgrades[:d.upgrades]
	}
	slices.Reverse(h.Other)
	if len(h.Other) > d.upgrades {
		h.Other = h.Other[:d.upgrades]
	}
	d.render(w, http.StatusOK, "host", name, h)
}

func (d *Dashboard) upgradePage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := events.ValidateID(id); err != nil {
		d.fail(w, r, http.StatusNotFound, "No such upgrade", fmt.Sprintf("%q is not an upgrade id: an upgrade id is a 26-character ULID.", id))
		return
	}
	recs, err := d.index.ByID(r.Context(), id)
	if err != nil {
		d.readFailed(w, r, "the upgrade index", err)
		return
	}
	if len(recs) == 0 {
		d.fail(w, r, http.StatusNotFound, "No such upgrade",
			fmt.Sprintf("No host has a request or fact of upgrade %s.", id))
		return
	}
	fold := newFolder()
	err = d.fleet.History(r.Context(), projections.Query{Upgrade: id}, func(st bus.Stored) error {
		fold.add(st)
		return nil
	})
	if err != nil {
		d.readFailed(w, r, "the upgrade's history", err)
		return
	}
	u := upgradeData{ID: id}
	for _, rec := range recs {
		v := fold.get(rec.Host, id)
		v.apply(rec)
		u.Hosts = append(u.Hosts, v)
		u.Count.add(v.Outcome())
	}
	d.render(w, http.StatusOK, "upgrade", "Upgrade "+id, u)
}

func (d *Dashboard) rolloutPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := events.ValidateID(id); err != nil {
		d.fail(w, r, http.StatusNotFound, "No such rollout", fmt.Sprintf("%q is not a rollout id: a rollout id is a 26-character ULID.", id))
		return
	}
	ro, err := rollout.Read(r.Context(), d.conn, id)
	if errors.Is(err, rollout.ErrUnknown) {
		d.fail(w, r, http.StatusNotFound, "No such rollout", fmt.Sprintf("No rollout %s is on the bus.", id))
		return
	}
	if err != nil {
		d.readFailed(w, r, "the rollout", err)
		return
	}
	data := rolloutData{Summary: newSummary(ro), Rollout: ro}
	for i, pw := range ro.Plan.Waves {
		wv := waveView{Number: i + 1, Spec: pw.Spec, Hosts: pw.Hosts}
		if i < len(ro.Waves) {
			w := ro.Waves[i]
			wv.Started, wv.UpgradeID, wv.Hosts, wv.Succeeded = w.Started, w.ID, w.Hosts, w.Succeeded
		}
		if wv.UpgradeID != "" {
			recs, err := d.index.Records(r.Context(), wv.UpgradeID, wv.Hosts)
			if err != nil {
				d.readFailed(w, r, "the wave's upgrades", err)
				return
			}
			wv.fill(recs)
		} else {
			wv.fill(nil)
		}
		data.Waves = append(data.Waves, wv)
	}
	if rb := ro.Rollback; rb != nil {
		hosts := make([]string, len(rb.Hosts))
		for i, h := range rb.Hosts {
			hosts[i] = h.Host
		}
		recs, err := d.index.Records(r.Context(), rb.ID, hosts)
		if err != nil {
			d.readFailed(w, r, "the rollback's upgrades", err)
			return
		}
		wv := waveView{Spec: "rollback", UpgradeID: rb.ID, Hosts: hosts, Started: rb.Started, Succeeded: ro.RolledBack}
		wv.fill(recs)
		data.Rollback = &wv
	}
	d.render(w, http.StatusOK, "rollout", "Rollout "+id, data)
}
