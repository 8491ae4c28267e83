package bus

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS and JetStream expose the raw client to this package's tests, which
// try operations convoy itself never makes (deletes, purges, forged
// consumers) to show the server refuses them.
func (c *Conn) NATS() *nats.Conn               { return c.nc }
func (c *Conn) JetStream() jetstream.JetStream { return c.js }
