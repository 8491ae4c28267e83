package events

import (
	"errors"
	"fmt"
	"strings"
)

// Subject roots. Everything convoy stores lives under convoy.>.
const (
	SubjectRoot     = "convoy"
	AllSubjects     = "convoy.>"
	AllHostFacts    = "convoy.host.>"
	AllRequests     = "convoy.req.>"
	AllRolloutFacts = "convoy.rollout.>"
)

// Subject classes: the second token of a subject.
const (
	ClassRequest = "req"
	ClassHost    = "host"
	ClassRollout = "rollout"
)

// ErrBadSubject is wrapped by every subject parsing failure.
var ErrBadSubject = errors.New("not a convoy subject")

// requestVerb maps request kinds to the last subject token.
var requestVerb = map[Kind]string{UpgradeRequested: "upgrade", PinRequested: "pin"}

// RequestSubject returns convoy.req.<host>.<verb> for a request kind.
func RequestSubject(host string, k Kind) (string, error) {
	if err := ValidateHost(host); err != nil {
		return "", err
	}
	verb, ok := requestVerb[k]
	if !ok {
		return "", fmt.Errorf("%s is not a request kind", k)
	}
	return "convoy.req." + host + "." + verb, nil
}

// HostSubject returns convoy.host.<host>.<stage>.<outcome> for a fact.
func HostSubject(host string, k Kind) (string, error) {
	if err := ValidateHost(host); err != nil {
		return "", err
	}
	if k.Outcome() == "" || k.IsRequest() {
		return "", fmt.Errorf("%s is not a host fact kind", k)
	}
	return "convoy.host." + host + "." + string(k), nil
}

// HostFacts returns the filter convoy.host.<host>.> of one host's facts.
func HostFacts(host string) string { return "convoy.host." + host + ".>" }

// HostRequests returns the filter convoy.req.<host>.> of one host's requests.
func HostRequests(host string) string { return "convoy.req." + host + ".>" }

// Subject is a parsed convoy subject.
type Subject struct {
	Class string // ClassRequest, ClassHost or ClassRollout
	Host  string // for ClassRequest and ClassHost
	ID    string // rollout id, for ClassRollout
	// Kind is the event kind the subject carries: for requests the request
	// kind (upgrade.requested), for facts "<stage>.<outcome>".
	Kind Kind
}

// ParseSubject parses a NATS subject written by convoy.
func ParseSubject(s string) (Subject, error) {
	tok := strings.Split(s, ".")
	bad := func(why string) (Subject, error) {
		return Subject{}, fmt.Errorf("%w: %q: %s", ErrBadSubject, s, why)
	}
	if len(tok) < 3 || tok[0] != SubjectRoot {
		return bad("want convoy.<req|host|rollout>.…")
	}
	switch tok[1] {
	case ClassRequest:
		if len(tok) != 4 {
			return bad("want convoy.req.<host>.<verb>")
		}
		if err := ValidateHost(tok[2]); err != nil {
			return bad(err.Error())
		}
		for k, v := range requestVerb {
			if v == tok[3] {
				return Subject{Class: ClassRequest, Host: tok[2], Kind: k}, nil
			}
		}
		return Subject{Class: ClassRequest, Host: tok[2], Kind: Kind(tok[3] + ".requested")}, nil
	case ClassHost:
		if len(tok) != 5 || tok[3] == "" || tok[4] == "" {
			return bad("want convoy.host.<host>.<stage>.<outcome>")
		}
		if err := ValidateHost(tok[2]); err != nil {
			return bad(err.Error())
		}
		return Subject{Class: ClassHost, Host: tok[2], Kind: Kind(tok[3] + "." + tok[4])}, nil
	case ClassRollout:
		if len(tok) < 4 || tok[2] == "" {
			return bad("want convoy.rollout.<id>.<kind>")
		}
		return Subject{Class: ClassRollout, ID: tok[2], Kind: Kind(strings.Join(tok[3:], "."))}, nil
	}
	return bad("unknown class " + tok[1])
}
