package events_test

import (
	"fmt"

	"github.com/convoy-fleet/convoy/events"
)

// A subscriber decodes what it reads from convoy.host.> and reads the
// fact; kinds it does not know decode too, and it skips them.
func ExampleDecode() {
	msg := []byte(`{"specversion":"1.0","id":"01M80AN4WQM0428SFHFF6PEHH8","source":"convoy/worker/sorrow",
		"type":"convoy.build.failed","subject":"sorrow","time":"2026-11-22T04:00:03Z",
		"datacontenttype":"application/json","upgradeid":"01M80AN4WQM0428SFHFF6PEHH6","schemaversion":1,
		"data":{"commit":"2a79fe5f6cc6","exit_code":1,"reason":"exit status 1: error: syntax error"}}`)
	e, err := events.Decode(msg)
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	f, _ := e.Fact()
	fmt.Println(e.Host(), e.Kind(), e.Kind().Known(), e.Kind().IsTerminal())
	fmt.Println(f.Commit, *f.ExitCode, f.Reason)
	// Output:
	// sorrow build.failed true false
	// 2a79fe5f6cc6 1 exit status 1: error: syntax error
}

// Subjects are built from a host and a kind, and parsed back.
func ExampleHostSubject() {
	s, _ := events.HostSubject("torment", events.UpgradeSucceeded)
	p, _ := events.ParseSubject(s)
	_, err := events.HostSubject("Torment_1", events.UpgradeSucceeded)
	fmt.Println(s)
	fmt.Println(p.Class, p.Host, p.Kind)
	fmt.Println(err)
	// Output:
	// convoy.host.torment.upgrade.succeeded
	// host torment upgrade.succeeded
	// invalid host name "Torment_1": use lower-case letters, digits and '-' (not first or last), as in an RFC 1123 label
}
