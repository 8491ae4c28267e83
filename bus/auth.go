package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/convoy-fleet/convoy/events"
)

// Roles a credential can have. See docs/security.md for what each may do.
const (
	// RoleHost is one host's worker: it appends only its own facts and
	// reads only its own requests.
	RoleHost = "host"
	// RoleOperator publishes requests and reads everything.
	RoleOperator = "operator"
	// RoleAuditor reads everything and writes nothing.
	RoleAuditor = "auditor"
	// roleServer is the server's own connection (projections).
	roleServer = "server"
)

// UsersFile is where the embedded server keeps its users, in its data dir.
const UsersFile = "users.json"

// User is one credential the server accepts: an nkey public key with a
// role. The private seed never reaches the server.
type User struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Host    string    `json:"host,omitempty"` // for RoleHost
	NKey    string    `json:"nkey"`
	Created time.Time `json:"created"`
}

// InboxPrefix is the reply-subject prefix a host's connection uses: its
// own, so no host can read replies meant for another.
func InboxPrefix(host string) string { return "_INBOX_" + host }

// NewUser makes a user with a fresh nkey pair and returns it with the
// seed, which is the secret the client keeps (an nkey seed file, usable
// by the nats CLI as --nkey FILE).
func NewUser(role, name string) (User, []byte, error) {
	u := User{Name: name, Role: role, Created: time.Now().UTC()}
	switch role {
	case RoleHost:
		if err := events.ValidateHost(name); err != nil {
			return u, nil, err
		}
		u.Host = name
	case RoleOperator, RoleAuditor:
		if name == "" {
			return u, nil, errors.New("a credential needs a name (who will use it)")
		}
	default:
		return u, nil, fmt.Errorf("unknown role %q: want host, operator or auditor", role)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return u, nil, err
	}
	if u.NKey, err = kp.PublicKey(); err != nil {
		return u, nil, err
	}
	seed, err := kp.Seed()
	return u, seed, err
}

// LoadUsers reads a users file; a missing file is no users.
func LoadUsers(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	var us []User
	if err := json.Unmarshal(b, &us); err != nil {
		return nil, fmt.Errorf("users %s is corrupt: %w", path, err)
	}
	return us, nil
}

// AddUser appends u to the users file. A running server picks it up
// within a few seconds.
func AddUser(path string, u User) error {
	us, err := LoadUsers(path)
	if err != nil {
		return err
	}
	for _, o := range us {
		if o.Role == u.Role && o.Name == u.Name {
			return fmt.Errorf("a %s credential named %q exists already (nkey %s); pick another name", u.Role, u.Name, o.NKey)
		}
	}
	us = append(us, u)
	b, err := json.MarshalIndent(us, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func allow(subjects ...string) *server.SubjectPermission {
	return &server.SubjectPermission{Allow: subjects}
}

// Permissions returns what a role may publish and subscribe to, given
// the hosts that have credentials. Anything not allowed is denied: a host
// cannot publish requests or other hosts' facts, read other hosts'
// requests, touch other consumers, or delete, purge or update a stream;
// operators and auditors read through consumers of their own and cannot
// create, change, delete or read through a host's catch-up consumer.
// Nobody but the server publishes on the live request subjects.
func Permissions(u User, hosts []string) *server.Permissions {
	const api = "$JS.API."
	readAll := []string{
		api + "INFO",
		api + "STREAM.INFO.>", api + "STREAM.NAMES", api + "STREAM.LIST",
		api + "DIRECT.GET.>", api + "STREAM.MSG.GET.>",
		api + "CONSUMER.CREATE.>", api + "CONSUMER.INFO.>", api + "CONSUMER.DELETE.>", api + "CONSUMER.MSG.NEXT.>",
		"$JS.ACK.>", "$JS.FC.>",
		StorageSubject,
	}
	// The catch-up consumers are the hosts' own. The create without a
	// name in the subject could name one in its body.
	denyHosts := []string{api + "CONSUMER.DURABLE.CREATE.>", api + "CONSUMER.CREATE." + StreamName}
	for _, h := range hosts {
		c := StreamName + "." + CatchUpConsumerName(h)
		denyHosts = append(denyHosts, api+"CONSUMER.CREATE."+c+".>", api+"CONSUMER.CREATE."+c,
			api+"CONSUMER.DELETE."+c, api+"CONSUMER.MSG.NEXT."+c)
	}
	switch u.Role {
	case RoleHost:
		h := u.Host
		consumer := StreamName + "." + CatchUpConsumerName(h)
		return &server.Permissions{
			Publish: allow(
				events.HostFacts(h),
				api+"STREAM.INFO."+StreamName,
				api+"STREAM.INFO.KV_"+UpgradesBucket,
				api+"STREAM.INFO.KV_"+LeasesBucket,
				api+"DIRECT.GET.KV_"+LeasesBucket+".$KV."+LeasesBucket+"."+h,
				"$KV."+LeasesBucket+"."+h,
				api+"DIRECT.GET."+StreamName+"."+events.HostFacts(h),
				api+"DIRECT.GET."+StreamName+"."+events.HostRequests(h),
				api+"DIRECT.GET.KV_"+UpgradesBucket+".$KV."+UpgradesBucket+"."+UpgradeKey(h, "*"),
				api+"CONSUMER.CREATE."+consumer+"."+events.HostRequests(h),
				api+"CONSUMER.INFO."+consumer,
				api+"CONSUMER.DELETE."+consumer,
				api+"CONSUMER.MSG.NEXT."+consumer,
			),
			Subscribe: allow(InboxPrefix(h)+".>", LiveRequests(h)),
		}
	case RoleOperator:
		// The status view, for projections rebuild; not the upgrade index,
		// which workers trust to recognise a request that already ended.
		// The operator's rollout asks, not the controller's facts.
		// The alerts bucket, for convoy alerts run with this credential.
		pub := append([]string{events.AllRequests, "$KV." + StatusBucket + ".>", "$KV." + AlertsBucket + ".>"}, events.RolloutRequestFilters...)
		pub = append(pub, readAll...)
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: pub, Deny: denyHosts},
			Subscribe: allow("_INBOX.>", events.AllSubjects, liveRequestsRoot+".>"),
		}
	case RoleAuditor:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: readAll, Deny: denyHosts},
			Subscribe: allow("_INBOX.>", events.AllSubjects, liveRequestsRoot+".>"),
		}
	case roleServer:
		return nil // everything
	}
	return &server.Permissions{Publish: allow(), Subscribe: allow()}
}

func nkeyUsers(us []User) []*server.NkeyUser {
	var hosts []string
	for _, u := range us {
		if u.Role == RoleHost {
			hosts = append(hosts, u.Host)
		}
	}
	out := make([]*server.NkeyUser, 0, len(us))
	for _, u := range us {
		out = append(out, &server.NkeyUser{Nkey: u.NKey, Permissions: Permissions(u, hosts)})
	}
	return out
}
