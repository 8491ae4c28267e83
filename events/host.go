package events

import (
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalidHost is wrapped by every host-name validation failure.
var ErrInvalidHost = errors.New("invalid host name")

var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateTag checks a host tag (a group such as "canary"): the same
// rules as a host name, so a tag can be a subject token too.
func ValidateTag(tag string) error {
	if hostRE.MatchString(tag) {
		return nil
	}
	return fmt.Errorf("tag %q: use lower-case letters, digits and '-' (not first or last), at most 63 characters", tag)
}

// ValidateHost reports whether name is an RFC 1123 label in lower case:
// 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'.
// Host names become NATS subject tokens and consumer names, so anything
// else is refused before it reaches the bus.
func ValidateHost(name string) error {
	if hostRE.MatchString(name) {
		return nil
	}
	switch {
	case name == "":
		return fmt.Errorf("%w: empty (use the host's short name, e.g. sorrow)", ErrInvalidHost)
	case len(name) > 63:
		return fmt.Errorf("%w %q: longer than 63 characters", ErrInvalidHost, name)
	default:
		return fmt.Errorf("%w %q: use lower-case letters, digits and '-' (not first or last), as in an RFC 1123 label", ErrInvalidHost, name)
	}
}
