package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// SpecVersion is the CloudEvents version of the envelope.
const SpecVersion = "1.0"

// SchemaVersion is the version of the data schemas this package writes.
// Readers accept higher versions and read the fields they know.
const SchemaVersion = 1

// ContentType is the datacontenttype of every convoy event.
const ContentType = "application/json"

// MaxEventSize bounds an encoded event; larger input is refused.
const MaxEventSize = 256 << 10

// ErrMalformed is wrapped by every decoding failure.
var ErrMalformed = errors.New("malformed event")

// Event is a CloudEvents 1.0 structured-mode JSON envelope.
//
// Attributes convoy does not define are kept in Extensions and written back
// unchanged, so a reader that re-encodes an event loses nothing.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype,omitempty"`
	// UpgradeID (extension "upgradeid") ties every fact of one upgrade to
	// the request that started it; it is the request's id.
	UpgradeID string `json:"upgradeid,omitempty"`
	// Schema (extension "schemaversion") is the data schema version.
	Schema int             `json:"schemaversion,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	// Extensions holds attributes this version does not define.
	Extensions map[string]json.RawMessage `json:"-"`
}

// NewID returns a new ULID string: unique, and sortable by creation time.
func NewID() string { return ulid.Make().String() }

// ValidateID reports whether id is a ULID as convoy writes them.
func ValidateID(id string) error {
	if _, err := ulid.ParseStrict(id); err != nil {
		return fmt.Errorf("invalid id %q: want a 26-character ULID such as %s: %w", id, NewID(), err)
	}
	return nil
}

// New returns an event of kind k about host with data encoded as JSON.
// source identifies the writer, e.g. "convoy/worker/sorrow".
func New(k Kind, host, source string, data any) (Event, error) {
	e := Event{
		SpecVersion:     SpecVersion,
		ID:              NewID(),
		Source:          source,
		Type:            k.Type(),
		Subject:         host,
		Time:            time.Now().UTC(),
		DataContentType: ContentType,
		Schema:          SchemaVersion,
	}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return Event{}, fmt.Errorf("encode %s data: %w", k, err)
		}
		e.Data = b
	}
	return e, nil
}

// Kind returns the event's kind, or "" if its type is not a convoy type.
func (e Event) Kind() Kind {
	if !strings.HasPrefix(e.Type, TypePrefix) {
		return ""
	}
	return Kind(strings.TrimPrefix(e.Type, TypePrefix))
}

// Host returns the host the event is about (the CloudEvents subject).
func (e Event) Host() string { return e.Subject }

// Fact decodes the data of a host fact. Unknown fields are ignored.
func (e Event) Fact() (Fact, error) {
	var f Fact
	if len(e.Data) == 0 {
		return f, nil
	}
	if err := json.Unmarshal(e.Data, &f); err != nil {
		return f, fmt.Errorf("%w: %s data: %w", ErrMalformed, e.Type, err)
	}
	return f, nil
}

// DecodeData decodes the event's data into v.
func (e Event) DecodeData(v any) error {
	if len(e.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("%w: %s data: %w", ErrMalformed, e.Type, err)
	}
	return nil
}

var coreAttrs = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "subject": true,
	"time": true, "datacontenttype": true, "upgradeid": true, "schemaversion": true, "data": true,
}

// Encode returns the structured-mode JSON of e. It fails if a required
// attribute is missing.
func Encode(e Event) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	type plain Event
	b, err := json.Marshal(plain(e))
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	if len(e.Extensions) == 0 {
		return b, nil
	}
	keys := make([]string, 0, len(e.Extensions))
	for k := range e.Extensions {
		if !coreAttrs[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	buf.Write(b[:len(b)-1])
	for _, k := range keys {
		kb, _ := json.Marshal(k)
		buf.WriteByte(',')
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(e.Extensions[k])
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// Decode parses structured-mode JSON. It refuses, with the reason wrapped
// around ErrMalformed, input that is not a JSON object, lacks a required
// attribute, has a wrong attribute type, or is larger than MaxEventSize.
// Unknown types, unknown attributes and higher schema versions decode
// without loss.
func Decode(b []byte) (Event, error) {
	var e Event
	if len(b) > MaxEventSize {
		return e, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrMalformed, len(b), MaxEventSize)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return e, fmt.Errorf("%w: not a JSON object: %w", ErrMalformed, err)
	}
	str := func(name string, dst *string) error {
		v, ok := raw[name]
		if !ok {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%w: attribute %q must be a string", ErrMalformed, name)
		}
		return nil
	}
	var ts string
	for name, dst := range map[string]*string{
		"specversion": &e.SpecVersion, "id": &e.ID, "source": &e.Source, "type": &e.Type,
		"subject": &e.Subject, "datacontenttype": &e.DataContentType, "upgradeid": &e.UpgradeID, "time": &ts,
	} {
		if err := str(name, dst); err != nil {
			return Event{}, err
		}
	}
	if v, ok := raw["schemaversion"]; ok {
		if err := json.Unmarshal(v, &e.Schema); err != nil || e.Schema < 0 {
			return Event{}, fmt.Errorf("%w: attribute \"schemaversion\" must be a non-negative integer", ErrMalformed)
		}
	}
	if ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return Event{}, fmt.Errorf("%w: attribute \"time\" is not RFC 3339: %q", ErrMalformed, ts)
		}
		e.Time = t
	}
	if d, ok := raw["data"]; ok && !bytes.Equal(bytes.TrimSpace(d), []byte("null")) {
		e.Data = d
	}
	for k, v := range raw {
		if !coreAttrs[k] {
			if e.Extensions == nil {
				e.Extensions = make(map[string]json.RawMessage)
			}
			e.Extensions[k] = v
		}
	}
	if err := e.validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

func (e Event) validate() error {
	var errs []error
	if e.SpecVersion != SpecVersion {
		errs = append(errs, fmt.Errorf("specversion %q, want %q", e.SpecVersion, SpecVersion))
	}
	if e.ID == "" {
		errs = append(errs, errors.New("missing id"))
	}
	if e.Source == "" {
		errs = append(errs, errors.New("missing source"))
	}
	if e.Type == "" {
		errs = append(errs, errors.New("missing type"))
	}
	if e.DataContentType != "" && e.DataContentType != ContentType && len(e.Data) > 0 {
		errs = append(errs, fmt.Errorf("datacontenttype %q, want %q", e.DataContentType, ContentType))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrMalformed, errors.Join(errs...))
	}
	return nil
}
